"""The kustomize base: generated, current, and exactly the RBAC the operator is meant to have."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from remote_agents.api import crds
from remote_agents.deploy import argocd, manifests, names, rbac, workload

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "base"

# The brief's list, restated independently of rbac.py so that a change there is a visible decision.
NAMESPACE_RULES = [
    (["remoteagents.io"], ["remoteagents", "agentpools", "agenttasks", "e2btemplates"],
     ["get", "list", "watch", "patch", "create", "delete"], None),
    (["remoteagents.io"], ["remoteagents/status", "agentpools/status", "agenttasks/status", "e2btemplates/status"],
     ["patch"], None),
    (["remoteagents.io"], ["agentpools/scale"], ["patch"], None),  # an autoscaled pool's replicas, as an HPA
    ([""], ["secrets"], ["get", "patch"], None),  # patch: the E2B key protection finalizer only
    ([""], ["configmaps"], ["get", "list", "create", "update"], None),
    ([""], ["configmaps"], ["patch"], ["remote-agents-orphaned-sandboxes"]),
    ([""], ["events"], ["create"], None),
]
# Leader election: its own Lease by name; create cannot be restricted by name.
EXPECTED_LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update"],
     "resourceNames": ["remote-agents-operator"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
]
CLUSTER_READS = [
    (["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"], None),
    ([""], ["namespaces"], ["get"], ["kube-system"]),
]
NAMESPACED_KOPF_READS = [([""], ["namespaces"], ["list", "watch"], None)]


def _rules(rules: list[dict]) -> list[str]:
    return sorted(repr((r["apiGroups"], r["resources"], r["verbs"], r.get("resourceNames"))) for r in rules)


def kustomize_build() -> list[dict]:
    result = subprocess.run(["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {BASE} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_base_is_current():
    assert manifests.stale(BASE) == [], "manifests/base is stale: run `python -m remote_agents.deploy.manifests`"


def test_crd_copy_is_byte_identical_to_crds_dir():
    for crd in crds.definitions():
        name = crds.file_name(crd)
        assert (BASE / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name


def test_cluster_role_is_exactly_the_intended_permissions():
    assert _rules(rbac.cluster_role_rules()) == sorted(map(repr, NAMESPACE_RULES + CLUSTER_READS))
    # Nothing broad slipped in: no wildcard, no finalizers, no leases (Kopf runs standalone).
    flat = repr(rbac.cluster_role_rules())
    assert "*" not in flat and "finalizers" not in flat and "leases" not in flat


@pytest.mark.parametrize("watched", [(), ("team-a",)])
def test_leader_election_gets_its_own_lease_in_the_operators_namespace_only(watched):
    roles = [obj for obj in rbac.objects("ops", watched) if obj["kind"] == "Role"
             and obj["metadata"]["name"].endswith("-leader-election")]
    assert [role["metadata"]["namespace"] for role in roles] == ["ops"]
    assert roles[0]["rules"] == EXPECTED_LEASE_RULES
    cluster_role = next(obj for obj in rbac.objects("ops", watched) if obj["kind"] == "ClusterRole")
    assert "leases" not in repr(cluster_role["rules"])  # a ClusterRole would grant them in every namespace


def test_namespaced_install_grants_namespace_rules_only_in_the_watched_namespaces():
    objects = rbac.objects("ops", ("team-a", "team-b"))
    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    assert sorted(by_kind) == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"]
    (cluster_role,) = by_kind["ClusterRole"]
    assert cluster_role["metadata"]["name"] == "remote-agents-operator-ops"  # several installs may share a cluster
    assert _rules(cluster_role["rules"]) == sorted(map(repr, CLUSTER_READS + NAMESPACED_KOPF_READS))
    roles = [role for role in by_kind["Role"] if not role["metadata"]["name"].endswith("-leader-election")]
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    for role in roles:
        assert _rules(role["rules"]) == sorted(map(repr, NAMESPACE_RULES))
    for binding in by_kind["RoleBinding"] + by_kind["ClusterRoleBinding"]:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "remote-agents-operator", "namespace": "ops"}]
        assert binding["roleRef"]["name"].removesuffix("-leader-election") == "remote-agents-operator-ops"
    args = workload.deployment("ops", watched=("team-a", "team-b"))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["--namespace", "team-a", "--namespace", "team-b"]


def test_manifests_render_a_namespaced_install_on_request(tmp_path):
    assert manifests.main(["--dir", str(tmp_path), "--watch-namespace", "team-a"]) == 0
    assert manifests.main(["--check", "--dir", str(tmp_path), "--watch-namespace", "team-a"]) == 0
    assert manifests.main(["--check", "--dir", str(tmp_path)]) == 1  # not the cluster-wide base
    kinds = [doc["kind"] for doc in yaml.safe_load_all((tmp_path / "rbac.yaml").read_text()) if doc]
    assert kinds == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Role", "RoleBinding"]


def test_kustomize_renders_exactly_the_generated_objects():
    rendered = kustomize_build()
    expected = [workload.namespace(names.NAMESPACE), *crds.definitions(), *rbac.objects(names.NAMESPACE),
                *workload.objects(names.NAMESPACE)]
    key = lambda obj: (obj["kind"], obj["metadata"]["name"])  # noqa: E731
    assert sorted(rendered, key=key) == sorted(expected, key=key)


def test_deployment_runs_the_operator_locked_down():
    deployment = workload.deployment(names.NAMESPACE)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/remote-agents/operator:0.1.0"
    assert container["args"] == ["operator", "--leader-election", "--webhook-port", "8443", "--metrics-port", "9090"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"webhook": 8443, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"]}
    assert env == {"E2B_API_KEY": {"name": "remote-agents-e2b", "key": "apiKey"},
                   "GITHUB_WEBHOOK_SECRET": {"name": "remote-agents-webhook", "key": "secret", "optional": True}}
    assert set(container["resources"]) == {"requests", "limits"}
    assert pod["serviceAccountName"] == "remote-agents-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_two_replicas_hand_over_rather_than_stop():
    deployment = workload.deployment(names.NAMESPACE)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    term = spec["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["podAffinityTerm"] == {"topologyKey": "kubernetes.io/hostname",
                                          "labelSelector": {"matchLabels": spec["selector"]["matchLabels"]}}
    budget = workload.disruption_budget(names.NAMESPACE)
    assert budget["kind"] == "PodDisruptionBudget"
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": spec["selector"]["matchLabels"]}}
    assert budget in workload.objects(names.NAMESPACE)


def test_webhook_service_maps_443_to_the_receiver():
    service = workload.webhook_service(names.NAMESPACE)
    assert service["metadata"]["name"] == "remote-agents-webhook"
    assert service["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": 8443, "protocol": "TCP"}]
    assert service["spec"]["selector"] == workload.deployment(names.NAMESPACE)["spec"]["selector"]["matchLabels"]


def test_check_mode_fails_on_a_hand_edit(tmp_path, capsys):
    assert manifests.main(["--dir", str(tmp_path)]) == 0
    assert manifests.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "rbac.yaml").write_text((tmp_path / "rbac.yaml").read_text().replace("- get\n", "- '*'\n", 1))
    assert manifests.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "rbac.yaml" in capsys.readouterr().err


def test_argocd_component_adds_the_health_checks_to_an_existing_argocd_cm(tmp_path):
    # An Argo CD installation's kustomization: its own argocd-cm, our component on top.
    (tmp_path / "argocd-cm.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cm", "namespace": "argocd"},
        "data": {"url": "https://argocd.example.test"}}))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["argocd-cm.yaml"], "components": [os.path.relpath(BASE / "argocd", tmp_path)]}))
    result = subprocess.run(["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [config_map] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert config_map["data"] == {"url": "https://argocd.example.test", **argocd.config_map_patch()["data"]}


def test_argocd_component_is_not_part_of_the_operator_install():
    assert not [doc for doc in kustomize_build() if doc["metadata"]["name"] == argocd.ARGOCD_CONFIG_MAP]
