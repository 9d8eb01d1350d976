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
from remote_agents.controller.tasks.dispatch import Dispatcher
from remote_agents.controller.tasks.housekeeping import Housekeeping
from remote_agents.controller.tasks.runs import Runs
from remote_agents.controller.tasks.scheduler import Scheduler

log = logging.getLogger(__name__)
ROUND_SECONDS = 1.0  # the longest a round waits for news before it looks at everything once more
FULL_POLL_SECONDS = 5  # every run is checked at least this often, watched live or not
DEADLINE_CHECK_SECONDS = 1  # how often runs are compared with their deadlines (in memory)
HOUSEKEEPING_SECONDS = 2  # TTL collection, publishing, idle pausing and activity mirroring need no faster pace


class TaskController:
    def __init__(self, kube: Kube, gateway: SandboxGateway, inputs: AgentInputs, fleet: Fleet,
                 activity: AgentActivity, emit: EventSink, github_api_hosts: tuple[str, ...],
                 listed: asyncio.Event):
        """`listed`: set once every task has been delivered to `observe` (the watch's first list)."""
        self.listed = listed
        self.book = TaskBook(kube)
        self.scheduler = Scheduler(self.book)
        self.activity = activity
        self.fleet = fleet
        self.runs = Runs(self.book, self.scheduler, kube, gateway, inputs, fleet, activity, emit)
        self.dispatcher = Dispatcher(self.book, self.scheduler, fleet, activity, self.runs)
        self.housekeeping = Housekeeping(self.book, kube, emit, github_api_hosts, inputs.app_tokens)
        self._next_full_poll = 0.0
        self._next_deadline_check = 0.0
        self._next_housekeeping = 0.0
        self._housekeeping: asyncio.Task | None = None
        self._stopping: set[asyncio.Task] = set()

    # ---- events -------------------------------------------------------------------------------
    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A task from the stream (clients/watch.py): listed, ADDED, MODIFIED or DELETED."""
        uid = body["metadata"]["uid"]
        if event_type == "DELETED":
            gone = self.book.forget(uid)
            self.runs.forget(uid)
            if gone and gone["status"].get("phase") == "Running":
                stop = asyncio.get_running_loop().create_task(self.runs.stop(gone))
                self._stopping.add(stop)
                stop.add_done_callback(self._stopping.discard)
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
        for uid in self.book.index.running:  # (spawning only schedules: nothing changes the set here)
            if uid not in self.scheduler.busy and self.runs.needs_poll(uid, now, full_poll, deadline_check):
                self.scheduler.spawn(uid, self.runs.poll(self.book.tasks[uid]))
        if self.scheduler.dispatch_due:
            self.dispatcher.dispatch()
        if now >= self._next_housekeeping and (self._housekeeping is None or self._housekeeping.done()):
            self._next_housekeeping = now + HOUSEKEEPING_SECONDS
            self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep(now))

    async def _housekeep(self, now: float) -> None:
        try:
            await self.housekeeping.tidy(now)
            load = self.running_counts()
            await self.activity.mirror(load)
            await self.activity.pause_idle(now, load)
        except Exception:  # the next round tries again; logged with its trace
            log.exception("task housekeeping failed")
