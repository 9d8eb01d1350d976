"""An in-memory E2B behind the methods of the operator's `SandboxGateway` (controller/clients/e2b.py).

Sandboxes live in accounts (an address with another account's key finds nothing: SandboxGone);
a list shows the running and paused ones whose metadata includes the query's; a create with an
idempotency key already used in that account returns that key's sandbox while it exists (as E2B
and e2b-local do); kill answers whether there was something to kill; resuming (connecting)
extends the timeout, set_timeout sets it. Every call is recorded in `calls`, and `faults` fails
chosen calls before or after they take effect (tests/support/faults.py).

Inside a sandbox there is no shell, but a small scripted model of what the operator runs there:
- `files`, a dict of path -> text (read_file gives None for a missing path);
- the checkout script (sources/git.py), recognised by its `git checkout --detach REV` line: it
  records REV in `<home>/.git/HEAD`, which also makes `<home>` (and below) the only directories;
- the task runner (tasks/runner.py), recognised by its environment (RUN_FILES, AGENT_COMMAND...),
  modelled by what it does: the lock that makes a repeated start a no-op, the query, pid, stdout,
  stderr and exit_code files, the exit line on its stream, exit 97 when the workdir is missing.
  The command it runs is looked up in `programs` (unknown: exit 127) and runs as a `Process`
  that a test can end, or that signals end (SIGTERM unless the program ignores it; SIGKILL);
- the signal command of tasks/runner.py (`kill -SIG -- -$(cat PIDFILE)`), delivered to the process;
- its cancel command: takes the lock of a run not started yet, else SIGTERM to the process and
  SIGKILL when it ignores that (the grace is not modelled), then prints "stopped";
- the orphan sweep's listing (tasks/orphan_runs.py): the runs with a lock and no exit_code file;
- any other command is answered from `scripts` (a substring of the command -> its outcome,
  the latest registration first), else exit 127.
An in-sandbox call (files, commands) on a paused sandbox resumes it, as the gateway's connect does
(a handle it still holds from before the pause is not modelled). Timeouts do not expire by
themselves; no rate limits, no retries (the gateway's own concern).

Template builds (`FakeTemplateBuilds`, behind clients/e2b_templates.py's TemplateBuilds, at
`gateway.templates`): a name keeps one template id; each build starts "building" and ends when
the test says (`finish`, `fail`), or at its first look when its recipe runs a command listed in
`failing`. The files a build copies are read from its context when it starts; a sandbox created
from a template id starts with the files of its latest ready build, at their destinations. A
template belongs to the account of its builds: a delete with another key finds nothing; a deleted
one is in `deleted` and its name gets a new id at its next build.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from remote_agents.api.names import SANDBOX_UID_KEY
from remote_agents.controller.clients.e2b import SandboxGone
from remote_agents.controller.clients.e2b_templates import BuildRef
from remote_agents.controller.sandboxes import CommandOutcome, E2BAccount, ObservedSandbox, SandboxAddress
from remote_agents.controller.tasks.orphan_runs import UNFINISHED_RUNS
from remote_agents.controller.tasks.runner import RUNS_DIR
from remote_agents.controller.templates.decide import BuildProgress, CopyFiles, Recipe, RunCommand
from tests.support.faults import Faults

HEAD_FILE = ".git/HEAD"
SIGNAL_EXIT_CODES = {"TERM": 128 + 15, "KILL": 128 + 9}
_CHECKOUT = re.compile(r"^git checkout -q --force --detach (\S+)$", re.MULTILINE)
_CHECKOUT_HOME = re.compile(r"^mkdir -p (\S+) && cd ", re.MULTILINE)
_SIGNAL = re.compile(r"^kill -([A-Z]+) -- -\$\(cat (.+?)\) 2>/dev/null; true$")
_CANCEL = re.compile(r"^f=(\S+)\n.*\nset -C; if ")


@dataclass(frozen=True)
class Program:
    """What a query command does: ends at once with this outcome, or, `held`, runs until the
    test ends it (Process.end) or a signal does."""

    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    held: bool = False
    ignores_term: bool = False


@dataclass
class Process:
    """A run's command (started by the runner), its process group's id in the pid file."""

    sandbox: FakeSandbox = field(repr=False)
    pid: int
    run_files: str
    command: str
    query: str
    envs: dict[str, str]
    program: Program
    signals: list[tuple[str, float]] = field(default_factory=list)  # (signal, time.time() when received)
    exit_code: int | None = None
    lost: bool = False  # its sandbox went away while it ran
    _ended: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    @property
    def running(self) -> bool:
        return not self._ended.is_set()

    def end(self, exit_code: int | None = None, stdout: str | None = None, stderr: str | None = None) -> None:
        """The command exits (by default as its program says); the runner writes its files and exit line."""
        if not self.running:
            return
        self.exit_code = self.program.exit_code if exit_code is None else exit_code
        out = self.program.stdout if stdout is None else stdout
        err = self.program.stderr if stderr is None else stderr
        files = self.sandbox.files
        files[f"{self.run_files}.stdout"] = out
        files[f"{self.run_files}.stderr"] = err
        files[f"{self.run_files}.exit_code"] = self.exit_line
        self._ended.set()

    @property
    def exit_line(self) -> str:
        err = self.sandbox.files.get(f"{self.run_files}.stderr")
        return f"{self.exit_code} stderr\n" if err else f"{self.exit_code}\n"

    def signal(self, name: str) -> None:
        self.signals.append((name, time.time()))
        if name == "KILL" or (name == "TERM" and not self.program.ignores_term):
            self.end(SIGNAL_EXIT_CODES[name])

    def lose(self) -> None:
        self.lost = True
        self._ended.set()

    async def wait(self) -> CommandOutcome:
        """The runner's stream ending: its stdout is the exit line."""
        await self._ended.wait()
        if self.lost:
            raise ConnectionError("the sandbox's stream was lost")
        return CommandOutcome(0, self.exit_line, "")


@dataclass
class _Finished:
    """The handle of a runner that ended at once (its lock was taken, or its workdir is missing)."""

    stdout: str
    pid: int = 0

    async def wait(self) -> CommandOutcome:
        return CommandOutcome(0, self.stdout, "")


@dataclass
class RanCommand:
    command: str
    envs: dict[str, str]
    cwd: str | None


@dataclass
class FakeSandbox:
    sandbox_id: str
    api_key: str | None  # its account's
    template: str
    metadata: dict[str, str]
    state: str  # running | paused
    started_at: float
    end_at: float
    files: dict[str, str] = field(default_factory=dict)
    commands: list[RanCommand] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)

    def head(self, home: str) -> str | None:
        """The revision checked out at `home`, if any."""
        return (self.files.get(f"{home}/{HEAD_FILE}") or "").strip() or None

    def is_dir(self, path: str) -> bool:
        return any(path == home or path.startswith(home + "/")
                   for home in (p.removesuffix("/" + HEAD_FILE) for p in self.files if p.endswith("/" + HEAD_FILE)))


@dataclass
class FakeBuild:
    template_id: str
    build_id: str
    name: str
    recipe: Recipe
    api_key: str | None
    files: dict[str, str]  # path in the template -> text
    state: str = "building"  # building | ready | error
    log: list[str] = field(default_factory=list)
    reason: str | None = None
    step: str | None = None


class FakeTemplateBuilds:
    def __init__(self) -> None:
        self.builds: list[FakeBuild] = []  # in start order
        self.failing: set[str] = set()  # a build running a command containing one of these fails
        self.faults = Faults()
        self.deleted: list[str] = []  # what delete calls removed, in order
        self._ids: dict[str, str] = {}  # name -> template id
        self._numbers = itertools.count(1)

    # ---- what tests use to set up and look -----------------------------------------------------
    def fail(self, operation: str, error: BaseException, **options: Any) -> None:
        """See Faults.add; `operation` is start, progress or delete."""
        self.faults.add(operation, error, **options)

    def latest(self) -> FakeBuild:
        return self.builds[-1]

    def finish(self, build_id: str | None = None) -> FakeBuild:
        build = self._build(build_id)
        build.state = "ready"
        build.log.append("build ready")
        return build

    def break_build(self, build_id: str | None = None, reason: str = "step failed", step: str = "1") -> FakeBuild:
        build = self._build(build_id)
        build.state, build.reason, build.step = "error", reason, step
        build.log.append(f"error: {reason}")
        return build

    def files_of(self, template_id: str) -> dict[str, str]:
        """The files sandboxes of `template_id` start with: its latest ready build's."""
        ready = [b for b in self.builds if b.template_id == template_id and b.state == "ready"]
        return dict(ready[-1].files) if ready else {}

    # ---- the TemplateBuilds interface ----------------------------------------------------------
    async def start(self, recipe: Recipe, name: str, context: Path, account: E2BAccount) -> BuildRef:
        self.faults.check("start", after=False, name=name)
        files: dict[str, str] = {}
        for instruction in recipe.instructions:
            if isinstance(instruction, CopyFiles):
                source = context / instruction.source
                found = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
                for path in found:
                    relative = path.name if path == source else path.relative_to(source).as_posix()
                    files[f"{instruction.destination.rstrip('/')}/{relative}"] = path.read_text()
        if name not in self._ids:
            self._ids[name] = f"tpl-{next(self._numbers)}"
        template_id = self._ids[name]
        build = FakeBuild(template_id, f"build-{len(self.builds) + 1}", name, recipe, account.api_key, files,
                          log=[f"building {name}"])
        self.builds.append(build)
        return BuildRef(template_id, build.build_id)

    async def progress(self, build: BuildRef, logs_offset: int, account: E2BAccount) -> BuildProgress:
        self.faults.check("progress", after=False, build_id=build.build_id)
        found = self._build(build.build_id)
        failing = [i for i, step in enumerate(found.recipe.instructions)
                   if isinstance(step, RunCommand) and any(text in step.command for text in self.failing)]
        if found.state == "building" and failing:
            self.break_build(found.build_id, f"command exited 1: {found.recipe.instructions[failing[0]].command}",
                             str(failing[0] + 1))
        return BuildProgress(found.state, found.log[logs_offset:], found.reason, found.step)

    async def delete(self, template_id: str, account: E2BAccount) -> bool:
        self.faults.check("delete", after=False, template_id=template_id)
        owned = any(b.template_id == template_id and b.api_key == account.api_key for b in self.builds)
        if not owned or template_id in self.deleted:
            return False
        self.deleted.append(template_id)
        self._ids = {name: kept for name, kept in self._ids.items() if kept != template_id}
        return True

    def _build(self, build_id: str | None) -> FakeBuild:
        return next(b for b in reversed(self.builds) if build_id in (None, b.build_id))


class FakeSandboxGateway:
    def __init__(self) -> None:
        self.templates = FakeTemplateBuilds()
        self.sandboxes: dict[str, FakeSandbox] = {}  # alive ones (running or paused)
        self.gone: dict[str, FakeSandbox] = {}  # killed or lost
        self.killed: list[str] = []  # what kill calls removed, in order
        self.programs: dict[str, Program] = {}  # query command -> what it does
        self.scripts: list[tuple[str, CommandOutcome]] = []
        self.processes: list[Process] = []  # every run's command, in start order
        self.unlisted: set[str] = set()  # sandboxes E2B's list does not show yet (it lags behind creates)
        self.calls: list[tuple[str, Any]] = []  # (operation, its main argument)
        self.faults = Faults()
        self._keys: dict[tuple[str | None, str], str] = {}  # (account key, idempotency key) -> sandbox id
        self._ids = itertools.count(1)
        self._pids = itertools.count(100)

    # ---- what tests use to set up and look -----------------------------------------------------
    def fail(self, operation: str, error: BaseException, **options: Any) -> None:
        """See Faults.add; `operation` is a gateway method name. `when` sees the call's details:
        address (per-sandbox calls), metadata (list, create), command (run, start_background), path (read_file)."""
        self.faults.add(operation, error, **options)

    def script(self, substring: str, exit_code: int = 0, stdout: str = "", stderr: str = "") -> None:
        """Commands containing `substring` end with this outcome (looked up before the modelled
        commands: a checkout can be made to fail)."""
        self.scripts.insert(0, (substring, CommandOutcome(exit_code, stdout, stderr)))

    def of(self, uid: str) -> list[FakeSandbox]:
        """The alive sandboxes tagged with an object's uid (any account)."""
        return [s for s in self.sandboxes.values() if s.metadata.get(SANDBOX_UID_KEY) == uid]

    def add(self, metadata: dict[str, str], *, state: str = "running", api_key: str | None = None,
            template: str = "base", timeout_seconds: int = 3600, started_at: float | None = None) -> FakeSandbox:
        """A sandbox that exists already (made by someone else, or by an operator before a crash)."""
        now = time.time()
        sandbox = FakeSandbox(f"sb-{next(self._ids)}", api_key, template, dict(metadata), state,
                              now if started_at is None else started_at, now + timeout_seconds)
        self.sandboxes[sandbox.sandbox_id] = sandbox
        return sandbox

    def lose(self, sandbox_id: str) -> None:
        """E2B loses the sandbox (expired, crashed host): gone without anyone killing it."""
        self._remove(sandbox_id)

    def count(self, operation: str) -> int:
        return sum(1 for name, _ in self.calls if name == operation)

    # ---- the SandboxGateway interface ----------------------------------------------------------
    async def list(self, metadata: dict[str, str], account: E2BAccount) -> list[ObservedSandbox]:
        self._enter("list", metadata, metadata=metadata)
        found = [ObservedSandbox(s.sandbox_id, s.state, dict(s.metadata), _utc(s.started_at), _utc(s.end_at))
                 for s in self.sandboxes.values()
                 if s.api_key == account.api_key and metadata.items() <= s.metadata.items()
                 and s.sandbox_id not in self.unlisted]
        self.faults.check("list", after=True, metadata=metadata)
        return found

    async def create(self, *, template: str, timeout_seconds: int, metadata: dict[str, str],
                     idempotency_key: str, account: E2BAccount) -> SandboxAddress:
        self._enter("create", idempotency_key, metadata=metadata)
        existing = self._keys.get((account.api_key, idempotency_key))
        if existing in self.sandboxes:
            sandbox = self.sandboxes[existing]
        else:
            sandbox = self.add(metadata, api_key=account.api_key, template=template, timeout_seconds=timeout_seconds)
            sandbox.files.update(self.templates.files_of(template))
            self._keys[(account.api_key, idempotency_key)] = sandbox.sandbox_id
        self.faults.check("create", after=True, metadata=metadata)
        return SandboxAddress(sandbox.sandbox_id, account)

    async def resume(self, address: SandboxAddress, timeout_seconds: int) -> None:
        self._enter("resume", address.sandbox_id, address=address)
        self._connect(self._find(address), timeout_seconds)
        self.faults.check("resume", after=True, address=address)

    async def pause(self, address: SandboxAddress) -> None:
        self._enter("pause", address.sandbox_id, address=address)
        self._find(address).state = "paused"
        self.faults.check("pause", after=True, address=address)

    async def kill(self, address: SandboxAddress) -> bool:
        self._enter("kill", address.sandbox_id, address=address)
        try:
            self._find(address)
        except SandboxGone:
            return False
        self._remove(address.sandbox_id)
        self.killed.append(address.sandbox_id)
        self.faults.check("kill", after=True, address=address)
        return True

    async def set_timeout(self, address: SandboxAddress, timeout_seconds: int) -> None:
        self._enter("set_timeout", (address.sandbox_id, timeout_seconds), address=address)
        self._find(address).end_at = time.time() + timeout_seconds
        self.faults.check("set_timeout", after=True, address=address)

    async def read_file(self, address: SandboxAddress, path: str) -> str | None:
        self._enter("read_file", path, address=address, path=path)
        sandbox = self._inside(address)
        self.faults.check("read_file", after=True, address=address, path=path)
        return sandbox.files.get(path)

    async def start_background(self, address: SandboxAddress, command: str, *, envs: dict[str, str]):
        self._enter("start_background", address.sandbox_id, address=address, command=command)
        sandbox = self._inside(address)
        if "RUN_FILES" not in envs or "AGENT_COMMAND" not in envs:
            raise NotImplementedError("the fake sandbox models the task runner as its only background command")
        handle = self._start_runner(sandbox, envs)
        self.faults.check("start_background", after=True, address=address, command=command)
        return handle

    async def attach(self, address: SandboxAddress, pid: int):
        raise NotImplementedError("the fake sandbox models no resident process (tests/e2e cover them)")

    async def wait_process(self, handle) -> int | None:
        raise NotImplementedError("the fake sandbox models no resident process (tests/e2e cover them)")

    async def run(self, address: SandboxAddress, command: str, *, envs: dict[str, str], cwd: str | None,
                  timeout_seconds: float) -> CommandOutcome:
        self._enter("run", command, address=address, command=command)
        sandbox = self._inside(address)
        sandbox.commands.append(RanCommand(command, dict(envs), cwd))
        outcome = self._execute(sandbox, command)
        self.faults.check("run", after=True, address=address, command=command)
        return outcome

    # ---- the model -----------------------------------------------------------------------------
    def _enter(self, operation: str, argument: Any, **details: Any) -> None:
        self.calls.append((operation, argument))
        self.faults.check(operation, after=False, **details)

    def _find(self, address: SandboxAddress) -> FakeSandbox:
        sandbox = self.sandboxes.get(address.sandbox_id)
        if sandbox is None or sandbox.api_key != address.account.api_key:
            raise SandboxGone(f"sandbox {address.sandbox_id} not found")
        return sandbox

    @staticmethod
    def _connect(sandbox: FakeSandbox, timeout_seconds: int) -> None:
        if sandbox.state == "paused":
            sandbox.state = "running"
            sandbox.end_at = time.time() + timeout_seconds
        else:  # connecting to a running sandbox only ever extends its timeout
            sandbox.end_at = max(sandbox.end_at, time.time() + timeout_seconds)

    def _inside(self, address: SandboxAddress) -> FakeSandbox:
        sandbox = self._find(address)
        if sandbox.state == "paused":
            self._connect(sandbox, 300)  # the SDK's default timeout for a connect
        return sandbox

    def _remove(self, sandbox_id: str) -> None:
        sandbox = self.sandboxes.pop(sandbox_id, None)
        if sandbox:
            self.gone[sandbox_id] = sandbox
            for process in sandbox.processes:
                if process.running:
                    process.lose()

    def _execute(self, sandbox: FakeSandbox, command: str) -> CommandOutcome:
        for substring, outcome in self.scripts:
            if substring in command:
                return outcome
        if checkout := _CHECKOUT.search(command):
            home = shlex.split(_CHECKOUT_HOME.search(command)[1])[0]
            sandbox.files[f"{home}/{HEAD_FILE}"] = checkout[1] + "\n"
            return CommandOutcome(0, "", "")
        if signal := _SIGNAL.match(command):
            pid_text = sandbox.files.get(shlex.split(signal[2])[0], "").strip()
            for process in sandbox.processes:
                if str(process.pid) == pid_text and process.running:
                    process.signal(signal[1])
            return CommandOutcome(0, "", "")
        if command == UNFINISHED_RUNS:
            runs = [path[len(RUNS_DIR) + 1:-len(".lock")] for path in sandbox.files
                    if path.startswith(f"{RUNS_DIR}/") and path.endswith(".lock")
                    and f"{path[:-len('.lock')]}.exit_code" not in sandbox.files]
            return CommandOutcome(0, "".join(f"{run}\n" for run in runs), "")
        if cancel := _CANCEL.match(command):
            prefix = shlex.split(cancel[1])[0]
            if f"{prefix}.lock" not in sandbox.files:
                sandbox.files[f"{prefix}.lock"] = ""
            for process in sandbox.processes:
                if process.run_files == prefix:
                    for name in ("TERM", "KILL"):
                        if process.running:
                            process.signal(name)
            return CommandOutcome(0, "stopped\n", "")
        return CommandOutcome(127, "", f"fake sandbox: no script for {command[:80]!r}")

    def _start_runner(self, sandbox: FakeSandbox, envs: dict[str, str]):
        files, prefix = sandbox.files, envs["RUN_FILES"]
        if not sandbox.is_dir(envs["AGENT_WORKDIR"]):
            files[f"{prefix}.exit_code"] = "97\n"
            return _Finished("97\n")
        if f"{prefix}.lock" in files:
            return _Finished("")  # started before: this start is a no-op
        files[f"{prefix}.lock"] = ""
        files[f"{prefix}.query"] = envs.get("AGENT_QUERY", "")
        files[f"{prefix}.stdout"] = files[f"{prefix}.stderr"] = ""
        pid = next(self._pids)
        files[f"{prefix}.pid"] = f"{pid}\n"
        command = envs["AGENT_COMMAND"]
        program = self.programs.get(command, Program(exit_code=127, stderr=f"{command}: command not found\n"))
        process = Process(sandbox, pid, prefix, command, files[f"{prefix}.query"], dict(envs), program)
        sandbox.processes.append(process)
        self.processes.append(process)
        if not program.held:
            process.end()
        return process


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)
