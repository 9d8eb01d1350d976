"""A run's life in its agent's sandbox: start the runner, follow it (its stream, or polls of its
files), keep its deadline, and record the result.

The run survives operator restarts: everything needed to find it again (agent, sandbox, run id)
is in the task's status, and the runner records its exit code in the sandbox.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from remote_agents.api.names import API_VERSION
from remote_agents.api.timestamps import epoch, now_rfc3339
from remote_agents.controller import metrics, tracing
from remote_agents.controller.agents.decide import AgentView
from remote_agents.controller.agents.fleet import Fleet
from remote_agents.controller.agents.idle import AgentActivity
from remote_agents.controller.agents.inputs import AgentInputs
from remote_agents.controller.clients.e2b import E2BError, SandboxGateway, SandboxGone
from remote_agents.controller.clients.events import EventSink
from remote_agents.controller.clients.kube import Kube, SecretMissing
from remote_agents.controller.redaction import Redactor
from remote_agents.controller.sandboxes import SandboxAddress
from remote_agents.controller.status import Outcome
from remote_agents.controller.tasks import decide, runner
from remote_agents.controller.tasks.book import Task, TaskBook
from remote_agents.controller.tasks.scheduler import Scheduler

log = logging.getLogger(__name__)
NOT_STARTED_SECONDS = 15  # a claimed run with no pid file after this long was never started
OUTPUT_WITHHELD = "[output withheld: the agent's Secrets could not be read to redact it]"


async def _no_file() -> None:
    """read_file's answer for a file not worth asking for (the runner said the command wrote none)."""
    return None


class Runs:
    def __init__(self, book: TaskBook, scheduler: Scheduler, kube: Kube, gateway: SandboxGateway,
                 inputs: AgentInputs, fleet: Fleet, activity: AgentActivity, emit: EventSink):
        self.book = book
        self.scheduler = scheduler
        self.kube = kube
        self.gateway = gateway
        self.inputs = inputs
        self.fleet = fleet
        self.activity = activity
        self.emit = emit
        self.live: set[str] = set()  # uids of runs whose process stream we hold
        self._watchers: set[asyncio.Task] = set()
        self._terminated: dict[str, float] = {}  # uid -> when its overdue run was sent SIGTERM
        # uid -> the secret values its run was started with, kept from launch so that redacting
        # its output at the end costs no Secret reads.
        self._redactors: dict[str, Redactor] = {}
        self._spans: dict[str, trace.Span] = {}  # task uid -> its run's span, until the run ends

    def forget(self, uid: str) -> None:
        self._terminated.pop(uid, None)
        self._redactors.pop(uid, None)
        self._spans.pop(uid, None)

    def _end_span(self, uid: str, reason: str, ok: bool) -> None:
        span = self._spans.pop(uid, None)
        if span is not None:
            span.set_attribute("remoteagents.reason", reason)
            span.set_status(trace.StatusCode.OK if ok else trace.StatusCode.ERROR)
            span.end()

    # ---- starting -----------------------------------------------------------------------------
    async def launch(self, task: Task, view: AgentView) -> None:
        """Start the runner in the sandbox; safe to repeat (the runner's lock)."""
        meta, status = task["metadata"], task["status"]
        spec = self.book.spec(task)
        redact = Redactor()
        # The run's span lasts until finish(); its E2B calls are its children, and the command gets
        # TRACEPARENT so the agent's own spans (its LLM calls) join the trace. Kept in memory only:
        # a run an operator restart finds running ends without one.
        span = self._spans[meta["uid"]] = tracing.tracer.start_span("AgentTask run", attributes={
            "k8s.namespace.name": meta["namespace"], "remoteagents.task": meta["name"],
            "remoteagents.agent": view.name, "e2b.sandbox.id": status["sandboxID"]})
        try:
            with trace.use_span(span, end_on_exit=False):
                inputs = await self.inputs.resolve(meta["namespace"], view.spec, redact)
                handle = await self.gateway.start_background(
                    SandboxAddress(status["sandboxID"], inputs.account), runner.RUNNER,
                    envs={**inputs.env, **tracing.traceparent(span),
                          **runner.runner_env(status, spec.query, view.workdir, view.spec.query.command)})
        except SandboxGone:
            await self.finish(task, decide.Verdict(False, "SandboxLost", "the agent's sandbox is gone"), None, "", "")
            return
        except (E2BError, SecretMissing) as error:
            self._end_span(meta["uid"], "StartFailed", ok=False)
            # Not started: give the slot back and try again next round.
            log.warning("task %s/%s could not start on %s: %s", meta["namespace"], meta["name"], view.name,
                        redact(str(error)))
            await self.book.write(task, Outcome(False, "StartFailed", redact(str(error)), reconciling=True),
                                  phase="Pending", agent=None, startTime=None, runId=None, sandboxID=None)
            self.activity.note(meta["namespace"], view.name)
            return
        self._redactors[meta["uid"]] = redact
        self._follow(meta["uid"], handle)
        # A log line, not an Event: status (phase Running, agent, startTime) says it, and the Event
        # at the end (its reason is the verdict) is the one worth a write per task.
        log.info("task %s/%s started on agent %s (sandbox %s)", meta["namespace"], meta["name"], view.name,
                 status["sandboxID"])

    def _follow(self, uid: str, handle: Any) -> None:
        """Poll the run the moment the runner exits (the exit-code file is still the truth: after a
        restart there is no handle, and the rounds' polls find the result all the same)."""
        self.live.add(uid)

        async def wait() -> None:
            try:
                ended = runner.exit_line((await handle.wait()).stdout)
            except Exception:  # a lost stream, or a runner that did not get to its end: the poll tells
                ended = None
            self.live.discard(uid)
            task = self.book.tasks.get(uid)
            if task and uid not in self.scheduler.busy and task["status"].get("phase") == "Running":
                self.scheduler.spawn(uid, self.poll(task, ended))  # now, not at the next round
        watcher = asyncio.get_running_loop().create_task(wait())
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    # ---- following ----------------------------------------------------------------------------
    def needs_poll(self, uid: str, now: float, full_poll: bool, deadline_check: bool) -> bool:
        """Runs we watch live tell us when they end: no need to ask before the full poll, unless it
        is time to signal them."""
        if full_poll or uid not in self.live:
            return True
        return deadline_check and decide.deadline_signal(now, self.deadline(self.book.tasks[uid]),
                                                         self._terminated.get(uid)) is not None

    async def poll(self, task: Task, ended: re.Match | None = None) -> None:
        """Look at a run; `ended` is its exit line when the run's stream already said it."""
        status = task["status"]
        spec = self.book.spec(task)
        view = self.fleet.find(task["metadata"]["namespace"], status.get("agent", ""))
        if view is None or view.deleting:
            await self.finish(task, decide.Verdict(False, "AgentGone", "the agent running this task was deleted"),
                              None, "", "")
            return
        if view.paused:
            log.debug("task %s waits: agent %s is paused", task["metadata"]["name"], view.name)
            return  # its sandbox is frozen with the run inside; it goes on when the agent is resumed
        uid = task["metadata"]["uid"]
        try:
            sandbox = await self.inputs.address(view.namespace, view.spec, status["sandboxID"])
            # No file yet, or the runner is between creating and writing it: "not yet".
            ended = ended or runner.exit_line(
                await self.gateway.read_file(sandbox, runner.run_file(status, "exit_code")) or "")
            if ended is None:
                started = epoch(status.get("startTime")) or time.time()
                if time.time() > started + NOT_STARTED_SECONDS and \
                        await self.gateway.read_file(sandbox, runner.run_file(status, "pid")) is None:
                    await self.launch(task, view)  # claimed, then the operator died before starting it
                elif signal := decide.deadline_signal(time.time(), self.deadline(task), self._terminated.get(uid)):
                    await self._signal(task, sandbox, signal)
                    if signal == "TERM":  # the runner reports how it ended; SIGKILL after the grace
                        self._terminated[uid] = time.time()
                    else:
                        await self.finish(task, decide.judge(decide.SIGKILL_EXIT_CODE, spec.timeout_seconds,
                                                             overdue=True), None, "", "")
                return
            self.scheduler.finishing.add(uid)  # the run has ended: its slot takes the next task meanwhile
            self.scheduler.request_dispatch()
            stdout, stderr = await asyncio.gather(
                self.gateway.read_file(sandbox, runner.run_file(status, "stdout")),
                self.gateway.read_file(sandbox, runner.run_file(status, "stderr")) if ended[2] else _no_file())
            code = int(ended[1])
            verdict = decide.judge(code, spec.timeout_seconds, overdue=time.time() >= self.deadline(task))
            await self.finish(task, verdict, code, stdout or "", stderr or "")
        except SandboxGone:
            await self.finish(task, decide.Verdict(False, "SandboxLost", "the agent's sandbox was lost mid-run"),
                              None, "", "")
        except (E2BError, SecretMissing) as error:
            log.info("polling task %s: %s", task["metadata"]["name"], error)
        finally:
            self.scheduler.finishing.discard(uid)

    def deadline(self, task: Mapping[str, Any]) -> float:
        """When the task's run is overdue: its timeout after its startTime, plus the second that
        startTime's whole-second precision may have cut off (a run is never stopped early)."""
        return (epoch(task["status"].get("startTime")) or time.time()) + 1 + self.book.spec(task).timeout_seconds

    async def stop(self, task: Mapping[str, Any]) -> None:
        """Kill a run whose task is gone (its agent may be too: then there is nothing to stop)."""
        status = task.get("status") or {}
        await self.fleet.listed.wait()  # an agent not seen yet is not a gone one: its run must still stop
        view = self.fleet.find(task["metadata"].get("namespace", ""), status.get("agent", ""))
        if not status.get("runId") or not status.get("sandboxID") or view is None or view.spec is None:
            return
        try:
            await self._signal(task, await self.inputs.address(view.namespace, view.spec, status["sandboxID"]),
                               "KILL")
        except SecretMissing as error:
            log.info("could not kill run of task %s: %s", task["metadata"].get("name"), error)

    async def _signal(self, task: Mapping[str, Any], sandbox: SandboxAddress, signal: str) -> None:
        try:
            await self.gateway.run(sandbox, runner.signal_command(task["status"], signal), envs={}, cwd=None,
                                   timeout_seconds=30)
        except E2BError as error:
            log.info("could not signal run of task %s: %s", task["metadata"].get("name"), error)

    # ---- the end ------------------------------------------------------------------------------
    async def _redactor(self, task: Task) -> Redactor | None:
        """The secret values of the task's run: those of its launch, or after an operator restart
        the agent's read again; None when they cannot be read (its output is then withheld)."""
        meta, status = task["metadata"], task["status"]
        redact = self._redactors.pop(meta["uid"], None)
        if redact is not None:
            return redact
        view = self.fleet.find(meta["namespace"], status.get("agent", ""))
        if view is None or view.spec is None:
            return None
        redact = Redactor()
        try:
            await self.inputs.resolve(meta["namespace"], view.spec, redact)
        except SecretMissing as error:
            log.warning("output of task %s/%s withheld: %s", meta["namespace"], meta["name"], error)
            return None
        return redact

    async def finish(self, task: Task, verdict: decide.Verdict, exit_code: int | None, stdout: str,
                     stderr: str) -> None:
        meta, status = task["metadata"], task["status"]
        self._terminated.pop(meta["uid"], None)
        self._end_span(meta["uid"], verdict.reason, verdict.succeeded)
        if stdout or stderr:
            redact = await self._redactor(task)
            # Whole texts first, then cut to size: a cut never leaves part of a value behind.
            stdout, stderr = (redact(stdout), redact(stderr)) if redact else (OUTPUT_WITHHELD, "")
        else:
            self._redactors.pop(meta["uid"], None)
        output_name = f"{meta['name']}-output"[:253]
        started = epoch(status.get("startTime")) or time.time()
        duration = max(0.0, time.time() - started)
        await asyncio.gather(
            self.kube.apply_configmap(meta["namespace"], output_name, {
                "stdout": decide.truncate(stdout, decide.OUTPUT_CONFIGMAP_LIMIT),
                "stderr": decide.truncate(stderr, decide.STDERR_CONFIGMAP_LIMIT)},
                owner={"apiVersion": API_VERSION, "kind": "AgentTask", "name": meta["name"], "uid": meta["uid"]}),
            self.book.write(task, Outcome(True, verdict.reason, verdict.message, stalled=not verdict.succeeded),
                            phase="Succeeded" if verdict.succeeded else "Failed", completionTime=now_rfc3339(),
                            duration=decide.format_duration(duration), exitCode=exit_code,
                            output=decide.truncate(stdout, decide.OUTPUT_STATUS_LIMIT), outputConfigMap=output_name,
                            finished=verdict.succeeded))
        log.info("task %s/%s finished: %s (%s)", meta["namespace"], meta["name"], verdict.reason, verdict.message)
        metrics.TASKS.labels("succeeded" if verdict.succeeded else "failed").inc()
        metrics.TASK_DURATION.observe(duration)
        self.emit(task, "Normal" if verdict.succeeded else "Warning", verdict.reason, verdict.message)
        if status.get("agent"):
            self.activity.note(meta["namespace"], status["agent"])
