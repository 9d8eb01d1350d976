"""AgentTasks: one loop drives every task. Each round polls the running ones that need it, hands
the waiting ones to dispatch when something changed, and now and then tidies finished tasks and
agents' activity. Every step runs in the background (tasks/scheduler.py): a round never waits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from remote_agents.controller.agents.fleet import Fleet
from remote_agents.controller.agents.idle import AgentActivity
from remote_agents.controller.agents.inputs import AgentInputs
from remote_agents.controller.clients.e2b import SandboxGateway
from remote_agents.controller.clients.events import EventSink
from remote_agents.controller.clients.kube import Kube
from remote_agents.controller.tasks.book import TaskBook
from remote_agents.controller.tasks.cancel import Cancellations
from remote_agents.controller.tasks.dispatch import Dispatcher
from remote_agents.controller.tasks.housekeeping import Housekeeping
from remote_agents.controller.tasks.orphan_runs import OrphanRuns
from remote_agents.controller.tasks.runs import Runs
from remote_agents.controller.tasks.scheduler import Scheduler
from remote_agents.controller.tasks.session_ledger import SessionLedger

log = logging.getLogger(__name__)
ROUND_SECONDS = 1.0  # the longest a round waits for news before it looks at everything once more
FULL_POLL_SECONDS = 5  # every run is checked at least this often, watched live or not
DEADLINE_CHECK_SECONDS = 1  # how often runs are compared with their deadlines (in memory)
HOUSEKEEPING_SECONDS = 2  # TTL collection, publishing, idle pausing and activity mirroring need no faster pace


class TaskController:
    def __init__(self, kube: Kube, gateway: SandboxGateway, inputs: AgentInputs, fleet: Fleet,
                 activity: AgentActivity, emit: EventSink, github_api_hosts: tuple[str, ...],
                 listed: asyncio.Event, progress_interval_seconds: float = 5.0):
        """`listed`: set once every task has been delivered to `observe` (the watch's first list)."""
        self.listed = listed
        self.book = TaskBook(kube)
        self.scheduler = Scheduler(self.book)
        self.activity = activity
        self.fleet = fleet
        self.cancellations = Cancellations(self.book, self.scheduler, kube, gateway, inputs, fleet, emit)
        self.runs = Runs(self.book, self.scheduler, kube, gateway, inputs, fleet, activity, emit, self.cancellations,
                         progress_interval_seconds)
        self.sessions = SessionLedger(self.book, kube, fleet)
        self.dispatcher = Dispatcher(self.book, self.scheduler, fleet, activity, self.runs, self.sessions)
        self.orphan_runs = OrphanRuns(self.book, fleet, gateway, inputs, self.cancellations)
        self.housekeeping = Housekeeping(self.book, kube, emit, github_api_hosts, inputs.app_tokens)
        self._next_full_poll = 0.0
        self._next_deadline_check = 0.0
        self._next_housekeeping = 0.0
        self._housekeeping: asyncio.Task | None = None

    # ---- events -------------------------------------------------------------------------------
    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A task from the stream (clients/watch.py): listed, ADDED, MODIFIED or DELETED."""
        uid = body["metadata"]["uid"]
        if event_type == "DELETED":
            gone = self.book.forget(uid)
            self.runs.forget(uid)
            if gone:
                self.cancellations.cancel(gone)
            return
        task, phase_changed = self.book.observe(body)
        if task is None:
            return
        if phase_changed:
            self.scheduler.dispatch_due = True
        self.scheduler.wake()

    def agent_changed(self) -> None:
        self.scheduler.request_dispatch()

    def running_counts(self) -> Counter:
        return self.scheduler.running_counts()

    def queued(self, namespace: str, pool: str) -> int:
        """Tasks waiting for an agent of the pool (its autoscaler's demand). One being claimed is
        left out: running_counts has it already, and counted twice it would ask for a second agent."""
        starting = self.scheduler.starting
        return sum(1 for uid in self.book.index.waiting((namespace, "pool", pool)) if uid not in starting)

    def pool_queues(self) -> dict[tuple[str, str], int]:
        """Tasks waiting per (namespace, pool), for the pools that have any."""
        index = self.book.index
        return {(namespace, name): sum(1 for _ in index.waiting((namespace, kind, name)))
                for namespace, kind, name in index.targets() if kind == "pool"}

    # ---- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        # Rounds judge by both views: a running task whose agent is not seen yet is not AgentGone,
        # and an agent whose running tasks are not seen yet is neither idle nor free.
        await self.fleet.listed.wait()
        await self.listed.wait()
        while True:
            try:
                await asyncio.wait_for(self.scheduler.woken.wait(), ROUND_SECONDS)
            except asyncio.TimeoutError:
                self.scheduler.dispatch_due = True  # a quiet moment: look at everything once more
            self.scheduler.woken.clear()
            try:
                self.step()
            except Exception:  # keep supervising whatever one round hit; logged with its trace
                log.exception("task round failed")

    def step(self) -> None:
        """One round: decide, and hand every action to the background."""
        now = time.time()
        full_poll = now >= self._next_full_poll
        if full_poll:
            self._next_full_poll = now + FULL_POLL_SECONDS
        deadline_check = now >= self._next_deadline_check
        if deadline_check:
            self._next_deadline_check = now + DEADLINE_CHECK_SECONDS
        for uid in list(self.book.index.cancelling):  # marked for deletion, a finalizer keeps them
            if uid not in self.scheduler.busy:
                self.cancellations.cancel(self.book.tasks[uid])
        for uid in self.book.index.running:  # (spawning only schedules: nothing changes the set here)
            if uid in self.scheduler.busy:
                continue
            if self.runs.needs_poll(uid, now, full_poll, deadline_check):
                self.scheduler.spawn(uid, self.runs.poll(self.book.tasks[uid]))
            elif self.runs.progress_due(self.book.tasks[uid], now):
                self.scheduler.spawn(uid, self.runs.show_progress(self.book.tasks[uid]))
        if self.scheduler.dispatch_due:
            self.dispatcher.dispatch()
        if now >= self._next_housekeeping and (self._housekeeping is None or self._housekeeping.done()):
            self._next_housekeeping = now + HOUSEKEEPING_SECONDS
            self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep(now))

    def _awaited(self) -> set[tuple[str, str]]:
        """(namespace, agent) of the agents some waiting task can run on only."""
        named = {(namespace, name) for namespace, kind, name in self.book.index.targets() if kind == "agent"}
        return named | {key for key, holding in self.sessions.holdings().items() if holding.active}

    async def _housekeep(self, now: float) -> None:
        try:
            await self.housekeeping.tidy(now)
            load = self.running_counts()
            await self.activity.mirror(load)
            await self.orphan_runs.sweep()  # before idle pausing: a sandbox it sweeps is not paused meanwhile
            # An agent a waiting task is bound to (by agentRef or its session) is not idle: pausing it
            # while its wake-up is under way would make that task wait for the next one.
            await self.activity.pause_idle(now, load + Counter(self._awaited()))
            await self.sessions.mirror()
            await self.activity.refresh_usage(now)
        except Exception:  # the next round tries again; logged with its trace
            log.exception("task housekeeping failed")
