"""Cancellation: deleting an AgentTask stops its run in the sandbox.

A waiting task carries no finalizer, so deleting it costs one API call and it simply leaves the
queue. Just before a run is claimed the task gets RUN_FINALIZER, and it keeps it until the run is
known stopped (finished, retried, or cancelled here): deleting it meanwhile only marks it, and
the task loop then stops the run (runner.cancel_command: SIGTERM to its process group, SIGKILL
after a grace), says so with an Event TaskCancelled and removes the finalizer. The slot stays
counted until then, so the next task never shares the sandbox with a dying run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from remote_agents.api.names import RUN_FINALIZER, TASKS
from remote_agents.controller.agents.fleet import Fleet
from remote_agents.controller.agents.inputs import AgentInputs
from remote_agents.controller.clients.e2b import E2BError, SandboxGateway, SandboxGone
from remote_agents.controller.clients.events import EventSink
from remote_agents.controller.clients.kube import Kube, SecretMissing
from remote_agents.controller.tasks import decide, runner
from remote_agents.controller.tasks.book import Task, TaskBook

log = logging.getLogger(__name__)
CANCEL_GRACE_SECONDS = decide.KILL_GRACE_SECONDS  # from SIGTERM to SIGKILL, as at a deadline
CANCEL_RETRY_SECONDS = 2  # after a failed attempt to reach the sandbox


class Cancellations:
    def __init__(self, book: TaskBook, kube: Kube, gateway: SandboxGateway, inputs: AgentInputs, fleet: Fleet,
                 emit: EventSink):
        self.book = book
        self.kube = kube
        self.gateway = gateway
        self.inputs = inputs
        self.fleet = fleet
        self.emit = emit
        self._not_before: dict[str, float] = {}  # uid -> earliest next try to stop its run

    # ---- the finalizer ------------------------------------------------------------------------
    async def hold(self, task: Task) -> bool:
        """Put the run finalizer on the task before its run is claimed. False when the task is
        gone or being deleted: then no run may start."""
        meta = task["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if RUN_FINALIZER not in finalizers:
            updated = await self.kube.patch(TASKS, meta["namespace"], meta["name"],
                                            {"metadata": {"finalizers": [*finalizers, RUN_FINALIZER]}})
            if updated is None:
                return False
            self.book.observe(updated)  # in place: the task now shows the finalizer (and any deletion)
        return not meta.get("deletionTimestamp")

    async def release(self, task: Task) -> None:
        """Take the run finalizer off: the run is known stopped."""
        meta = task["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if RUN_FINALIZER not in finalizers:
            return
        rest = [f for f in finalizers if f != RUN_FINALIZER]
        # A merge patch replaces the whole list: the others are those we hold (nothing else adds any).
        updated = await self.kube.patch(TASKS, meta["namespace"], meta["name"],
                                        {"metadata": {"finalizers": rest or None}})
        meta["finalizers"] = rest
        if updated is not None and self.book.tasks.get(meta["uid"]) is task:
            self.book.observe(updated)

    # ---- stopping -----------------------------------------------------------------------------
    async def stop_run(self, task: Mapping[str, Any]) -> bool:
        """End the task's run in its sandbox for good; True once it is known stopped (or there is
        none, or no sandbox any more), False when the sandbox could not be reached (try again)."""
        status = task["status"]
        view = self.fleet.find(task["metadata"]["namespace"], status.get("agent") or "")
        if not status.get("runId") or not status.get("sandboxID") or view is None or view.spec is None:
            return True
        try:
            sandbox = await self.inputs.address(view.namespace, view.spec, status["sandboxID"])
            outcome = await self.gateway.run(sandbox, runner.cancel_command(status, CANCEL_GRACE_SECONDS), envs={},
                                             cwd=None, timeout_seconds=CANCEL_GRACE_SECONDS + 15)
        except SandboxGone:
            return True
        except (E2BError, SecretMissing) as error:
            log.info("could not stop the run of task %s: %s", task["metadata"]["name"], error)
            return False
        return "stopped" in (outcome.stdout or "")

    async def cancel(self, task: Task) -> None:
        """A task deleted while it holds the run finalizer: stop its run, then let it go."""
        uid = task["metadata"]["uid"]
        if time.time() < self._not_before.get(uid, 0):
            return
        had_run = bool(task["status"].get("runId"))
        if not await self.stop_run(task):
            self._not_before[uid] = time.time() + CANCEL_RETRY_SECONDS
            return
        self._not_before.pop(uid, None)
        if had_run:
            self.emit(task, "Normal", "TaskCancelled",
                      f"the task was deleted: its run on {task['status'].get('agent')} was stopped")
        log.info("task %s/%s cancelled", task["metadata"]["namespace"], task["metadata"]["name"])
        await self.release(task)
