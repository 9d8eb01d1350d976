"""A run's life in its agent's sandbox: start the runner, follow it (its stream, or polls of its
files), keep its deadline, and record the result.

The run survives operator restarts: everything needed to find it again (agent, sandbox, run id)
is in the task's status, and the runner records its exit code in the sandbox.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from remote_agents.api.names import AGENTS, API_VERSION
from remote_agents.api.timestamps import epoch, now_rfc3339, rfc3339
from remote_agents.controller import metrics, resident, tracing
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
from remote_agents.controller.tasks import decide, progress, retry, runner
from remote_agents.controller.tasks.book import Task, TaskBook
from remote_agents.controller.tasks.cancel import Cancellations
from remote_agents.controller.tasks.scheduler import Scheduler

log = logging.getLogger(__name__)
NOT_STARTED_SECONDS = 15  # a claimed run with no pid file after this long was never started
OUTPUT_WITHHELD = "[output withheld: the agent's Secrets could not be read to redact it]"


async def _no_file() -> None:
    """read_file's answer for a file not worth asking for (the runner said the command wrote none)."""
    return None


class Runs:
    def __init__(self, book: TaskBook, scheduler: Scheduler, kube: Kube, gateway: SandboxGateway,
                 inputs: AgentInputs, fleet: Fleet, activity: AgentActivity, emit: EventSink,
                 cancellations: Cancellations, progress_interval_seconds: float = 5.0):
        self.book = book
        self.cancellations = cancellations
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
        self.progress_interval_seconds = progress_interval_seconds
        self._progress_read: dict[str, float] = {}  # uid -> when its run's stderr was last read for progress
        self._spans: dict[str, trace.Span] = {}  # task uid -> its run's span, until the run ends

    def forget(self, uid: str) -> None:
        self._terminated.pop(uid, None)
        self._redactors.pop(uid, None)
        self._progress_read.pop(uid, None)
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
        command, extra = view.spec.query.command, {}
        if view.spec.server:  # resident: the run is the small client asking the agent's process
            command = resident.CLIENT_COMMAND
            port = resident.port_of(view.spec.server.port, view.uid)
            extra = resident.client_env(port, resident.relay_port_of(port, view.uid), meta["name"], spec.session)
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
                    envs={**inputs.env, **extra, **tracing.traceparent(span),
                          **runner.runner_env(status, spec.query, view.workdir, command)})
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
                stream = (await handle.wait()).stdout
                ended = runner.exit_line(stream)
            except Exception:  # a lost stream, or a runner that did not get to its end: the poll tells
                ended = None
            streamed = resident.streamed_answer(stream) if ended and ended[1] == "0" else None
            self.live.discard(uid)
            task = self.book.tasks.get(uid)
            if task and uid not in self.scheduler.busy and task["status"].get("phase") == "Running":
                self.scheduler.spawn(uid, self.poll(task, ended, streamed))  # now, not at the next round
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

    async def poll(self, task: Task, ended: re.Match | None = None, streamed: tuple[str, str] | None = None) -> None:
        """Look at a run; `ended` is its exit line when the run's stream already said it, and
        `streamed` its (stdout, stderr) when the stream carried them too (a resident agent's answer)."""
        status = task["status"]
        spec = self.book.spec(task)
        if task["metadata"].get("deletionTimestamp"):
            return  # being deleted: cancellation stops the run, and nothing is recorded any more
        view = self.fleet.find(task["metadata"]["namespace"], status.get("agent", ""))
        if view is None or view.deleting:
            if view is not None and not await self.cancellations.stop_run(task):
                return  # its sandbox may still run it (deletionPolicy Orphan, or not killed yet): next poll
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
                elif self.progress_due(task, time.time()):
                    await self._read_progress(task, sandbox)
                return
            self.scheduler.finishing.add(uid)  # the run has ended: its slot takes the next task meanwhile
            self.scheduler.request_dispatch()
            stdout, stderr = streamed or await asyncio.gather(
                self.gateway.read_file(sandbox, runner.run_file(status, "stdout")),
                self.gateway.read_file(sandbox, runner.run_file(status, "stderr")) if ended[2] else _no_file())
            code = int(ended[1])
            verdict = decide.judge(code, spec.timeout_seconds, overdue=time.time() >= self.deadline(task),
                                   resident=bool(view.spec and view.spec.server))
            await self.finish(task, verdict, code, stdout or "", stderr or "")
        except SandboxGone:
            await self.finish(task, decide.Verdict(False, "SandboxLost", "the agent's sandbox was lost mid-run"),
                              None, "", "")
        except (E2BError, SecretMissing) as error:
            log.info("polling task %s: %s", task["metadata"]["name"], error)
        finally:
            self.scheduler.finishing.discard(uid)

    def progress_due(self, task: Mapping[str, Any], now: float) -> bool:
        started = epoch(task["status"].get("startTime")) or now
        return progress.due(now, started, self._progress_read.get(task["metadata"]["uid"]),
                            self.progress_interval_seconds)

    async def show_progress(self, task: Task) -> None:
        """A step of its own for a run that needs no poll (one watched live): its progress only."""
        status = task["status"]
        view = self.fleet.find(task["metadata"]["namespace"], status.get("agent", ""))
        if view is None or view.deleting or view.paused:
            self._progress_read[task["metadata"]["uid"]] = time.time()
            return  # the poll judges a run whose agent is gone; a paused one writes nothing new
        try:
            await self._read_progress(task, await self.inputs.address(view.namespace, view.spec, status["sandboxID"]))
        except (E2BError, SecretMissing) as error:  # (a lost sandbox too: the next poll reports it)
            log.info("progress of task %s: %s", task["metadata"]["name"], error)

    async def _read_progress(self, task: Task, sandbox: SandboxAddress) -> None:
        """status.progress from the run's stderr so far (one file read); nothing shown when its
        Secrets cannot be read."""
        status = task["status"]
        self._progress_read[task["metadata"]["uid"]] = time.time()
        stderr = await self.gateway.read_file(sandbox, runner.run_file(status, "stderr"))
        redact = await self._redactor(task) if stderr else None
        if redact is not None and (update := progress.update(status.get("progress"), stderr, redact, now_rfc3339())):
            await self.book.apply(task, {"progress": update})

    def deadline(self, task: Mapping[str, Any]) -> float:
        """When the task's run is overdue: its timeout after its startTime, plus the second that
        startTime's whole-second precision may have cut off (a run is never stopped early)."""
        return (epoch(task["status"].get("startTime")) or time.time()) + 1 + self.book.spec(task).timeout_seconds

    async def _signal(self, task: Mapping[str, Any], sandbox: SandboxAddress, signal: str) -> None:
        try:
            await self.gateway.run(sandbox, runner.signal_command(task["status"], signal), envs={}, cwd=None,
                                   timeout_seconds=30)
        except E2BError as error:
            log.info("could not signal run of task %s: %s", task["metadata"].get("name"), error)

    # ---- the end ------------------------------------------------------------------------------
    async def _redactor(self, task: Task) -> Redactor | None:
        """The secret values of the task's run: those of its launch, or after an operator restart
        the agent's read again (kept for the rest of the run); None when they cannot be read (its
        output is then withheld)."""
        meta, status = task["metadata"], task["status"]
        redact = self._redactors.get(meta["uid"])
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
        self._redactors[meta["uid"]] = redact
        return redact

    async def finish(self, task: Task, verdict: decide.Verdict, exit_code: int | None, stdout: str,
                     stderr: str) -> None:
        meta, status = task["metadata"], task["status"]
        self._terminated.pop(meta["uid"], None)
        self._end_span(meta["uid"], verdict.reason, verdict.succeeded)
        self._progress_read.pop(meta["uid"], None)
        spec = self.book.spec(task)
        started = epoch(status.get("startTime")) or time.time()
        duration = max(0.0, time.time() - started)
        usage = self._account(task, duration)
        attempts = status.get("attempts") or 1
        if retry.should_retry(verdict.reason, attempts, spec.retries):
            agent = status.get("agent")
            await self._retry(task, verdict, attempts, usage)
            if agent:
                await self._check_server(meta["namespace"], agent, exit_code)
            return
        final_progress = None
        if stdout or stderr:
            redact = await self._redactor(task)
            final_progress = progress.update(status.get("progress"), stderr, redact, now_rfc3339()) if redact else None
            # Whole texts first, then cut to size: a cut never leaves part of a value behind.
            stdout, stderr = (redact(stdout), redact(stderr)) if redact else (OUTPUT_WITHHELD, "")
        self._redactors.pop(meta["uid"], None)
        output_name = f"{meta['name']}-output"[:253]
        await asyncio.gather(
            self.kube.apply_configmap(meta["namespace"], output_name, {
                "stdout": decide.truncate(stdout, decide.OUTPUT_CONFIGMAP_LIMIT),
                "stderr": decide.truncate(stderr, decide.STDERR_CONFIGMAP_LIMIT)},
                owner={"apiVersion": API_VERSION, "kind": "AgentTask", "name": meta["name"], "uid": meta["uid"]}),
            self.book.write(task, Outcome(True, verdict.reason, verdict.message, stalled=not verdict.succeeded),
                            phase="Succeeded" if verdict.succeeded else "Failed", completionTime=now_rfc3339(),
                            duration=decide.format_duration(duration), exitCode=exit_code,
                            output=decide.truncate(stdout, decide.OUTPUT_STATUS_LIMIT), outputConfigMap=output_name,
                            finished=verdict.succeeded, **usage,
                            **({"progress": final_progress} if final_progress else {})))
        log.info("task %s/%s finished: %s (%s)", meta["namespace"], meta["name"], verdict.reason, verdict.message)
        metrics.TASKS.labels("succeeded" if verdict.succeeded else "failed").inc()
        metrics.TASK_DURATION.observe(duration)
        self.emit(task, "Normal" if verdict.succeeded else "Warning", verdict.reason, verdict.message)
        if status.get("agent"):
            self.activity.note(meta["namespace"], status["agent"])
            await self._check_server(meta["namespace"], status["agent"], exit_code)

    async def _check_server(self, namespace: str, agent: str, exit_code: int | None) -> None:
        """A resident agent's reconcile looks at its process after a run that found none, and
        upgrades one left on older code once its tasks are done."""
        view = self.fleet.find(namespace, agent)
        if view and view.spec and view.spec.server and (exit_code in (resident.UNREACHABLE_EXIT, resident.SERVER_LOST_EXIT) or view.server_outdated):
            await self.kube.request_reconcile(AGENTS, namespace, agent)

    def _account(self, task: Task, duration: float) -> dict[str, float]:
        """Count this run's agent-seconds in the metrics, and return the task's ledger after it: its
        run time, and the agent-seconds it used (a slot of an agent that runs maxConcurrentTasks at
        once is that share of the agent)."""
        meta, status = task["metadata"], task["status"]
        view = self.fleet.find(meta["namespace"], status.get("agent") or "")
        share = duration / (view.spec.max_concurrent_tasks if view and view.spec else 1)
        spec = self.book.spec(task)
        metrics.TASK_AGENT_SECONDS.labels(meta["namespace"], (view.pool if view else None)
                                          or (spec.pool_ref.name if spec.pool_ref else "")).inc(share)
        return {"runSeconds": round((status.get("runSeconds") or 0) + duration, 3),
                "agentSeconds": round((status.get("agentSeconds") or 0) + share, 3)}

    async def _retry(self, task: Task, verdict: decide.Verdict, attempts: int, usage: dict[str, float]) -> None:
        """The run failed for a reason not its own and is known dead: queue a new attempt after the backoff."""
        meta, status = task["metadata"], task["status"]
        delay = retry.backoff_seconds(attempts)
        message = f"{verdict.message}; attempt {attempts + 1} of {self.book.spec(task).retries + 1} in {delay:g}s"
        agent = status.get("agent")
        await self.book.write(task, Outcome(False, "Retrying", message, reconciling=True), phase="Pending",
                              agent=None, startTime=None, runId=None, sandboxID=None,
                              nextAttemptTime=rfc3339(math.ceil(time.time() + delay)), **usage)
        log.info("task %s/%s: %s", meta["namespace"], meta["name"], message)
        self.emit(task, "Warning", "Retrying", message)
        asyncio.get_running_loop().call_later(delay + 1, self.scheduler.request_dispatch)
        if agent:
            self.activity.note(meta["namespace"], agent)
