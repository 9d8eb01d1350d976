"""Both install paths against the real kube-apiserver: everything is accepted (schemas, CRDs, RBAC).
No kubelet runs, so the Deployment never gets Pods; acceptance is what is checked."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from remote_agents.api import crds as crd_models
from remote_agents.api.names import LEADER_LEASE
from remote_agents.deploy import names, rbac
from tests.deploy.pulumi_harness import base_config, run_program

ROOT = Path(__file__).resolve().parents[2]
CRD_NAMES = [f"crd/{crd['metadata']['name']}" for crd in crd_models.definitions()]
OPERATOR = f"system:serviceaccount:{names.NAMESPACE}:{names.SERVICE_ACCOUNT}"
# Namespaces and CRDs first: kubectl applies a list in order, and namespaced objects need both.
APPLY_ORDER = {"Namespace": 0, "CustomResourceDefinition": 1}


def _installed(kubectl) -> None:
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", *CRD_NAMES)
    for kind, name in (("serviceaccount", names.SERVICE_ACCOUNT), ("deployment", names.DEPLOYMENT),
                       ("poddisruptionbudget", names.DEPLOYMENT),
                       ("service", names.WEBHOOK_SERVICE), ("service", names.METRICS_SERVICE)):
        assert kubectl.get(kind, name, names.NAMESPACE), f"{kind}/{name} missing"
    assert kubectl.get("clusterrole", names.CLUSTER_ROLE)["rules"] == rbac.cluster_role_rules()


def test_kustomize_base_is_accepted_and_grants_what_it_says(kubectl):
    kubectl.run("apply", "--server-side", "--field-manager=test-kustomize-base", "-k", str(ROOT / "manifests/base"))
    _installed(kubectl)
    can = lambda *args: kubectl.run("auth", "can-i", *args, "--as", OPERATOR, check=False).stdout.strip()  # noqa: E731
    assert can("patch", "remoteagents.remoteagents.io/status", "-A") == "yes"
    assert can("get", "secrets", "-n", "default") == "yes"
    assert can("list", "secrets", "-n", "default") == "no"
    assert can("create", "leases.coordination.k8s.io", "-n", names.NAMESPACE) == "yes"
    assert can("update", f"leases.coordination.k8s.io/{LEADER_LEASE}", "-n", names.NAMESPACE) == "yes"
    assert can("update", "leases.coordination.k8s.io/kube-controller-manager", "-n", "kube-system") == "no"
    assert can("list", "leases.coordination.k8s.io", "-n", names.NAMESPACE) == "no"
    assert can("delete", "deployments.apps", "-n", names.NAMESPACE) == "no"


def test_what_pulumi_would_deploy_is_accepted_server_side(kubectl):
    # Same namespace and names as the base: with different field managers, identical values share
    # ownership and any disagreement between the two paths would surface as an apply conflict.
    manifests = sorted(run_program(base_config()).manifests(), key=lambda m: APPLY_ORDER.get(m["kind"], 2))
    result = kubectl.run("apply", "--server-side", "--field-manager=test-pulumi-mock", "-f", "-",
                         input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    assert result.stdout.count("serverside-applied") == len(manifests), result.stdout
    _installed(kubectl)
    deployment = kubectl.get("deployment", names.DEPLOYMENT, names.NAMESPACE)
    assert deployment["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    e2b = kubectl.get("secret", names.E2B_SECRET, names.NAMESPACE)
    assert set(e2b["data"]) == {names.E2B_SECRET_KEY}
    assert set(kubectl.get("secret", names.WEBHOOK_SECRET, names.NAMESPACE)["data"]) == {names.WEBHOOK_SECRET_KEY}


def test_samples_are_valid_against_the_crds(kubectl, crds, namespace):
    result = kubectl.run("apply", "--server-side", "--dry-run=server", "-n", namespace,
                         "-f", str(ROOT / "manifests/samples"))
    objects = [doc for path in sorted((ROOT / "manifests/samples").glob("*.yaml"))
               for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert result.stdout.count("serverside-applied") == len(objects) >= 7, result.stdout
