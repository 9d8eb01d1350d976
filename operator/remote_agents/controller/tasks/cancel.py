"""Cancellation: deleting an AgentTask stops its run in the sandbox.

A task carries no finalizer of ours: a delete is one API call, and a task costs no writes for
cancellation while it lives. The run is stopped from what the operator holds of the task when
its DELETED event comes (agent, sandbox and run id, all in its status): SIGTERM to the run's
process group, SIGKILL after a grace (runner.cancel_command), tried again while the sandbox
cannot be reached, with an Event TaskCancelled once it is stopped. The slot stays taken until
then (scheduler.stopping), so the next task never shares the sandbox with a dying run. A task
that another finalizer keeps is stopped as soon as it is marked for deletion, and says so in its
status (and loses our legacy finalizer, if an earlier build put it there). A delete that no
operator saw (none was running) leaves a run whose task is gone: the next operator finds it in
the sandbox and stops it (tasks/orphan_runs.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from remote_agents.api.names import LEGACY_RUN_FINALIZER, TASKS
from remote_agents.api.timestamps import now_rfc3339
from remote_agents.controller.agents.fleet import Fleet
from remote_agents.controller.agents.inputs import AgentInputs
from remote_agents.controller.clients.e2b import E2BError, SandboxGateway, SandboxGone
from remote_agents.controller.clients.events import EventSink
from remote_agents.controller.clients.kube import Kube, SecretMissing
from remote_agents.controller.sandboxes import SandboxAddress
from remote_agents.controller.status import Outcome
from remote_agents.controller.tasks import decide, runner
from remote_agents.controller.tasks.book import Task, TaskBook
from remote_agents.controller.tasks.scheduler import Scheduler

log = logging.getLogger(__name__)
CANCEL_GRACE_SECONDS = decide.KILL_GRACE_SECONDS  # from SIGTERM to SIGKILL, as at a deadline
CANCEL_RETRY_SECONDS = 2  # after a failed attempt to reach the sandbox


def has_live_run(task: Mapping[str, Any]) -> bool:
    status = task.get("status") or {}
    return status.get("phase") == "Running" and bool(status.get("runId"))


class Cancellations:
    def __init__(self, book: TaskBook, scheduler: Scheduler, kube: Kube, gateway: SandboxGateway,
                 inputs: AgentInputs, fleet: Fleet, emit: EventSink):
        self.book = book
        self.scheduler = scheduler
        self.kube = kube
        self.gateway = gateway
        self.inputs = inputs
        self.fleet = fleet
        self.emit = emit

    def cancel(self, task: Task) -> None:
        """Stop the run of a deleted task (or one marked for deletion) in the background, unless it
        is being stopped already; then let go of a task marked for deletion."""
        meta, status = task["metadata"], task["status"]
        if meta["uid"] in self.scheduler.stopping:
            return
        if has_live_run(task):
            self.scheduler.stopping[meta["uid"]] = (meta["namespace"], status.get("agent"))
            self.scheduler.spawn(meta["uid"], self._stop_and_tell(task))
        elif self.book.tasks.get(meta["uid"]) is task:
            self.scheduler.spawn(meta["uid"], self._let_go(task))

    async def _stop_and_tell(self, task: Task) -> None:
        meta, status = task["metadata"], task["status"]
        try:
            while not await self.stop_run(task):
                await asyncio.sleep(CANCEL_RETRY_SECONDS)
        finally:
            self.scheduler.stopping.pop(meta["uid"], None)
        message = f"the task was deleted: its run on {status.get('agent')} was stopped"
        self.emit(task, "Normal", "TaskCancelled", message)
        log.info("task %s/%s cancelled", meta["namespace"], meta["name"])
        if self.book.tasks.get(meta["uid"]) is task:  # still there: a finalizer holds it
            await self.book.write(task, Outcome(True, "TaskCancelled", message, stalled=True), phase="Failed",
                                  finished=False, completionTime=now_rfc3339())
            await self._let_go(task)

    async def _let_go(self, task: Task) -> None:
        """Take the legacy run finalizer off a task being deleted (other finalizers are not ours)."""
        meta = task["metadata"]
        finalizers = meta.get("finalizers") or []
        if LEGACY_RUN_FINALIZER in finalizers:
            await self.kube.patch(TASKS, meta["namespace"], meta["name"], {"metadata": {
                "finalizers": [f for f in finalizers if f != LEGACY_RUN_FINALIZER] or None}})

    async def stop_run(self, task: Mapping[str, Any]) -> bool:
        """End the task's run in its sandbox for good; True once it is known stopped (or there is
        none, or no sandbox any more), False when the sandbox could not be reached (try again)."""
        status = task["status"]
        await self.fleet.listed.wait()  # an agent not seen yet is not a gone one: its run must still stop
        view = self.fleet.find(task["metadata"]["namespace"], status.get("agent") or "")
        if not status.get("runId") or not status.get("sandboxID") or view is None or view.spec is None:
            return True
        try:
            sandbox = await self.inputs.address(view.namespace, view.spec, status["sandboxID"])
        except SecretMissing as error:
            log.info("could not stop the run of task %s: %s", task["metadata"]["name"], error)
            return False
        return await self.stop_in(sandbox, status["runId"])

    async def stop_in(self, sandbox: SandboxAddress, run_id: str) -> bool:
        """End run `run_id` in `sandbox` for good: True once it is known stopped (or the sandbox is
        gone), False when the sandbox could not be reached (try again)."""
        try:
            outcome = await self.gateway.run(sandbox, runner.cancel_command({"runId": run_id}, CANCEL_GRACE_SECONDS),
                                             envs={}, cwd=None, timeout_seconds=CANCEL_GRACE_SECONDS + 15)
        except SandboxGone:
            return True
        except E2BError as error:
            log.info("could not stop run %s: %s", run_id, error)
            return False
        return "stopped" in (outcome.stdout or "")
