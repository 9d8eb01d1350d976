"""The operator wired as main.py wires it (`Operator`), on the in-memory fakes, for the
orchestrators' unit tests: a fake Kubernetes API, a fake E2B, an Event log and a wall clock the
test moves. The fakes are the world: a restart builds a fresh operator (no memory) on them.

Kopf is not there: a test calls the agent handlers itself (`reconcile_agent`, `delete_agent`,
which add and remove the finalizer as Kopf does). The streams of RemoteAgents and AgentTasks
are the fake API's watches, feeding the operator's ObjectWatch callbacks as clients/watch.py does. The task loop runs
only when a test starts it (`start_task_loop`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from remote_agents.api.names import AGENTS, API_VERSION, FINALIZER, POOLS, TASKS, TEMPLATES
from remote_agents.controller.main import Operator
from remote_agents.controller.settings import OperatorSettings
from tests.support.fake_e2b import FakeSandboxGateway
from tests.support.fake_kube import FakeKube

NAMESPACE = "default"
CLUSTER = "cluster-1"
REPO = "file:///srv/agent.git"
REV_A, REV_B = "a" * 40, "b" * 40  # full SHAs: the ref resolver answers them without git
WAIT_SECONDS = 10  # the bound of every wait for a condition (each normally holds within milliseconds)


class Clock:
    """The wall clock (`time.time`) the operator and the fakes read, which a test moves forward.
    Monotonic time (asyncio's) runs on untouched."""

    def __init__(self) -> None:
        self._real = time.time
        self.offset = 0.0

    def time(self) -> float:
        return self._real() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass(frozen=True)
class Event:
    name: str  # of the object it is about
    type: str
    reason: str
    message: str


class EventLog:
    """An EventSink that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, body: Any, kind: str, reason: str, message: str) -> None:
        self.events.append(Event(body["metadata"]["name"], kind, reason, message))

    def reasons(self, name: str | None = None) -> list[str]:
        return [e.reason for e in self.events if name is None or e.name == name]


def agent_spec(**overrides: Any) -> dict[str, Any]:
    """A RemoteAgent spec at REV_A whose query command is "answer" (see FakeSandboxGateway.programs)."""
    return {"source": {"repo": REPO, "ref": REV_A}, "query": {"command": "answer"}, **overrides}


class World:
    def __init__(self, clock: Clock, settings: OperatorSettings | None = None):
        self.clock = clock
        self.settings = settings or OperatorSettings(cluster_id=CLUSTER, health_interval_seconds=30,
                                                     orphan_grace_seconds=300)
        self.kube = FakeKube()
        self.e2b = FakeSandboxGateway()
        self.events = EventLog()
        self.operator = self._start_operator()

    def _start_operator(self) -> Operator:
        operator = Operator(self.settings, self.kube, CLUSTER, gateway=self.e2b, emit=self.events,
                            builds=self.e2b.templates)
        # The fake API's streams stand in for the operator's watches (never started): they feed
        # what those would feed, and say when their first list is in.
        self._unwatch = [self.kube.watch(plural, watch.deliver, watch.synced)
                         for plural, watch in ((AGENTS, operator.agent_watch), (TASKS, operator.task_watch),
                                               (TEMPLATES, operator.template_watch))]
        return operator

    async def restart(self, while_down: Callable[[], Awaitable[None]] | None = None) -> None:
        """The operator process dies (everything it had in flight with it) and a new one starts,
        after `while_down` when given (what happens while no operator runs)."""
        for unwatch in self._unwatch:
            unwatch()
        await stop_everything_else()
        if while_down is not None:
            await while_down()
        self.operator = self._start_operator()
        await self.kube.flush()

    async def close(self) -> None:
        await stop_everything_else()

    # ---- agents, as Kopf would hand them over ----------------------------------------------------
    async def create_agent(self, name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
        await self.kube.create(AGENTS, NAMESPACE, {
            "apiVersion": API_VERSION, "kind": "RemoteAgent",
            "metadata": {"name": name, "labels": labels or {}}, "spec": agent_spec(**spec)})
        await self.kube.flush()
        return self.agent(name)

    def agent(self, name: str) -> dict[str, Any] | None:
        return self.kube.object(AGENTS, NAMESPACE, name)

    def status(self, name: str, plural: str = AGENTS) -> dict[str, Any]:
        return (self.kube.object(plural, NAMESPACE, name) or {}).get("status") or {}

    async def update_agent(self, name: str, **spec: Any) -> None:
        await self.kube.patch(AGENTS, NAMESPACE, name, {"spec": spec})
        await self.kube.flush()

    async def reconcile_agent(self, name: str) -> None:
        """What Kopf's create/update/resume handler does: finalizer first, then the reconcile."""
        if FINALIZER not in (self.agent(name)["metadata"].get("finalizers") or []):
            await self.kube.patch(AGENTS, NAMESPACE, name, {"metadata": {"finalizers": [FINALIZER]}})
        try:
            await self.operator.agents.reconcile(self.agent(name))
        finally:
            await self.kube.flush()

    async def ready_agent(self, name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
        await self.create_agent(name, labels, **spec)
        await self.reconcile_agent(name)
        return self.agent(name)

    async def delete_agent(self, name: str) -> None:
        """kubectl delete, then Kopf's delete handler and the finalizer's removal."""
        await self.kube.delete(AGENTS, NAMESPACE, name)
        await self.operator.agents.delete(self.agent(name))
        await self.kube.patch(AGENTS, NAMESPACE, name, {"metadata": {"finalizers": None}})
        await self.kube.flush()

    # ---- pools and tasks -----------------------------------------------------------------------
    async def create_pool(self, name: str, replicas: int, **spec: Any) -> dict[str, Any]:
        template = spec.pop("template", {"spec": agent_spec()})
        await self.kube.create(POOLS, NAMESPACE, {
            "apiVersion": API_VERSION, "kind": "AgentPool", "metadata": {"name": name},
            "spec": {"replicas": replicas, "template": template, **spec}})
        return self.kube.object(POOLS, NAMESPACE, name)

    async def create_task(self, name: str, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
        """An AgentTask (agent="x" for agentRef, pool="p" for poolRef); `status` as if written before."""
        target = ({"agentRef": {"name": spec.pop("agent")}} if "agent" in spec
                  else {"poolRef": {"name": spec.pop("pool")}})
        await self.kube.create(TASKS, NAMESPACE, {
            "apiVersion": API_VERSION, "kind": "AgentTask", "metadata": {"name": name},
            "spec": {"query": "what is 6 x 7?", **target, **spec}})
        if status:
            await self.kube.patch_status(TASKS, NAMESPACE, name, status)
        await self.kube.flush()
        return self.kube.object(TASKS, NAMESPACE, name)

    def start_task_loop(self) -> None:
        asyncio.get_running_loop().create_task(self.operator.tasks.run(), name="task-loop")

    # ---- waiting -------------------------------------------------------------------------------
    async def eventually(self, condition: Callable[[], Any], what: str, creep: float = 0.0) -> Any:
        """Wait for `condition()` to be true (returns its value), moving the clock by `creep` seconds
        at each look; fails after WAIT_SECONDS of real time."""
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while not (value := condition()):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not within {WAIT_SECONDS}s: {what}")
            self.clock.advance(creep)
            await asyncio.sleep(0.005)
        return value


async def stop_everything_else() -> None:
    """Cancel every task on the loop but the caller's, and wait until they are gone."""
    others = {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}
    while others:
        for task in others:
            task.cancel()
        # Again until they are gone: Python 3.11's wait_for (the task loop's) can swallow a
        # cancellation that arrives as its wait ends.
        _, others = await asyncio.wait(others, timeout=0.1)
