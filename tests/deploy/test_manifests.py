"""The kustomize base: generated, current, and exactly the RBAC the operator is meant to have."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from remote_agents.api import crds
from remote_agents.deploy import manifests, names, rbac, workload

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "base"

# The brief's list, restated independently of rbac.py so that a change there is a visible decision.
EXPECTED_RULES = [
    (["remoteagents.io"], ["remoteagents", "agentpools", "agenttasks"],
     ["get", "list", "watch", "patch", "update", "create", "delete"]),
    (["remoteagents.io"], ["remoteagents/status", "agentpools/status", "agenttasks/status"], ["get", "patch", "update"]),
    ([""], ["secrets"], ["get"]),
    ([""], ["configmaps"], ["get", "list", "watch", "create", "update", "patch", "delete"]),
    ([""], ["events"], ["create", "patch"]),
    (["events.k8s.io"], ["events"], ["create", "patch"]),
    ([""], ["namespaces"], ["get", "list", "watch"]),
    (["apiextensions.k8s.io"], ["customresourcedefinitions"], ["get", "list", "watch"]),
]
# Leader election: its own Lease by name; create cannot be restricted by name.
EXPECTED_LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update"],
     "resourceNames": ["remote-agents-operator"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
]


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
    lease_rules = [r for r in rbac.cluster_role_rules() if r["resources"] == ["leases"]]
    assert lease_rules == EXPECTED_LEASE_RULES
    rules = [(r["apiGroups"], r["resources"], r["verbs"]) for r in rbac.cluster_role_rules() if r not in lease_rules]
    assert sorted(map(repr, rules)) == sorted(map(repr, EXPECTED_RULES))
    # Nothing broad slipped in: no wildcard, no finalizers, secrets are never listed or watched.
    flat = repr(rules)
    assert "*" not in flat and "finalizers" not in flat


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
