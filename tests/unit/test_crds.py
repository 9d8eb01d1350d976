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
