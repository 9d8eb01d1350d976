"""AgentTasks: dispatch to an agent, run detached in its sandbox, collect the result from files.

The run survives operator restarts: the query runs under a small runner script that records its
exit code in the sandbox, and everything the controller needs to find it again (agent, sandbox,
run id) is in the task's status. One loop handles every task: it dispatches pending ones, polls
running ones, deletes finished ones after their TTL and pauses agents that sat idle too long.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import re
import shlex
import time
from collections import Counter
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any

from remote_agents.api.models import API_VERSION, AgentTaskSpec
from remote_agents.controller import decisions, github_publish, metrics
from remote_agents.controller import task_decisions as td
from remote_agents.controller.agent_reconciler import PLURAL as AGENT_PLURAL
from remote_agents.controller.agent_reconciler import AgentReconciler, EventSink, Redactor
from remote_agents.controller.conditions import Outcome, epoch, now_rfc3339, rfc3339, status_update
from remote_agents.controller.e2b_gateway import E2BError, SandboxGateway, SandboxGone
from remote_agents.controller.fleet import Fleet
from remote_agents.controller.kube import Kube, SecretMissing
from remote_agents.controller.task_index import Target, TaskIndex

log = logging.getLogger(__name__)
PLURAL = "agenttasks"
RUNS_DIR = "/home/user/.remote-agents/tasks"
NOT_STARTED_SECONDS = 15
PUBLISH_RETRY_SECONDS = 30
FULL_POLL_SECONDS = 5  # every run is checked at least this often, watched live or not
DEADLINE_CHECK_SECONDS = 1  # how often runs are compared with their deadlines (in memory)
HOUSEKEEPING_SECONDS = 2  # TTL collection, publishing, idle pausing and activity mirroring need no faster pace
ACTIVITY_RESOLUTION_SECONDS = 30  # an agent's status.lastActivityTime may lag its real activity by this much
# "Why it waits" notes in flight at once: a burst of waiting tasks must not queue the claims and
# results (the work itself) behind a thousand notes on the API connections.
PENDING_NOTES_IN_FLIGHT = 4

# The runner is the start call's command itself (no file to write first), started detached. Its
# files are $RUN_FILES.<name>, next to every other run's (one directory: no mkdir per run). The
# lock (created with noclobber, O_EXCL) makes a repeated start (after a crash) a no-op. The command
# runs in a subshell (a fork, not a new bash) that job control (`set -m`, off again once it is
# started) puts in a process group of its own, whose id goes into the pid file: signalling that
# group reaches the command and all it started. The deadline is the operator's (see
# td.deadline_signal), so no `timeout` process either. The exit line ("CODE", or "CODE stderr"
# when the command wrote to stderr, so that a quiet run costs no read) goes to a file, read as
# "not yet" until the line is complete, and to the runner's stdout, where an operator that holds
# the run's stream reads it without asking. The query reaches the command as $AGENT_QUERY and on stdin. Builtins wherever
# possible: every process started here is CPU in the sandbox, once per task.
RUNNER = """[ -d "${RUN_FILES%/*}" ] || mkdir -p "${RUN_FILES%/*}"
cd "$AGENT_WORKDIR" || { echo 97 > "$RUN_FILES.exit_code"; echo 97; exit 0; }
set -C; { : > "$RUN_FILES.lock"; } 2>/dev/null || exit 0; set +C
printf '%s' "$AGENT_QUERY" > "$RUN_FILES.query"
set -m
( eval "$AGENT_COMMAND" ) < "$RUN_FILES.query" > "$RUN_FILES.stdout" 2> "$RUN_FILES.stderr" &
set +m; echo $! > "$RUN_FILES.pid"
wait $!
code=$?
if [ -s "$RUN_FILES.stderr" ]; then line="$code stderr"; else line="$code"; fi
echo "$line" > "$RUN_FILES.exit_code"
echo "$line"
"""
EXIT_LINE = re.compile(r"(-?\d+)( stderr)?\n")


def _exit_line(text: str) -> re.Match | None:
    """The runner's exit line, if `text` ends with a complete one (the login shell may print more)."""
    last = text[text.rfind("\n", 0, -1) + 1:]
    return EXIT_LINE.fullmatch(last)


def _run_files(status: Mapping[str, Any]) -> str:
    """The path prefix of a run's files in its sandbox."""
    return f"{RUNS_DIR}/{status['runId']}"


def _run_file(status: Mapping[str, Any], name: str) -> str:
    return f"{_run_files(status)}.{name}"


async def _no_file() -> None:
    """read_file's answer for a file not worth asking for (the runner said the command wrote none)."""
    return None


def _revision(body: Mapping[str, Any]) -> int:
    version = str(body["metadata"].get("resourceVersion") or "0")
    return int(version) if version.isdigit() else 0


class TaskController:
    def __init__(self, kube: Kube, gateway: SandboxGateway, agents: AgentReconciler, fleet: Fleet,
                 emit: EventSink, interval_seconds: float = 1.0):
        self.kube = kube
        self.gateway = gateway
        self.agents = agents
        self.fleet = fleet
        self.emit = emit
        self.interval = interval_seconds
        self.tasks: dict[str, dict[str, Any]] = {}  # uid -> latest body (status updated as we write)
        self.index = TaskIndex()  # the waiting ones by target, the running ones
        self._wake = asyncio.Event()
        self._publish_after: dict[str, float] = {}  # task uid -> earliest next publish attempt
        self._watchers: set[asyncio.Task] = set()
        self._live: set[str] = set()  # uids of runs whose process stream we hold
        self._specs: dict[str, AgentTaskSpec] = {}
        self._next_full_poll = 0.0
        self._next_deadline_check = 0.0
        self._terminated: dict[str, float] = {}  # uid -> when its overdue run was sent SIGTERM
        self._next_housekeeping = 0.0
        self._activity: dict[tuple[str, str], float] = {}  # (namespace, agent) -> last task start or end
        self._mirrored: dict[tuple[str, str], tuple[int, float]] = {}  # what its status says: (running, activity)
        # Rounds never wait on the API or E2B: each task's next step runs in the background, one at
        # a time per task. Slots are counted from what is in flight, not only from written status.
        self._busy: dict[str, asyncio.Task] = {}  # task uid -> its operation in flight
        self._starting: dict[str, tuple[str, str]] = {}  # uid -> (namespace, agent): slot taken, claim being written
        self._finishing: set[str] = set()  # uids whose run has ended: slot free, result being written
        self._notes_in_flight = 0
        self._dispatch_due = True  # something changed that may let a waiting task start (or need a note)
        self._housekeeping: asyncio.Task | None = None

    # ---- events -------------------------------------------------------------------------------
    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        if event_type == "DELETED":
            gone = self.tasks.pop(uid, None)
            if gone:
                self.index.update(uid, self._target(gone), None)
            self._specs.pop(uid, None)
            self._terminated.pop(uid, None)
            if gone and (gone.get("status") or {}).get("phase") == "Running":
                asyncio.get_running_loop().create_task(self._kill_run(gone))
            return
        known = self.tasks.get(uid)
        # Our own writes are applied locally first; never let an older watch event roll them back
        # (resourceVersions are etcd revisions: numeric in every kube-apiserver).
        if known and _revision(known) > _revision(body):
            return
        fresh = {"apiVersion": API_VERSION, "kind": "AgentTask", "metadata": dict(body["metadata"]),
                 "spec": dict(body["spec"]), "status": dict(body.get("status") or {})}
        if known is None or known["status"].get("phase") != fresh["status"].get("phase"):
            self._dispatch_due = True  # not for the echoes of our own writes
        if known:
            known.update(fresh)  # in place: operations in flight hold this very dict
        else:
            self.tasks[uid] = fresh
        self.index.update(uid, self._target(fresh), self.tasks[uid])
        self._wake.set()

    def _spec(self, task: Mapping[str, Any]) -> AgentTaskSpec:
        """Parsed once per task: the spec is immutable (CEL), and rounds look at every pending task."""
        uid = task["metadata"]["uid"]
        if uid not in self._specs:
            self._specs[uid] = AgentTaskSpec.model_validate(task["spec"])
        return self._specs[uid]

    def _target(self, task: Mapping[str, Any]) -> Target:
        spec = self._spec(task)
        return (task["metadata"]["namespace"], "agent" if spec.agent_ref else "pool",
                (spec.agent_ref or spec.pool_ref).name)

    def agent_changed(self) -> None:
        self._dispatch_due = True
        self._wake.set()

    # ---- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                self._dispatch_due = True  # a quiet moment: look at everything once more
            self._wake.clear()
            try:
                await self.step()
            except Exception:  # keep supervising whatever one round hit; logged with its trace
                log.exception("task round failed")

    async def step(self) -> None:
        """One round: decide, and hand every action to the background (see _spawn)."""
        now = time.time()
        full_poll = now >= self._next_full_poll
        if full_poll:
            self._next_full_poll = now + FULL_POLL_SECONDS
        deadline_check = now >= self._next_deadline_check
        if deadline_check:
            self._next_deadline_check = now + DEADLINE_CHECK_SECONDS
        for uid in self.index.running:  # (spawning only schedules: nothing changes the set here)
            # Runs we watch live tell us when they end: no need to ask before the full poll,
            # unless it is time to signal them.
            if uid not in self._busy and (full_poll or uid not in self._live or (
                    deadline_check and td.deadline_signal(now, self._deadline(self.tasks[uid]),
                                                          self._terminated.get(uid)))):
                self._spawn(uid, self._poll(self.tasks[uid]))
        if self._dispatch_due:
            self._dispatch()
        if now >= self._next_housekeeping and (self._housekeeping is None or self._housekeeping.done()):
            self._next_housekeeping = now + HOUSEKEEPING_SECONDS
            self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep(now))

    def _spawn(self, uid: str, operation: Coroutine[Any, Any, None]) -> None:
        """Run a task's next step in the background; the loop looks again when it ends."""
        job = asyncio.get_running_loop().create_task(operation)
        self._busy[uid] = job

        def ended(job: asyncio.Task) -> None:
            if self._busy.get(uid) is job:
                del self._busy[uid]
            if not job.cancelled() and job.exception() is not None:
                log.error("task %s: step failed", uid, exc_info=job.exception())
            if (self.tasks.get(uid) or {}).get("status", {}).get("phase") != "Running":
                self._dispatch_due = True  # it still waits (a note, a failed start) or freed its slot
            self._wake.set()
        job.add_done_callback(ended)

    async def _housekeep(self, now: float) -> None:
        try:
            for task in [t for t in self.tasks.values() if t["status"].get("phase") in ("Succeeded", "Failed")]:
                await self._publish_if_asked(task, now)
                await self._collect_if_expired(task, now)
            load = self.running_counts()
            await self._mirror_activity(load)
            await self._pause_idle_agents(now, load)
        except Exception:  # the next round tries again; logged with its trace
            log.exception("task housekeeping failed")

    # ---- dispatch -----------------------------------------------------------------------------
    def running_counts(self) -> Counter:
        """Tasks running now, by (namespace, agent): claimed in status or being claimed, not yet ended."""
        counts = Counter((self.tasks[uid]["metadata"]["namespace"], self.tasks[uid]["status"].get("agent"))
                         for uid in self.index.running if uid not in self._finishing)
        counts.update(self._starting.values())
        return counts

    def _dispatch(self) -> None:
        """Start what can start now. Each call looks at the head of every queue: callers let the
        reasons to call gather (a round) rather than call once per freed slot."""
        self._dispatch_due = False
        load = self.running_counts()
        for target in self.index.targets():
            self._dispatch_queue(target, load)

    def _dispatch_queue(self, target: Target, load: Counter) -> None:
        """Give the target's tasks agents in FIFO order (slots are reserved in memory as we go)
        until none has a free slot, and start the runs in the background: starting one costs a
        few round trips, and tasks must not queue behind them. The rest wait; say why if needed."""
        namespace = target[0]
        pairs: list[tuple[td.Candidate, decisions.AgentView]] | None = None  # the target's agents, kept current
        waiting = self.index.waiting(target)
        for uid in waiting:
            if uid in self._busy:
                continue  # being claimed, or its note is being written
            task = self.tasks[uid]
            spec = self._spec(task)
            if pairs is None:
                pairs = self._candidates(namespace, spec, load)
            choice = td.choose_agent([c for c, _ in pairs], by_ref=spec.agent_ref is not None)
            if choice.agent is None:
                self._explain(target, itertools.chain((uid,), waiting), choice)
                return
            index, view = next((i, v) for i, (c, v) in enumerate(pairs) if c.name == choice.agent)
            if choice.wake:  # one task wakes the agent; the others wait for it
                self._spawn(uid, self._wake_agent(task, view))
                self._explain(target, waiting,
                              td.Dispatch(None, reason="WakingAgent", message=f"resuming idle agent {view.name}"))
                return
            if not view.sandbox_id:
                return  # Ready without a sandbox id: the agent's status is being written; next round
            load[(namespace, view.name)] += 1
            pairs[index] = (dataclasses.replace(pairs[index][0], running_tasks=load[(namespace, view.name)]), view)
            self._starting[uid] = (namespace, view.name)
            self._spawn(uid, self._start(task, spec, view))

    def _explain(self, target: Target, waiting: Iterable[str], why: td.Dispatch) -> None:
        """Notes for tasks that wait for `why`. In the ordinary queue only tasks that show another
        reason need one (see td.worth_a_note): found in the index, not by reading the queue."""
        for uid in self.index.explained(target) if why.reason == td.QUEUED else waiting:
            if self._notes_in_flight >= PENDING_NOTES_IN_FLIGHT:
                return  # the rest at later rounds
            if uid not in self._busy:
                self._note_pending(self.tasks[uid], why)

    def _note_pending(self, task: dict[str, Any], why: td.Dispatch) -> None:
        """Say in the task's status why it waits (if it is worth a write)."""
        status = task["status"]
        if status.get("phase") == "Pending" and status.get("message") == why.message:
            return  # said already (the cheap test first)
        if not td.worth_a_note(why.reason, has_conditions=bool(status.get("conditions"))):
            return
        desired = self._status_patch(task, Outcome(False, why.reason, why.message, reconciling=True), phase="Pending")
        if desired is None:
            return

        async def note() -> None:
            try:
                await self._apply(task, desired)
            finally:
                self._notes_in_flight -= 1
        self._notes_in_flight += 1  # now, not when the note starts: the round goes on counting
        self._spawn(task["metadata"]["uid"], note())

    async def _wake_agent(self, task: dict[str, Any], view: decisions.AgentView) -> None:
        namespace = task["metadata"]["namespace"]
        await self.kube.patch_status(AGENT_PLURAL, namespace, view.name,
                                     {"idlePaused": False, "lastActivityTime": now_rfc3339()})
        await self.kube.request_reconcile(AGENT_PLURAL, namespace, view.name)
        self.emit(task, "Normal", "WakingAgent", f"resuming idle agent {view.name} for this task")
        await self._write(task, Outcome(False, "WakingAgent", f"resuming idle agent {view.name}", reconciling=True),
                          phase="Pending")

    def _candidates(self, namespace: str, spec: AgentTaskSpec,
                    load: Counter) -> list[tuple[td.Candidate, decisions.AgentView]]:
        if spec.agent_ref:
            view = self.fleet.find(namespace, spec.agent_ref.name)
            views = [view] if view and not view.deleting else []
        else:
            views = self.fleet.members(namespace, spec.pool_ref.name)
        return [(td.Candidate(
            name=v.name, ready=v.ready, user_paused=bool(v.spec and v.spec.paused), idle_paused=v.idle_paused,
            running_tasks=load.get((namespace, v.name), 0),
            max_concurrent_tasks=v.spec.max_concurrent_tasks if v.spec else 1,
            has_query_command=bool(v.spec and v.spec.query.command)), v) for v in views]

    async def _start(self, task: dict[str, Any], spec: AgentTaskSpec, view: decisions.AgentView) -> None:
        meta = task["metadata"]
        # Claim first (status says Running on this agent): after a crash, the run is found, not repeated.
        try:
            await self._write(task, Outcome(False, "Running", f"running on {view.name}", reconciling=True),
                              phase="Running", agent=view.name, startTime=now_rfc3339(), runId=meta["uid"],
                              sandboxID=view.sandbox_id)
        finally:
            self._starting.pop(meta["uid"], None)
        self._note_activity(meta["namespace"], view.name)
        await self._launch(task, spec, view)

    async def _launch(self, task: dict[str, Any], spec: AgentTaskSpec, view: decisions.AgentView) -> None:
        """Start the runner in the sandbox; safe to repeat (the runner's lock)."""
        meta, status = task["metadata"], task["status"]
        redact = Redactor()
        try:
            inputs = await self.agents.resolve_inputs(meta["namespace"], view.spec, redact)
            handle = await self.gateway.start_background(
                status["sandboxID"], RUNNER, api_key=inputs.api_key,
                envs={**inputs.env, "AGENT_QUERY": spec.query, "RUN_FILES": _run_files(status),
                      "AGENT_WORKDIR": view.workdir, "AGENT_COMMAND": view.spec.query.command})
        except SandboxGone:
            await self._finish(task, td.Verdict(False, "SandboxLost", "the agent's sandbox is gone"), None, "", "")
            return
        except (E2BError, SecretMissing) as error:
            # Not started: give the slot back and try again next round.
            log.warning("task %s/%s could not start on %s: %s", meta["namespace"], meta["name"], view.name,
                        redact(str(error)))
            await self._write(task, Outcome(False, "StartFailed", redact(str(error)), reconciling=True),
                              phase="Pending", agent=None, startTime=None, runId=None, sandboxID=None)
            self._note_activity(meta["namespace"], view.name)
            return
        self._watch(meta["uid"], handle)
        # A log line, not an Event: status (phase Running, agent, startTime) says it, and the Event
        # at the end (its reason is the verdict) is the one worth a write per task.
        log.info("task %s/%s started on agent %s (sandbox %s)", meta["namespace"], meta["name"], view.name,
                 status["sandboxID"])

    # ---- running ------------------------------------------------------------------------------
    def _watch(self, uid: str, handle: Any) -> None:
        """Poll the run the moment the runner exits (the exit-code file is still the truth: after a
        restart there is no handle, and the rounds' polls find the result all the same)."""
        self._live.add(uid)

        async def wait() -> None:
            try:
                ended = _exit_line((await handle.wait()).stdout)
            except Exception:  # a lost stream, or a runner that did not get to its end: the poll tells
                ended = None
            self._live.discard(uid)
            task = self.tasks.get(uid)
            if task and uid not in self._busy and task["status"].get("phase") == "Running":
                self._spawn(uid, self._poll(task, ended))  # now, not at the next round
        watcher = asyncio.get_running_loop().create_task(wait())
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _poll(self, task: dict[str, Any], ended: re.Match | None = None) -> None:
        """Look at a run; `ended` is its exit line when the run's stream already said it."""
        status = task["status"]
        spec = self._spec(task)
        view = self.fleet.find(task["metadata"]["namespace"], status.get("agent", ""))
        if view is None or view.deleting:
            await self._finish(task, td.Verdict(False, "AgentGone", "the agent running this task was deleted"),
                               None, "", "")
            return
        if view.paused:
            log.debug("task %s waits: agent %s is paused", task["metadata"]["name"], view.name)
            return  # its sandbox is frozen with the run inside; it goes on when the agent is resumed
        uid = task["metadata"]["uid"]
        try:
            # No file yet, or the runner is between creating and writing it: "not yet".
            ended = ended or _exit_line(await self.gateway.read_file(status["sandboxID"],
                                                                     _run_file(status, "exit_code")) or "")
            if ended is None:
                started = epoch(status.get("startTime")) or time.time()
                if time.time() > started + NOT_STARTED_SECONDS and \
                        await self.gateway.read_file(status["sandboxID"], _run_file(status, "pid")) is None:
                    await self._launch(task, spec, view)  # claimed, then the operator died before starting it
                elif signal := td.deadline_signal(time.time(), self._deadline(task), self._terminated.get(uid)):
                    await self._kill_run(task, signal)
                    if signal == "TERM":  # the runner reports how it ended; SIGKILL after the grace
                        self._terminated[uid] = time.time()
                    else:
                        await self._finish(task, td.judge(td.SIGKILL_EXIT_CODE, spec.timeout_seconds,
                                                          overdue=True), None, "", "")
                return
            self._finishing.add(uid)  # the run has ended: its slot takes the next task meanwhile
            self._dispatch_due = True
            self._wake.set()
            stdout, stderr = await asyncio.gather(
                self.gateway.read_file(status["sandboxID"], _run_file(status, "stdout")),
                self.gateway.read_file(status["sandboxID"], _run_file(status, "stderr")) if ended[2] else _no_file())
            code = int(ended[1])
            verdict = td.judge(code, spec.timeout_seconds, overdue=time.time() >= self._deadline(task))
            await self._finish(task, verdict, code, stdout or "", stderr or "")
        except SandboxGone:
            await self._finish(task, td.Verdict(False, "SandboxLost", "the agent's sandbox was lost mid-run"),
                               None, "", "")
        except E2BError as error:
            log.info("polling task %s: %s", task["metadata"]["name"], error)
        finally:
            self._finishing.discard(uid)

    def _deadline(self, task: Mapping[str, Any]) -> float:
        """When the task's run is overdue: its timeout after its startTime, plus the second that
        startTime's whole-second precision may have cut off (a run is never stopped early)."""
        return (epoch(task["status"].get("startTime")) or time.time()) + 1 + self._spec(task).timeout_seconds

    async def _kill_run(self, task: Mapping[str, Any], signal: str = "KILL") -> None:
        status = task.get("status") or {}
        if not status.get("runId") or not status.get("sandboxID"):
            return
        pid_file = shlex.quote(_run_file(status, "pid"))
        try:
            # The run's process group: the command and everything it started.
            await self.gateway.run(status["sandboxID"], f"kill -{signal} -- -$(cat {pid_file}) 2>/dev/null; true",
                                   envs={}, cwd=None, timeout_seconds=30)
        except E2BError as error:
            log.info("could not kill run of task %s: %s", task["metadata"]["name"], error)

    async def _finish(self, task: dict[str, Any], verdict: td.Verdict, exit_code: int | None, stdout: str,
                      stderr: str) -> None:
        meta, status = task["metadata"], task["status"]
        self._terminated.pop(meta["uid"], None)
        output_name = f"{meta['name']}-output"[:253]
        started = epoch(status.get("startTime")) or time.time()
        duration = max(0.0, time.time() - started)
        await asyncio.gather(
            self.kube.apply_configmap(meta["namespace"], output_name, {
                "stdout": td.truncate(stdout, td.OUTPUT_CONFIGMAP_LIMIT), "stderr": td.truncate(stderr, 64 * 1024)},
                owner={"apiVersion": API_VERSION, "kind": "AgentTask", "name": meta["name"], "uid": meta["uid"]}),
            self._write(task, Outcome(True, verdict.reason, verdict.message, stalled=not verdict.succeeded),
                        phase="Succeeded" if verdict.succeeded else "Failed", completionTime=now_rfc3339(),
                        duration=td.format_duration(duration), exitCode=exit_code,
                        output=td.truncate(stdout, td.OUTPUT_STATUS_LIMIT), outputConfigMap=output_name,
                        finished=verdict.succeeded))
        log.info("task %s/%s finished: %s (%s)", meta["namespace"], meta["name"], verdict.reason, verdict.message)
        metrics.TASKS.labels("succeeded" if verdict.succeeded else "failed").inc()
        metrics.TASK_DURATION.observe(duration)
        self.emit(task, "Normal" if verdict.succeeded else "Warning", verdict.reason, verdict.message)
        if status.get("agent"):
            self._note_activity(meta["namespace"], status["agent"])

    def _note_activity(self, namespace: str, agent: str) -> None:
        """A task started or ended on the agent: its idle clock restarts now, in memory. The status
        follows at the next housekeeping round: two writes per task would double the API load of
        short tasks, and what reads the count in this process (scale-down, dispatch) asks us."""
        self._activity[(namespace, agent)] = time.time()

    async def _mirror_activity(self, load: Counter) -> None:
        """Bring agents' status.activeTasks / lastActivityTime up to date, writing only when the
        count changed or the activity moved on by more than the resolution."""
        for key, at in list(self._activity.items()):
            running = load.get(key, 0)
            written = self._mirrored.get(key)
            if written and written[0] == running and at - written[1] < ACTIVITY_RESOLUTION_SECONDS:
                continue
            if await self.kube.patch_status(AGENT_PLURAL, *key, {"activeTasks": running,
                                                                  "lastActivityTime": rfc3339(at)}) is None:
                self._activity.pop(key, None)  # the agent is gone
                self._mirrored.pop(key, None)
                continue
            self._mirrored[key] = (running, at)

    # ---- afterwards ---------------------------------------------------------------------------
    async def _publish_if_asked(self, task: dict[str, Any], now: float) -> None:
        """Post a succeeded task's output to GitHub once (spec.github); retry transient failures."""
        spec = self._spec(task)
        status, meta = task["status"], task["metadata"]
        if (not spec.github or status.get("phase") != "Succeeded" or status.get("githubUrl")
                or status.get("githubError") or now < self._publish_after.get(meta["uid"], 0)):
            return
        self._publish_after[meta["uid"]] = now + PUBLISH_RETRY_SECONDS
        ref = spec.github.credentials_secret_ref
        redact = Redactor()
        try:
            token = await self.kube.secret_value(meta["namespace"], ref.name, ref.key) or ""
            redact.add(token)
            output = await self.kube.configmap_value(meta["namespace"], status["outputConfigMap"], "stdout")
            url = await asyncio.to_thread(github_publish.publish, spec.github.target(meta["name"]), token,
                                          f"{meta['name']}: {td.truncate(spec.query, 200)}", output or "",
                                          spec.github.api_url)
        except (github_publish.PublishError, SecretMissing) as error:
            permanent = isinstance(error, SecretMissing) or not error.retryable
            self.emit(task, "Warning", "PublishFailed", redact(str(error)))
            if permanent:
                await self.kube.patch_status(PLURAL, meta["namespace"], meta["name"], {"githubError": redact(str(error))})
                status["githubError"] = redact(str(error))
            return
        updated = await self.kube.patch_status(PLURAL, meta["namespace"], meta["name"], {"githubUrl": url})
        status["githubUrl"] = url
        if updated:
            meta["resourceVersion"] = updated["metadata"]["resourceVersion"]
        self.emit(task, "Normal", "Published", f"output published to {url}")

    async def _collect_if_expired(self, task: dict[str, Any], now: float) -> None:
        spec = self._spec(task)
        done = epoch(task["status"].get("completionTime"))
        if done is not None and td.expired(done, spec.ttl_seconds_after_finished, now):
            await self.kube.delete(PLURAL, task["metadata"]["namespace"], task["metadata"]["name"])

    async def _pause_idle_agents(self, now: float, load: Counter) -> None:
        for view in list(self.fleet.agents.values()):
            if view.deleting or not view.spec or not view.ready or view.paused:
                continue
            recorded = epoch(view.last_activity_time) or epoch(view.ready_since)
            idle_since = max(filter(None, (recorded, self._activity.get((view.namespace, view.name)))), default=None)
            if td.should_idle_pause(view.spec.idle_pause_seconds, load.get((view.namespace, view.name), 0),
                                    idle_since, view.idle_paused, now):
                await self.kube.patch_status(AGENT_PLURAL, view.namespace, view.name, {"idlePaused": True})
                await self.kube.request_reconcile(AGENT_PLURAL, view.namespace, view.name)

    # ---- status -------------------------------------------------------------------------------
    def _status_patch(self, task: Mapping[str, Any], outcome: Outcome, phase: str, finished: bool | None = None,
                      **fields: Any) -> dict[str, Any] | None:
        """The status patch for `outcome`, or None when it would change nothing."""
        # Job-like terminal conditions (Complete or Failed) for tools that know Jobs.
        terminal = () if finished is None else (("Complete" if finished else "Failed", True, outcome.reason),)
        return status_update(task["status"], outcome, task["metadata"].get("generation", 0), terminal, phase=phase,
                             message=outcome.message or None, **fields)

    async def _write(self, task: dict[str, Any], outcome: Outcome, phase: str, finished: bool | None = None,
                     **fields: Any) -> None:
        desired = self._status_patch(task, outcome, phase, finished, **fields)
        if desired is not None:
            await self._apply(task, desired)

    async def _apply(self, task: dict[str, Any], desired: dict[str, Any]) -> None:
        meta = task["metadata"]
        updated = await self.kube.patch_status(PLURAL, meta["namespace"], meta["name"], desired)
        # Merged into what the task holds now: a watch event may have refreshed it meanwhile.
        task["status"] = {k: v for k, v in {**task["status"], **desired}.items() if v is not None}
        if self.tasks.get(meta["uid"]) is task:  # (not deleted meanwhile)
            self.index.update(meta["uid"], self._target(task), task)
        if updated and _revision(updated) > _revision(task):
            task["metadata"]["resourceVersion"] = updated["metadata"]["resourceVersion"]
