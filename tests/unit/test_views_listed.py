"""Nothing is judged absent before the operator's views are whole: the fleet checks, the task
rounds, pool reconciles and pushes wait for the first list of the watch they judge by (issue 23:
a restarted operator failed running tasks as AgentGone before it had seen their agents)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remote_agents.controller.agents import fleet as fleet_module
from remote_agents.controller.agents.fleet import Fleet, ViewIncomplete
from remote_agents.controller.agents.inputs import AgentInputs
from remote_agents.controller.agents.sightings import Sightings
from remote_agents.controller.pools.reconcile import PoolReconciler
from remote_agents.controller.sandboxes import CommandOutcome, ObservedSandbox, SandboxAddress
from remote_agents.controller.settings import OperatorSettings
from remote_agents.controller.sources.refs import RefResolver
from remote_agents.controller.sources.webhook import PATH, PushEvent, webhook_app
from remote_agents.controller.tasks.cancel import Cancellations
from remote_agents.controller.tasks.controller import TaskController
from tests.unit.test_webhook import SECRET, push_payload, sign

REPO = "https://github.com/Octo/Agent"
COMMIT = "b" * 40


async def settle() -> None:
    """Let every task that can run, run (each pass of the loop advances them one step)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def until(check, what: str, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class FakeKube:
    """Records the calls the fleet and the pools make."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def request_reconcile(self, plural: str, namespace: str, name: str, **extra) -> None:
        self.calls.append(("request_reconcile", namespace, name, extra.get("pushed_revision")))

    async def orphaned_sandboxes(self, namespaces: tuple[str, ...]) -> set[str]:
        self.calls.append(("orphaned_sandboxes",))
        return set()

    async def get(self, plural: str, namespace: str, name: str) -> None:
        self.calls.append(("get", plural, namespace, name))
        return None  # (the pool is gone: its reconcile ends there)


class FakeGateway:
    """A fleet-wide list of `sandboxes`; records kills."""

    def __init__(self, *sandboxes: ObservedSandbox) -> None:
        self.sandboxes = list(sandboxes)
        self.lists = 0
        self.killed: list[str] = []

    async def list(self, metadata: dict, account) -> list[ObservedSandbox]:
        self.lists += 1
        return self.sandboxes

    async def kill(self, address: SandboxAddress) -> bool:
        self.killed.append(address.sandbox_id)
        return True


def sandbox_of(uid: str, sandbox_id: str) -> ObservedSandbox:
    far = datetime.now(timezone.utc) + timedelta(hours=1)
    return ObservedSandbox(sandbox_id, "running", {"remoteagents.io/uid": uid, "remoteagents.io/cluster": "cluster-1"},
                           started_at=far, end_at=far)


def agent_body(name: str, revision: str | None = "a" * 40) -> dict:
    return {"metadata": {"uid": f"uid-{name}", "namespace": "research", "name": name, "generation": 1},
            "spec": {"source": {"repo": REPO, "ref": "main"}}, "status": {"revision": revision}}


def make_fleet(kube: FakeKube, gateway: FakeGateway | None = None) -> Fleet:
    return Fleet(gateway or FakeGateway(), kube, OperatorSettings(health_interval_seconds=0.01,
                                                                  ref_poll_interval_seconds=3600,
                                                                  orphan_grace_seconds=0),
                 "cluster-1", Sightings(max_age_seconds=1), RefResolver(5), listed=asyncio.Event())


async def test_the_fleet_lists_sandboxes_at_once_but_judges_them_only_against_every_agent():
    # A sandbox of an agent not delivered yet is no orphan; one whose agent is not in the full list is.
    kube, gateway = FakeKube(), FakeGateway(sandbox_of("uid-a-0", "sbx-a-0"), sandbox_of("uid-gone", "sbx-gone"))
    fleet = make_fleet(kube, gateway)
    checks = asyncio.create_task(fleet.run())
    try:
        await until(lambda: gateway.lists == 1, "the first fleet-wide list")
        assert fleet.sightings.recent("uid-a-0") is not None  # a restarted operator's resumes can use it
        await settle()
        assert gateway.lists == 1 and gateway.killed == [] and kube.calls == []
        fleet.observe(None, agent_body("a-0", revision=None))  # (no code yet: no ref poll, no git)
        fleet.listed.set()
        await until(lambda: gateway.killed, "the orphan to be swept")
        assert gateway.killed == ["sbx-gone"]
    finally:
        checks.cancel()


async def test_a_push_before_the_first_list_waits_for_it_and_matches_the_agents_listed():
    kube = FakeKube()
    fleet = make_fleet(kube)
    event = PushEvent(frozenset({"github.com/octo/agent"}), "main", COMMIT, "d-1")
    push = asyncio.create_task(fleet.on_push(event))
    await settle()
    assert not push.done()  # "0 agents track it" would be a guess
    fleet.observe(None, agent_body("a-0"))
    fleet.listed.set()
    assert await push == 1
    await until(lambda: kube.calls, "the agent to be poked")
    assert kube.calls == [("request_reconcile", "research", "a-0", COMMIT)]


async def test_a_push_the_list_does_not_arrive_for_is_refused_so_github_can_redeliver_it(monkeypatch):
    monkeypatch.setattr(fleet_module, "PUSH_WAIT_SECONDS", 0.05)
    fleet = make_fleet(FakeKube())
    event = PushEvent(frozenset({"github.com/octo/agent"}), "main", COMMIT, "d-1")
    with pytest.raises(ViewIncomplete):
        await fleet.on_push(event)
    raw = json.dumps(push_payload(after=COMMIT)).encode()
    headers = {"X-GitHub-Event": "push", "Content-Type": "application/json", "X-Hub-Signature-256": sign(raw)}
    async with TestClient(TestServer(webhook_app(SECRET, fleet.on_push))) as client:
        refused = await client.post(PATH, data=raw, headers={**headers, "X-GitHub-Delivery": "early"})
        assert refused.status == 503
        fleet.observe(None, agent_body("a-0"))
        fleet.listed.set()
        redelivered = await client.post(PATH, data=raw, headers={**headers, "X-GitHub-Delivery": "early"})
        assert (redelivered.status, await redelivered.json()) == (200, {"matched": 1})


def counting_task_loop(monkeypatch, fleet) -> tuple[TaskController, list[int], asyncio.Task]:
    """A task controller whose rounds only count themselves, its loop running."""
    kube = FakeKube()
    controller = TaskController(kube, FakeGateway(), inputs=AgentInputs(kube), fleet=fleet, activity=None, emit=None,
                                github_api_hosts=(), listed=asyncio.Event())
    rounds: list[int] = []
    monkeypatch.setattr(controller, "step", lambda: rounds.append(1))
    return controller, rounds, asyncio.create_task(controller.run())


async def test_task_rounds_start_only_once_agents_and_tasks_are_both_listed(monkeypatch):
    fleet = SimpleNamespace(listed=asyncio.Event())
    controller, rounds, loop = counting_task_loop(monkeypatch, fleet)
    try:
        controller.scheduler.wake()
        await settle()
        controller.listed.set()  # the tasks are listed, the agents not yet: a Running task's agent is unknown
        controller.scheduler.wake()
        await settle()
        assert rounds == []
        fleet.listed.set()
        controller.scheduler.wake()
        await until(lambda: rounds, "a task round")
    finally:
        loop.cancel()


async def test_task_rounds_wait_for_the_tasks_too(monkeypatch):
    # With agents but not tasks listed, an agent running a task looks idle (pause_idle) and free (dispatch).
    fleet = SimpleNamespace(listed=asyncio.Event())
    fleet.listed.set()
    controller, rounds, loop = counting_task_loop(monkeypatch, fleet)
    try:
        controller.scheduler.wake()
        await settle()
        assert rounds == []
        controller.listed.set()
        controller.scheduler.wake()
        await until(lambda: rounds, "a task round")
    finally:
        loop.cancel()


async def test_a_pool_is_reconciled_only_once_the_tasks_are_listed():
    # Its plan keeps busy agents at scale-down: busy is known only once every running task is seen.
    kube = FakeKube()
    pools = PoolReconciler(kube, emit=None, running_counts=Counter, tasks_listed=asyncio.Event())
    reconcile = asyncio.create_task(pools.reconcile("research", "workers"))
    await settle()
    assert kube.calls == [] and not reconcile.done()
    pools.tasks_listed.set()
    await reconcile
    assert kube.calls == [("get", "agentpools", "research", "workers")]


async def test_the_run_of_a_task_deleted_before_its_agent_is_listed_is_still_stopped():
    commands = []

    class Gateway:
        async def run(self, address: SandboxAddress, command: str, **_: object) -> CommandOutcome:
            commands.append((address.sandbox_id, command))
            return CommandOutcome(0, "stopped\n", "")

    async def address(namespace: str, spec, sandbox_id: str) -> SandboxAddress:
        return SandboxAddress(sandbox_id)
    fleet = make_fleet(FakeKube())
    cancellations = Cancellations(book=None, scheduler=None, kube=None, gateway=Gateway(),
                                  inputs=SimpleNamespace(address=address), fleet=fleet, emit=None)
    task = {"metadata": {"namespace": "research", "name": "job", "uid": "t-1"},
            "status": {"phase": "Running", "agent": "a-0", "runId": "t-1", "sandboxID": "sbx-a-0"}}
    stop = asyncio.create_task(cancellations.stop_run(task))
    await settle()
    assert not stop.done()
    fleet.observe(None, agent_body("a-0"))
    fleet.listed.set()
    assert await stop
    assert [sandbox for sandbox, _ in commands] == ["sbx-a-0"] and "kill -TERM" in commands[0][1]
