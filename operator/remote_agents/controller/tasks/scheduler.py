"""Who is doing what for which task, so that a round never waits on the API or E2B: each task's
next step runs in the background, one at a time per task, and slots are counted from what is in
flight as well as from written status."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from remote_agents.controller.tasks.book import TaskBook

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, book: TaskBook):
        self.book = book
        self.busy: dict[str, asyncio.Task] = {}  # task uid -> its operation in flight
        self.starting: dict[str, tuple[str, str]] = {}  # uid -> (namespace, agent): slot taken, claim being written
        self.finishing: set[str] = set()  # uids whose run has ended: slot free, result being written
        self.stopping: dict[str, tuple[str, str]] = {}  # uid -> (namespace, agent): deleted, its run being stopped
        self.dispatch_due = True  # something changed that may let a waiting task start (or need a note)
        self.woken = asyncio.Event()  # something happened: the loop runs a round now

    def wake(self) -> None:
        self.woken.set()

    def request_dispatch(self) -> None:
        self.dispatch_due = True
        self.woken.set()

    def spawn(self, uid: str, operation: Coroutine[Any, Any, None]) -> None:
        """Run a task's next step in the background; the loop looks again when it ends."""
        job = asyncio.get_running_loop().create_task(operation)
        self.busy[uid] = job

        def ended(job: asyncio.Task) -> None:
            if self.busy.get(uid) is job:
                del self.busy[uid]
            if not job.cancelled() and job.exception() is not None:
                log.error("task %s: step failed", uid, exc_info=job.exception())
            if (self.book.tasks.get(uid) or {}).get("status", {}).get("phase") != "Running":
                self.dispatch_due = True  # it still waits (a note, a failed start) or freed its slot
            self.woken.set()
        job.add_done_callback(ended)

    def running_counts(self) -> Counter:
        """Tasks running now, by (namespace, agent): claimed in status or being claimed, not yet
        ended, or deleted with their run not yet stopped."""
        tasks, running = self.book.tasks, self.book.index.running
        counts = Counter((tasks[uid]["metadata"]["namespace"], tasks[uid]["status"].get("agent"))
                         for uid in running if uid not in self.finishing)
        counts.update(self.starting.values())
        counts.update(where for uid, where in self.stopping.items() if uid not in running)
        return counts
