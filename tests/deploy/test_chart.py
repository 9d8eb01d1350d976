"""The Helm chart: its generated files are current, `helm lint` is clean, and rendered with its
defaults it is exactly manifests/base (so the two cannot drift); its values switch what they say."""

from __future__ import annotations

import pytest

from remote_agents.api import crds
from remote_agents.deploy import chart, monitoring, names
from tests.deploy.test_manifests import ROOT, kustomize_build
from tests.support.helm import Helm, HelmMissing
from tests.support.promql import matchers

CHART = ROOT / "charts" / "remote-agents"


@pytest.fixture(scope="module")
def helm() -> Helm:
    try:
        return Helm()
    except HelmMissing as error:
        pytest.fail(str(error), pytrace=False)


def by_key(objects: list[dict]) -> dict[tuple[str, str, str | None], dict]:
    return {(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")): obj for obj in objects}


def render(helm: Helm, *values: str) -> dict[tuple[str, str, str | None], dict]:
    sets = [arg for value in values for arg in ("--set", value)]
    return by_key(helm.template(CHART, "--namespace", names.NAMESPACE, *sets))


def container(objects: dict) -> dict:
    return container_named(objects, "remote-agents-operator")


def test_generated_files_are_current():
    assert chart.stale(CHART) == [], "the chart is stale: run `remote-agents chart`"


def test_chart_crds_are_byte_identical_to_crds_dir():
    for crd in crds.definitions():
        name = crds.file_name(crd)
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name


def test_a_hand_edited_file_is_stale(tmp_path):
    chart.write(tmp_path)
    assert chart.stale(tmp_path) == []
    values = tmp_path / "values.yaml"
    values.write_text(values.read_text().replace("replicas: 2", "replicas: 1"))
    assert chart.stale(tmp_path) == ["values.yaml"]


def test_lint_is_clean(helm):
    result = helm.run("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout and "[WARNING]" not in result.stdout, result.stdout


def test_defaults_render_exactly_the_kustomize_base(helm):
    base = by_key([obj for obj in kustomize_build() if obj["kind"] not in ("Namespace", "CustomResourceDefinition")])
    rendered = render(helm)
    assert sorted(rendered) == sorted(base)
    for key, obj in base.items():
        assert rendered[key] == obj, f"{key} differs between the chart's defaults and manifests/base"


def test_watched_namespaces_get_roles_and_the_cluster_role_keeps_only_cluster_scoped_rules(helm):
    rendered = render(helm, "watchNamespaces={team-a,team-b}")
    cluster_role = rendered[("ClusterRole", "remote-agents-operator", None)]
    assert {rule["resources"][0] for rule in cluster_role["rules"]} == {"namespaces", "customresourcedefinitions"}
    for namespace in ("team-a", "team-b"):
        role = rendered[("Role", "remote-agents-operator", namespace)]
        resources = {resource for rule in role["rules"] for resource in rule["resources"]}
        assert {"remoteagents", "remoteagents/status", "secrets", "configmaps", "events"} <= resources
        assert "leases" not in resources and "namespaces" not in resources
        binding = rendered[("RoleBinding", "remote-agents-operator", namespace)]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "remote-agents-operator",
                                        "namespace": names.NAMESPACE}]
    lease_role = rendered[("Role", "remote-agents-operator-leader-election", names.NAMESPACE)]
    assert lease_role["rules"][0]["resourceNames"] == ["remote-agents-operator"]
    args = container(rendered)["args"]
    assert args[args.index("--namespace") + 1] == "team-a" and args.count("--namespace") == 2


def test_image_replicas_resources_log_format_and_extra_env(helm):
    rendered = render(helm, "image.repository=registry.example.com/ra", "image.tag=1.2.3", "replicas=3",
                      "resources.limits.memory=1Gi", "logFormat=json", "extraEnv[0].name=E2B_DOMAIN",
                      "extraEnv[0].value=e2b.example.com", "e2b.secretName=my-e2b", "e2b.secretKey=key")
    deployment = rendered[("Deployment", "remote-agents-operator", names.NAMESPACE)]
    assert deployment["spec"]["replicas"] == 3
    operator = container(rendered)
    assert operator["image"] == "registry.example.com/ra:1.2.3"
    assert operator["resources"]["limits"]["memory"] == "1Gi"
    assert operator["args"][-2:] == ["--log-format", "json"]
    env = {item["name"]: item for item in operator["env"]}
    assert env["E2B_DOMAIN"]["value"] == "e2b.example.com"
    assert env["E2B_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "my-e2b", "key": "key"}


def test_name_prefix_renames_everything_and_the_lease_with_it(helm):
    rendered = render(helm, "namePrefix=ra2")
    assert {name for _, name, _ in rendered} == {"ra2-operator", "ra2-webhook", "ra2-metrics",
                                                 "ra2-operator-leader-election"}
    args = container_named(rendered, "ra2-operator")["args"]
    assert args[args.index("--lease-name") + 1] == "ra2-operator"
    rules = rendered[("Role", "ra2-operator-leader-election", names.NAMESPACE)]["rules"]
    assert [rule for rule in rules if rule.get("resourceNames")][0]["resourceNames"] == ["ra2-operator"]


def container_named(objects: dict, deployment: str) -> dict:
    return objects[("Deployment", deployment, names.NAMESPACE)]["spec"]["template"]["spec"]["containers"][0]


def test_webhook_off_removes_its_service_port_and_secret(helm):
    rendered = render(helm, "webhook.enabled=false")
    assert ("Service", "remote-agents-webhook", names.NAMESPACE) not in rendered
    operator = container(rendered)
    assert "--webhook-port" not in operator["args"]
    assert [port["name"] for port in operator["ports"]] == ["metrics"]
    assert "GITHUB_WEBHOOK_SECRET" not in {item["name"] for item in operator["env"]}


def test_ingress_exposes_only_the_receiver(helm):
    rendered = render(helm, "webhook.ingress.enabled=true", "webhook.ingress.host=hooks.example.com",
                      "webhook.ingress.className=nginx")
    ingress = rendered[("Ingress", "remote-agents-webhook", names.NAMESPACE)]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "hooks.example.com"
    assert [(p["path"], p["backend"]["service"]["name"]) for p in rule["http"]["paths"]] == [
        ("/webhooks/github", "remote-agents-webhook")]


def test_monitoring_toggles(helm):
    assert not {kind for kind, _, _ in render(helm)} & {"ServiceMonitor", "PrometheusRule"}
    rendered = render(helm, "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")
    monitor = rendered[("ServiceMonitor", "remote-agents-operator", names.NAMESPACE)]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    rule = rendered[("PrometheusRule", "remote-agents-operator", names.NAMESPACE)]
    # The same alerts as manifests/monitoring (one source: deploy/monitoring.py), scoped to the
    # release's metrics Service, Prometheus' own templates intact after Helm's.
    charted = rule["spec"]["groups"][0]["rules"]
    assert charted == monitoring.prometheus_rule()["spec"]["groups"][0]["rules"]
    rendered = render(helm, "metrics.prometheusRule.enabled=true", "namePrefix=ra")
    no_leader, = [r for r in rendered[("PrometheusRule", "ra-operator", names.NAMESPACE)]["spec"]["groups"][0]["rules"]
                  if r["alert"] == "RemoteAgentsNoLeader"]
    assert matchers(no_leader["expr"], "remote_agents_leader") == [{"job": "ra-metrics"}]


@pytest.mark.parametrize("values, message", [
    (["leaderElection.enabled=false"], "replicas > 1 needs leaderElection.enabled"),
    (["webhook.ingress.enabled=true"], "webhook.ingress.host is required"),
])
def test_unsafe_or_incomplete_values_are_refused(helm, values, message):
    sets = [arg for value in values for arg in ("--set", value)]
    result = helm.run("template", "remote-agents", str(CHART), *sets, check=False)
    assert result.returncode != 0 and message in result.stderr


def test_one_replica_without_leader_election_runs_kopf_alone(helm):
    operator = container(render(helm, "replicas=1", "leaderElection.enabled=false"))
    assert "--leader-election" not in operator["args"]
