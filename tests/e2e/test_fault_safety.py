"""While agents are Ready and paused, everything that can go wrong around them does: malformed
objects, missing Secrets, E2B list calls failing (pages of one sandbox each and no retry by the
operator on top of the SDK's, so whole lists fail, mostly part-way through). No sandbox of an existing agent is killed or
recreated, and every problem shows as a condition with a reason."""

from __future__ import annotations

import os

import pytest
from e2b.exceptions import RateLimitException, ServiceBusyException

from remote_agents_local import processes
from tests.e2e.conftest import FAST_OPERATOR_ARGS, start_e2b
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.kubectl import eventually
from tests.support.operator_process import OperatorProcess, stop_after_finalizing
from tests.support.sandbox_safety import (
    CREATES, KILLS, LISTS_PER_SWEEP, condition, e2b_requests, lists_made, max_tasks_unbounded, store_unchecked, swept,
)


@pytest.fixture(scope="module")
def e2b(tmp_path_factory):
    os.environ["E2B_LOCAL_SEED"] = "16"
    try:
        server = start_e2b(tmp_path_factory, "--error-rate", "list=0.6")
    finally:
        del os.environ["E2B_LOCAL_SEED"]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(cluster, crds, kubectl, e2b, tmp_path_factory):
    metrics_port = processes.free_port()
    process = OperatorProcess(cluster.kubeconfig, e2b.env, tmp_path_factory.mktemp("operator") / "operator.log",
                              *FAST_OPERATOR_ARGS, "--metrics-port", str(metrics_port),
                              env={"REMOTE_AGENTS_E2B_LIST_PAGE_SIZE": "1",
                                   # a page the SDK's retries could not get fails its whole list
                                   "REMOTE_AGENTS_E2B_MAX_ATTEMPTS": "1"}).start()
    process.metrics_url = f"http://127.0.0.1:{metrics_port}"
    yield process
    stop_after_finalizing(process, kubectl)


def sandboxes_of(e2b_client, uid: str) -> list:
    """The test's own look, through the same injected list failures: asked again until one passes."""
    def attempt() -> tuple[list]:
        try:
            return (e2b_client.by_uid(uid),)
        except (RateLimitException, ServiceBusyException) as error:
            raise AssertionError(error) from error
    return eventually(attempt, 120, what="a list through the injected faults")[0]


def poke(kubectl, name: str, namespace: str) -> None:
    kubectl.run("annotate", "--overwrite", "ra", name, "-n", namespace, "reconcile.remoteagents.io/requested-at=poke")


def test_faults_around_ready_and_paused_agents_touch_no_sandbox(kubectl, namespace, operator, e2b, e2b_client,
                                                                 agent_repo):
    kubectl.run("create", "secret", "generic", "env-keys", "-n", namespace, "--from-literal=token=t0k3n")
    kubectl.run("create", "secret", "generic", "tenant-e2b", "-n", namespace,
                f"--from-literal=apiKey={e2b.env['E2B_API_KEY']}")
    kubectl.apply(agent_manifest("runner", namespace, agent_repo.url, env=[
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "env-keys", "key": "token"}}}]))
    kubectl.apply(agent_manifest("sleeper", namespace, agent_repo.url, paused=True))
    kubectl.apply(agent_manifest("keyed", namespace, agent_repo.url, paused=True,
                                 e2bApiKeySecretRef={"name": "tenant-e2b", "key": "apiKey"}))
    names = ("runner", "sleeper", "keyed")
    agents = {name: wait_ready(kubectl, name, namespace, timeout=300) for name in names}
    creates, kills = e2b_requests(e2b, CREATES), e2b_requests(e2b, KILLS)

    # Malformed objects: one of the agents, stored under a looser schema, and a new one likewise.
    with max_tasks_unbounded(kubectl):
        store_unchecked(kubectl, "patch", "ra", "sleeper", "-n", namespace, "--type=merge", "-p",
                        '{"spec":{"maxConcurrentTasks":100}}')
        kubectl.apply(agent_manifest("broken", namespace, agent_repo.url, maxConcurrentTasks=200))
    # Missing Secrets: an env Secret, and the E2B key (protected: it stays until no agent uses it).
    kubectl.run("delete", "secret", "env-keys", "-n", namespace)
    kubectl.run("delete", "secret", "tenant-e2b", "-n", namespace, "--wait=false")
    for name in ("runner", "keyed"):
        poke(kubectl, name, namespace)

    problems = {"sleeper": "InvalidSpec", "broken": "InvalidSpec", "runner": "SecretNotFound"}
    for name, reason in problems.items():
        stalled = eventually(lambda name=name: condition(kubectl, name, namespace, "Stalled"), 120,
                             what=f"{name} Stalled")
        assert stalled["reason"] == reason and stalled["message"], (name, stalled)
    # Pages of one sandbox: a fleet list is a call per sandbox, so wait for that many times more.
    swept(operator, since=lists_made(operator.metrics_url), lists=LISTS_PER_SWEEP * 5)

    for name, agent in agents.items():
        found = sandboxes_of(e2b_client, agent["metadata"]["uid"])
        assert [s.sandbox_id for s in found] == [agent["status"]["sandboxID"]], f"{name}: {found}"
        assert str(found[0].state.value) == ("running" if name == "runner" else "paused"), name
    broken_uid = kubectl.get("ra", "broken", namespace)["metadata"]["uid"]
    assert sandboxes_of(e2b_client, broken_uid) == []
    assert e2b_requests(e2b, CREATES) == creates, "a sandbox was created or recreated"
    assert e2b_requests(e2b, KILLS) == kills, "a sandbox was killed"
    assert "killing orphaned sandbox" not in operator.log()
    assert condition(kubectl, "keyed", namespace, "Ready"), "the protected key kept its agent working"
    assert e2b_requests(e2b, r"GET /v2/sandboxes -> (?:503|429)") > 0, "no list error was injected"
    assert "check_sandboxes failed: list failed" in operator.log(), "no fleet-wide list failed"
    # Every problem is a condition with a reason (Ready is False with the same reason).
    for name, reason in problems.items():
        ready = next(c for c in kubectl.get("ra", name, namespace)["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False" and ready["reason"] == reason, (name, ready)
