"""The shipped RBAC is enough, and only it: the operator runs with a token of its own
ServiceAccount (no admin rights) and reconciles an agent, a pool and a task."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from remote_agents.api.names import LEADER_LEASE
from tests.conftest import ROOT
from tests.e2e.conftest import FAST_OPERATOR_ARGS
from tests.e2e.test_agent_pool import pool_manifest, wait_pool_ready
from tests.e2e.test_agent_task import finished, task_manifest
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.operator_process import OperatorProcess, stop_after_finalizing

SERVICE_ACCOUNT = ("remote-agents", "remote-agents-operator")


def service_account_kubeconfig(kubectl, admin_kubeconfig: str, target: Path,
                               account: tuple[str, str] = SERVICE_ACCOUNT) -> str:
    token = kubectl.run("create", "token", account[1], "-n", account[0], "--duration=2h").stdout.strip()
    config = yaml.safe_load(Path(admin_kubeconfig).read_text())
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "operator"
    target.write_text(yaml.safe_dump(config))
    return str(target)


@pytest.fixture(scope="module")
def operator(cluster, crds, kubectl, e2b, tmp_path_factory):
    base = ROOT / "manifests" / "base"
    kubectl.run("apply", "--server-side", "-f", str(base / "namespace.yaml"), "-f", str(base / "rbac.yaml"))
    state = tmp_path_factory.mktemp("least-privilege")
    kubeconfig = service_account_kubeconfig(kubectl, cluster.kubeconfig, state / "kubeconfig")
    # As the shipped Deployment runs it: with leader election, on the Lease its RBAC names.
    process = OperatorProcess(kubeconfig, e2b.env, state / "operator.log", *FAST_OPERATOR_ARGS,
                              "--leader-election", "--lease-namespace", SERVICE_ACCOUNT[0]).start()
    yield process
    stop_after_finalizing(process, kubectl)


def test_operator_with_only_its_rbac_reconciles_agent_pool_and_task(kubectl, namespace, operator, agent_repo):
    who = kubectl.run("auth", "can-i", "list", "secrets", "-n", namespace,
                      f"--as=system:serviceaccount:{SERVICE_ACCOUNT[0]}:{SERVICE_ACCOUNT[1]}", check=False)
    assert who.stdout.strip() == "no"  # least privilege: it may read a named Secret, not list them

    kubectl.run("create", "secret", "generic", "keys", "-n", namespace, "--from-literal=token=t0k3n-value")
    kubectl.apply(agent_manifest("solo", namespace, agent_repo.url, query={"command": "bash answer.sh"},
                                 env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "token"}}}]))
    kubectl.apply(pool_manifest("crew", namespace, agent_repo.url, 2, query={"command": "bash answer.sh"}))
    wait_ready(kubectl, "solo", namespace)
    wait_pool_ready(kubectl, "crew", namespace)
    kubectl.apply(task_manifest("ask", namespace, "rbac?", pool="crew"))
    task = finished(kubectl, "ask", namespace)
    assert task["status"]["phase"] == "Succeeded"
    assert kubectl.get("configmap", task["status"]["outputConfigMap"], namespace) is not None
    events = json.loads(kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert {"SandboxCreated", "AgentCreated", "Succeeded"} <= {e["reason"] for e in events}

    lease = kubectl.get("lease", LEADER_LEASE, SERVICE_ACCOUNT[0])
    assert lease["spec"]["holderIdentity"]  # it led: creating and renewing its Lease was allowed

    kubectl.run("delete", "ra", "solo", "-n", namespace, "--timeout=60s")
    log = operator.log()
    # An RBAC denial reads: ... is forbidden: User "system:serviceaccount:NS:NAME" cannot VERB ...
    denial = re.compile(rf'serviceaccount:{SERVICE_ACCOUNT[0]}:{SERVICE_ACCOUNT[1]}\\?" cannot')
    assert not denial.search(log), "the operator hit a permission it lacks"
