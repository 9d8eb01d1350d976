from pathlib import Path

from remote_agents.api import crds

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models():
    assert crds.stale(ROOT / "crds") == [], "crds/ is stale: run `remote-agents crds` and commit"


def test_schemas_are_structural():
    def walk(node, path):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")
    for crd in crds.definitions():
        walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], crd["metadata"]["name"])


def test_pool_has_scale_subresource():
    pool = next(c for c in crds.definitions() if c["spec"]["names"]["kind"] == "AgentPool")
    assert pool["spec"]["versions"][0]["subresources"]["scale"]["labelSelectorPath"] == ".status.selector"


def test_category_never_shadows_a_resource_name():
    names = set()
    for crd in crds.definitions():
        spec_names = crd["spec"]["names"]
        names |= {spec_names["plural"], spec_names["singular"], *spec_names["shortNames"]}
    assert crds.CATEGORY not in names


def test_field_names_are_plain_camel_case():
    # to_camel turns e2b_api_key into "e2BApiKey": such names must be given explicit aliases.
    import re

    def names(node):
        for name, child in node.get("properties", {}).items():
            yield name
            yield from names(child)
        if "items" in node:
            yield from names(node["items"])
    for crd in crds.definitions():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        odd = [n for n in names(schema) if re.search(r"\d[A-Z]", n)]
        assert odd == [], f"{crd['metadata']['name']}: {odd}"


def _schema_nodes(node, path):
    """Every node of a schema with its path: properties, list items and map values."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _schema_nodes(child, f"{path}.{name}")
    if "items" in node:
        yield from _schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schema_nodes(node["additionalProperties"], f"{path}{{}}")


def _root(crd):
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_every_schema_node_is_described():
    # `kubectl explain` shows nothing for a node without a description.
    for crd in crds.definitions():
        kind = crd["spec"]["names"]["kind"]
        # metadata may hold nothing but its type (the API server describes ObjectMeta itself).
        undescribed = [path for path, node in _schema_nodes(_root(crd), kind)
                       if path != f"{kind}.metadata" and not node.get("description", "").strip()]
        assert undescribed == [], f"{crd['metadata']['name']}: no description on {undescribed}"


def test_conditions_are_a_map_keyed_by_type():
    for crd in crds.definitions():
        conditions = _root(crd)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        # A map key must be required (or defaulted) in every item, or the API server refuses the CRD.
        assert "type" in conditions["items"]["required"]


def test_times_are_date_time():
    times = {"RemoteAgent": {"status.lastActivityTime", "status.server.startedAt", "status.idlePausedSince",
                             "status.conditions[].lastTransitionTime",
                             "status.usage.since", "status.usage.lastObservedTime"},
             "AgentPool": {"status.conditions[].lastTransitionTime", "status.budget.windowStart",
                           "status.budget.observedTime"},
             "AgentTask": {"status.startTime", "status.completionTime", "status.progress.updateTime",
                           "status.conditions[].lastTransitionTime", "status.nextAttemptTime"},
             "E2BTemplate": {"status.conditions[].lastTransitionTime"}}
    for crd in crds.definitions():
        kind = crd["spec"]["names"]["kind"]
        formatted = {path.removeprefix(f"{kind}.") for path, node in _schema_nodes(_root(crd), kind)
                     if node.get("format") == "date-time"}
        assert formatted == times[kind]


def test_reason_column_shows_why_not_ready_and_the_rest_is_wide():
    for crd in crds.definitions():
        columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        reason = next(c for c in columns if c["name"] == "Reason")
        assert reason["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
        assert reason.get("priority", 0) == 0
        wide = [c["name"] for c in columns if c.get("priority") == 1]
        assert "Message" in wide, crd["metadata"]["name"]
        # kubectl prints default columns first; wide ones after Age keep the familiar layout.
        names = [c["name"] for c in columns]
        assert all(names.index(name) > names.index("Age") for name in wide)
