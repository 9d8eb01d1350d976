"""The shipped RBAC is enough, and only it: the operator runs with a token of its own
ServiceAccount (no admin rights) and reconciles agents, a pool and a task; and the permissions it
was granted are checked one by one, those it needs and those it must not have.

First a namespaced install (rbac.objects with a watched namespace: Roles there, nothing in any
other namespace), then the cluster-wide base (manifests/base/rbac.yaml)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from remote_agents.api.names import LEADER_LEASE, ORPHANS_CONFIGMAP
from remote_agents.deploy import names, rbac
from tests.conftest import ROOT
from tests.e2e.conftest import FAKE_GITHUB_HOST, FAST_OPERATOR_ARGS
from tests.e2e.test_agent_pool import pool_manifest, wait_pool_ready
from tests.e2e.test_agent_task import finished, task_manifest
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.fake_github import FakeGitHub
from tests.support.kubectl import eventually
from tests.support.operator_process import OperatorProcess, stop_after_finalizing

ANSWER = {"command": "bash answer.sh"}
# Whatever the install, the operator never gets these.
NEVER = [("list", "secrets"), ("watch", "secrets"), ("delete", "configmaps"), ("patch", "configmaps/coredns"),
         ("update", "remoteagents.remoteagents.io"), ("create", "pods"),
         ("create", "rolebindings.rbac.authorization.k8s.io"), ("get", "leases.coordination.k8s.io"),
         ("create", "leases.coordination.k8s.io"),
         ("update", "leases.coordination.k8s.io/kube-controller-manager")]


def subject(operator_namespace: str) -> str:
    return f"system:serviceaccount:{operator_namespace}:{names.SERVICE_ACCOUNT}"


def permissions(kubectl, operator_namespace: str, checks: list[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """`kubectl auth can-i` of each (verb, resource[, namespace]) as the operator's ServiceAccount."""
    def can(verb: str, resource: str, namespace: str | None = None) -> str:
        scope = ["-n", namespace] if namespace else []
        return kubectl.run("auth", "can-i", verb, resource, *scope, f"--as={subject(operator_namespace)}",
                           check=False).stdout.strip()
    return {check: can(*check) for check in checks}


def service_account_kubeconfig(kubectl, admin_kubeconfig: str, target: Path, operator_namespace: str,
                               service_account: str = names.SERVICE_ACCOUNT) -> str:
    token = kubectl.run("create", "token", service_account, "-n", operator_namespace,
                        "--duration=2h").stdout.strip()
    config = yaml.safe_load(Path(admin_kubeconfig).read_text())
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "operator"
    target.write_text(yaml.safe_dump(config))
    return str(target)


def assert_no_denial(operator: OperatorProcess, operator_namespace: str) -> None:
    # An RBAC denial reads: ... is forbidden: User "system:serviceaccount:NS:NAME" cannot VERB ...
    denial = re.compile(rf'{re.escape(subject(operator_namespace))}\\?" cannot')
    assert not denial.search(operator.log()), "the operator hit a permission it lacks"


def run_agents_pool_and_published_task(kubectl, namespace: str, agent_repo) -> None:
    """Every feature's API calls: Secrets (env, GitHub token), agents, a pool, a task and its
    output ConfigMap, a publish, Events, and the orphan record of deletionPolicy Orphan (create,
    then patch)."""
    kubectl.run("create", "secret", "generic", "keys", "-n", namespace, "--from-literal=token=t0k3n-value",
                "--from-literal=gh=ghp_least_privilege_1")
    token = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "token"}}}
    for name in ("solo", "spare"):
        kubectl.apply(agent_manifest(name, namespace, agent_repo.url, query=ANSWER, deletionPolicy="Orphan", env=[token]))
    # Autoscaled from 0 to its minReplicas: its replicas are written through /scale.
    crew = json.loads(pool_manifest("crew", namespace, agent_repo.url, 0, query=ANSWER))
    crew["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 1}
    kubectl.apply(json.dumps(crew))
    for name in ("solo", "spare"):
        wait_ready(kubectl, name, namespace)
    wait_pool_ready(kubectl, "crew", namespace)
    with FakeGitHub(tokens=("ghp_least_privilege_1",)) as github:
        github.add_repo("quant/research", issues=(7,))
        task = json.loads(task_manifest("ask", namespace, "rbac?", pool="crew"))
        task["spec"]["github"] = {"repo": "quant/research", "issue": 7, "apiUrl": github.url,
                                  "credentialsSecretRef": {"name": "keys", "key": "gh"}}
        kubectl.apply(json.dumps(task))
        done = finished(kubectl, "ask", namespace)
        assert done["status"]["phase"] == "Succeeded"
        assert kubectl.get("configmap", done["status"]["outputConfigMap"], namespace) is not None
        eventually(lambda: (kubectl.get("agenttask", "ask", namespace).get("status") or {}).get("githubUrl"), 90,
                   what="the published comment")
    for name in ("solo", "spare"):
        kubectl.run("delete", "ra", name, "-n", namespace, "--timeout=60s")
    assert len(kubectl.get("configmap", ORPHANS_CONFIGMAP, namespace)["data"]) == 2
    events = json.loads(kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    reasons = {event["reason"] for event in events}
    assert {"SandboxCreated", "AgentCreated", "ScaledUp", "Succeeded", "Published", "SandboxOrphaned"} <= reasons


@pytest.fixture
def namespaced_operator(cluster, crds, kubectl, e2b, namespace, tmp_path):
    operator_namespace = f"{namespace}-op"
    kubectl.run("create", "namespace", operator_namespace)
    install = rbac.objects(operator_namespace, (namespace,))
    kubectl.run("apply", "--server-side", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                        "items": install}))
    kubeconfig = service_account_kubeconfig(kubectl, cluster.kubeconfig, tmp_path / "kubeconfig", operator_namespace)
    process = OperatorProcess(kubeconfig, e2b.env, tmp_path / "operator.log", *FAST_OPERATOR_ARGS,
                              "--namespace", namespace, "--github-api-host", FAKE_GITHUB_HOST,
                              "--leader-election", "--lease-namespace", operator_namespace).start()
    process.namespace = operator_namespace
    yield process
    # Only this operator serves the namespace: it finalizes what the test left before it stops.
    kubectl.run("delete", "agentpools,remoteagents", "--all", "-n", namespace, "--timeout=120s", check=False)
    process.stop()
    role = rbac.cluster_role_name(operator_namespace, (namespace,))
    kubectl.run("delete", "clusterrolebinding,clusterrole", role, check=False)
    kubectl.run("delete", "namespace", operator_namespace, "--wait=false", check=False)


def test_namespaced_install_grants_only_its_namespaces_and_is_enough(kubectl, namespace, namespaced_operator,
                                                                     agent_repo):
    own = namespaced_operator.namespace
    needed = [("get", "secrets", namespace), ("get", "configmaps", namespace), ("list", "configmaps", namespace),
              ("create", "configmaps", namespace), ("update", "configmaps", namespace),
              ("patch", f"configmaps/{ORPHANS_CONFIGMAP}", namespace), ("create", "events", namespace),
              ("watch", "remoteagents.remoteagents.io", namespace),
              ("create", "remoteagents.remoteagents.io", namespace), ("delete", "agenttasks.remoteagents.io", namespace),
              ("patch", "agenttasks.remoteagents.io/status", namespace),
              ("get", "namespaces/kube-system"), ("watch", "namespaces"),
              ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
              ("create", "leases.coordination.k8s.io", own), ("update", f"leases.coordination.k8s.io/{LEADER_LEASE}", own)]
    forbidden = [*((verb, resource, namespace) for verb, resource in NEVER),
                 *((verb, resource, "kube-system") for verb, resource in NEVER),
                 ("get", "secrets", "kube-system"), ("get", "secrets", "default"), ("get", "secrets", own),
                 ("create", "configmaps", "kube-system"), ("update", "configmaps/coredns", "kube-system"),
                 ("update", "configmaps/aws-auth", "kube-system"), ("create", "configmaps", "default"),
                 ("patch", "configmaps/someone-elses", namespace), ("update", "leases.coordination.k8s.io", own),
                 ("list", "remoteagents.remoteagents.io", "default"), ("get", "namespaces/default"),
                 ("create", "events", "default"), ("delete", "namespaces/kube-system")]
    assert permissions(kubectl, own, needed) == {check: "yes" for check in needed}
    assert permissions(kubectl, own, forbidden) == {check: "no" for check in forbidden}

    run_agents_pool_and_published_task(kubectl, namespace, agent_repo)
    assert_no_denial(namespaced_operator, own)


@pytest.fixture(scope="module")
def operator(cluster, crds, kubectl, e2b, tmp_path_factory):
    base = ROOT / "manifests" / "base"
    kubectl.run("apply", "--server-side", "-f", str(base / "namespace.yaml"), "-f", str(base / "rbac.yaml"))
    state = tmp_path_factory.mktemp("least-privilege")
    kubeconfig = service_account_kubeconfig(kubectl, cluster.kubeconfig, state / "kubeconfig", names.NAMESPACE)
    # As the shipped Deployment runs it: with leader election, on the Lease its RBAC names.
    process = OperatorProcess(kubeconfig, e2b.env, state / "operator.log", *FAST_OPERATOR_ARGS,
                              "--github-api-host", FAKE_GITHUB_HOST,
                              "--leader-election", "--lease-namespace", names.NAMESPACE).start()
    yield process
    stop_after_finalizing(process, kubectl)


def test_cluster_wide_base_is_enough_and_grants_no_more_than_it_documents(kubectl, namespace, operator, agent_repo):
    # The documented trade-off of serving every namespace: Secret get and ConfigMap writes hold in
    # every namespace (docs/deploy.md). What it never gets is checked all the same.
    trade_off = [("get", "secrets", "kube-system"), ("create", "configmaps", "kube-system")]
    assert permissions(kubectl, names.NAMESPACE, trade_off) == {check: "yes" for check in trade_off}
    election = [("create", "leases.coordination.k8s.io", names.NAMESPACE),
                ("update", f"leases.coordination.k8s.io/{LEADER_LEASE}", names.NAMESPACE)]
    assert permissions(kubectl, names.NAMESPACE, election) == {check: "yes" for check in election}
    forbidden = [*((verb, resource, namespace) for verb, resource in NEVER),
                 *((verb, resource, "kube-system") for verb, resource in NEVER),
                 ("patch", "configmaps/someone-elses", namespace),
                 ("update", "leases.coordination.k8s.io", names.NAMESPACE),
                 ("list", "namespaces", None), ("get", "namespaces/default", None)]
    assert permissions(kubectl, names.NAMESPACE, forbidden) == {check: "no" for check in forbidden}

    run_agents_pool_and_published_task(kubectl, namespace, agent_repo)
    assert_no_denial(operator, names.NAMESPACE)
    lease = kubectl.get("lease", LEADER_LEASE, names.NAMESPACE)
    assert lease["spec"]["holderIdentity"]  # it led: creating and renewing its Lease was allowed
