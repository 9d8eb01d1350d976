"""The chart against the real API server with a real helm: install and upgrade create exactly the
objects the release declares, and the operator, run with the token of the chart's ServiceAccount
in namespaced mode (Roles only in the watched namespace), reconciles an agent."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import FAST_OPERATOR_ARGS
from tests.e2e.test_least_privilege import service_account_kubeconfig
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.helm import Helm, HelmMissing
from tests.support.operator_process import OperatorProcess, stop_after_finalizing

CHART = ROOT / "charts" / "remote-agents"
# Kinds the chart can declare with the values used here (namespaced kinds looked up in every namespace).
KINDS = ("serviceaccounts", "deployments.apps", "poddisruptionbudgets.policy", "services",
         "ingresses.networking.k8s.io", "roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io",
         "clusterroles.rbac.authorization.k8s.io", "clusterrolebindings.rbac.authorization.k8s.io")


@pytest.fixture(scope="module")
def helm(cluster) -> Helm:
    try:
        return Helm(cluster.kubeconfig)
    except HelmMissing as error:
        pytest.fail(str(error), pytrace=False)


def declared(helm: Helm, release: str, namespace: str) -> set[tuple[str, str, str]]:
    return {(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace", namespace if obj["kind"] not in
             ("ClusterRole", "ClusterRoleBinding") else ""))
            for obj in helm.manifest(release, namespace)}


def in_cluster(kubectl, release: str) -> set[tuple[str, str, str]]:
    """Every object Helm marks as this release's (its ownership annotation), of the kinds above."""
    found = set()
    for kind in KINDS:
        for item in kubectl.items_all(kind):
            annotations = item["metadata"].get("annotations") or {}
            if annotations.get("meta.helm.sh/release-name") == release:
                found.add((item["kind"], item["metadata"]["name"], item["metadata"].get("namespace", "")))
    return found


def test_install_and_upgrade_create_exactly_what_the_release_declares(kubectl, crds, helm):
    release, namespace = "ra-chart", "ra-chart"
    helm.run("install", release, str(CHART), "-n", namespace, "--create-namespace", "--set", "namePrefix=ra-chart",
             "--set", "webhook.ingress.enabled=true", "--set", "webhook.ingress.host=hooks.example.com")
    try:
        first = declared(helm, release, namespace)
        assert {kind for kind, _, _ in first} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment",
                                                  "PodDisruptionBudget", "Service", "Ingress",
                                                  "Role", "RoleBinding"}  # the Lease's, in the release namespace
        assert ("Role", "ra-chart-operator-leader-election", namespace) in first
        assert in_cluster(kubectl, release) == first
        deployment = kubectl.get("deployment", "ra-chart-operator", namespace)
        assert deployment["spec"]["replicas"] == 2

        helm.run("upgrade", release, str(CHART), "-n", namespace, "--set", "namePrefix=ra-chart",
                 "--set", "replicas=3", "--set", "logFormat=json", "--set", "webhook.enabled=false",
                 "--set", "watchNamespaces={ra-chart}")
        assert helm.status(release, namespace)["version"] == 2
        second = declared(helm, release, namespace)
        assert ("Ingress", "ra-chart-webhook", namespace) not in second
        assert {("Role", "ra-chart-operator", namespace), ("Role", "ra-chart-operator-leader-election", namespace)} \
            <= second
        assert in_cluster(kubectl, release) == second  # the webhook Service and Ingress are gone
        deployment = kubectl.get("deployment", "ra-chart-operator", namespace)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert deployment["spec"]["replicas"] == 3
        assert container["args"][-4:] == ["--namespace", "ra-chart", "--log-format", "json"]
    finally:
        helm.run("uninstall", release, "-n", namespace, check=False)
    assert in_cluster(kubectl, release) == set()
    assert kubectl.get("crd", "remoteagents.remoteagents.io") is not None  # crds/ outlive the release


@pytest.fixture
def chart_operator(cluster, crds, kubectl, helm, e2b, namespace, tmp_path):
    """The chart installed for one watched namespace; the operator run with its ServiceAccount's token."""
    release = "ra-scoped"
    helm.run("install", release, str(CHART), "-n", release, "--create-namespace", "--set", f"namePrefix={release}",
             "--set", f"watchNamespaces={{{namespace}}}")
    kubeconfig = service_account_kubeconfig(kubectl, cluster.kubeconfig, tmp_path / "kubeconfig", release,
                                            f"{release}-operator")
    process = OperatorProcess(kubeconfig, e2b.env, tmp_path / "operator.log", *FAST_OPERATOR_ARGS, "-n", namespace,
                              "--leader-election", "--lease-namespace", release, "--lease-name",
                              f"{release}-operator").start()
    process.release = release
    yield process
    kubectl.run("delete", "remoteagents", "--all", "-n", namespace, "--timeout=60s", check=False)
    stop_after_finalizing(process, kubectl)
    helm.run("uninstall", release, "-n", release, check=False)


def test_operator_with_the_charts_namespaced_rbac_reconciles_an_agent(kubectl, namespace, chart_operator, agent_repo):
    account = f"system:serviceaccount:{chart_operator.release}:{chart_operator.release}-operator"
    can = lambda *args: kubectl.run("auth", "can-i", *args, "--as", account, check=False).stdout.strip()  # noqa: E731
    assert can("patch", "remoteagents.remoteagents.io/status", "-n", namespace) == "yes"
    assert can("patch", "remoteagents.remoteagents.io/status", "-n", "default") == "no"  # only the watched one

    kubectl.apply(agent_manifest("charted", namespace, agent_repo.url))
    agent = wait_ready(kubectl, "charted", namespace)
    assert agent["status"]["sandboxID"]
    assert kubectl.get("lease", f"{chart_operator.release}-operator", chart_operator.release)["spec"]["holderIdentity"]
    denial = re.compile(rf'serviceaccount:{chart_operator.release}:{chart_operator.release}-operator\\?" cannot')
    assert not denial.search(chart_operator.log()), "the operator hit a permission the chart does not grant"
