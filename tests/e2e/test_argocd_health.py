"""Our Argo CD health checks (the Lua Argo CD would run) against real objects in each state, and
the kstatus library of sigs.k8s.io/cli-utils (what Flux reads) agreeing with them on each."""

from __future__ import annotations

import json

import pytest

from remote_agents_local import processes
from tests.e2e.test_agent_pool import pool_manifest
from tests.e2e.test_agent_task import task_manifest
from tests.e2e.test_remote_agent import agent_manifest
from tests.support import kstatus
from tests.support.argocd_health import health
from tests.support.kubectl import eventually


# What kstatus must say of an object in each Argo CD health: a pause is a settled state to it.
KSTATUS_OF_HEALTH = {"Healthy": "Current", "Suspended": "Current", "Progressing": "InProgress", "Degraded": "Failed"}


@pytest.fixture(scope="module", autouse=True)
def kstatus_checker():
    try:
        return kstatus.binary()
    except kstatus.KstatusUnavailable as error:
        pytest.fail(str(error), pytrace=False)


def wait_health(kubectl, kind: str, name: str, namespace: str, status: str, message_starts: str = "",
                timeout: float = 180) -> dict:
    """Wait until the object's health is `status` and its message starts as expected; then kstatus
    must agree on that same object."""
    def check():
        obj = kubectl.get(kind, name, namespace)
        verdict = health(obj)
        if verdict["status"] == status and verdict["message"].startswith(message_starts):
            return obj, verdict
        raise AssertionError(f"{kind}/{name}: {verdict}; status {json.dumps(obj.get('status'))}")
    obj, verdict = eventually(check, timeout, what=f"{kind}/{name} to be {status}")
    computed = kstatus.compute([obj])[name]
    assert computed["status"] == KSTATUS_OF_HEALTH[status], (verdict, computed, obj.get("status"))
    return verdict


def _unreachable_repo() -> str:
    return f"git://127.0.0.1:{processes.free_port()}/nothing.git"


def test_agents_in_every_state(kubectl, namespace, operator, agent_repo):
    kubectl.apply(agent_manifest("healthy", namespace, agent_repo.url))
    kubectl.apply(agent_manifest("paused", namespace, agent_repo.url, paused=True))
    kubectl.apply(agent_manifest("broken-setup", namespace, agent_repo.url, setup=["exit 7"]))
    kubectl.apply(agent_manifest("no-git", namespace, _unreachable_repo()))
    wait_health(kubectl, "remoteagent", "healthy", namespace, "Healthy", "Ready: sandbox is running")
    wait_health(kubectl, "remoteagent", "paused", namespace, "Suspended", "Paused:")
    wait_health(kubectl, "remoteagent", "broken-setup", namespace, "Degraded")
    wait_health(kubectl, "remoteagent", "no-git", namespace, "Progressing", "GitUnavailable:")
    # Resuming the paused agent: a new generation, Healthy again once the operator caught up.
    kubectl.run("patch", "remoteagent", "paused", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":false}}')
    wait_health(kubectl, "remoteagent", "paused", namespace, "Healthy", "Ready:")


def test_pools_in_every_state(kubectl, namespace, operator, agent_repo):
    kubectl.apply(pool_manifest("healthy", namespace, agent_repo.url, 1))
    kubectl.apply(pool_manifest("no-git", namespace, _unreachable_repo(), 1))
    wait_health(kubectl, "agentpool", "healthy", namespace, "Healthy", "AllAgentsReady:")
    wait_health(kubectl, "agentpool", "no-git", namespace, "Progressing", "Scaling:")
    kubectl.run("patch", "agentpool", "healthy", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":true}}')
    wait_health(kubectl, "agentpool", "healthy", namespace, "Suspended")


def test_tasks_in_every_state(kubectl, namespace, operator, agent_repo):
    kubectl.apply(agent_manifest("answers", namespace, agent_repo.url, query={"command": "bash answer.sh"}))
    kubectl.apply(agent_manifest("fails", namespace, agent_repo.url, query={"command": "exit 3"}))
    kubectl.apply(agent_manifest("slow", namespace, agent_repo.url, query={"command": "sleep 600"}))
    kubectl.apply(task_manifest("succeeds", namespace, "q", agent="answers"))
    kubectl.apply(task_manifest("fails", namespace, "q", agent="fails"))
    kubectl.apply(task_manifest("runs", namespace, "q", agent="slow", timeout=900))
    wait_health(kubectl, "agenttask", "succeeds", namespace, "Healthy")
    wait_health(kubectl, "agenttask", "fails", namespace, "Degraded")
    wait_health(kubectl, "agenttask", "runs", namespace, "Progressing", "Running: running on slow")
    # The slow agent runs one task at a time: the next one waits in the queue.
    kubectl.apply(task_manifest("queued", namespace, "q", agent="slow", timeout=900))
    verdict = wait_health(kubectl, "agenttask", "queued", namespace, "Progressing")
    assert kubectl.get("agenttask", "queued", namespace)["status"]["phase"] == "Pending", verdict
