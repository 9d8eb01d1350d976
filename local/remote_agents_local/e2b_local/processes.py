"""The processes of one sandbox: spawning, output fan-out to RPC streams, signals, stdin.

A process outlives the RPC stream that started it (as in envd): streams only subscribe to
its events, so a client that disconnects from a background command leaves it running."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from protobuf import Oneof

from e2b.envd.process import process_pb
from remote_agents_local.e2b_local.isolation import BoundaryError, SandboxInit, sandbox_path

Event = process_pb.ProcessEvent
# After the process exits, how long its pipes may stay open (held by children it left
# behind) before the stream ends anyway.
DRAIN_SECONDS = 0.5
READ_CHUNK = 64 * 1024
KILL_REAP_SECONDS = 2
# What a stream gets when its sandbox is paused or killed under it: E2B's proxy drops the
# connection and then answers "not found", which the SDK turns into SandboxNotRunningException.
SANDBOX_GONE = "The sandbox was not found"


def _end_event(returncode: int) -> Event.EndEvent:
    if returncode < 0:
        status = f"signal: {signal.Signals(-returncode).name.removeprefix('SIG').lower()}"
        if returncode == -signal.SIGKILL:
            status = "signal: killed"
        return Event.EndEvent(exit_code=-1, exited=False, status=status, error=status)
    return Event.EndEvent(exit_code=returncode, exited=True, status=f"exit status {returncode}")


class ManagedProcess:
    """`pid` is the command's pid inside the sandbox (what E2B reports); `proc` is its relay on the
    host (sandbox-exec's parent half), whose process group the command shares."""

    def __init__(self, proc: asyncio.subprocess.Process, pid: int, config: process_pb.ProcessConfig,
                 tag: str | None) -> None:
        self.proc = proc
        self.pid = pid
        self.config = config
        self.tag = tag
        self._subscribers: set[asyncio.Queue[Event | ConnectError | None]] = set()
        self.finished = asyncio.Event()
        self.exited: asyncio.Future[None] | None = None  # the relay is gone, so the command is reaped
        self.deadline_exceeded = False

    def publish(self, event: Event | ConnectError | None) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)

    async def events(self, keepalive_seconds: float | None, started_here: bool = False) -> AsyncIterator[Event]:
        """start, then data/keepalive events until end (included). The stream that started the
        process ends with DEADLINE_EXCEEDED instead when its deadline killed the process, as the
        client's own deadline would have."""
        queue: asyncio.Queue[Event | ConnectError | None] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield Event(event=Oneof("start", Event.StartEvent(pid=self.pid)))
            if self.finished.is_set():
                return
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), keepalive_seconds)
                except TimeoutError:
                    yield Event(event=Oneof("keepalive", Event.KeepAlive()))
                    continue
                if event is None:
                    return
                if isinstance(event, ConnectError):
                    raise event
                if started_here and self.deadline_exceeded and event.event.field == "end":
                    raise ConnectError(Code.DEADLINE_EXCEEDED, "the process was killed at the call's deadline")
                yield event
        finally:
            self._subscribers.discard(queue)

    def info(self) -> process_pb.ProcessInfo:
        return process_pb.ProcessInfo(config=self.config, pid=self.pid, tag=self.tag)


class _ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Says when the process exits. asyncio's Process.wait() also waits until every pipe is closed,
    which a child left running in the background (holding stdout) may never do."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2 ** 16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def spawn(*argv: str, **options) -> tuple[asyncio.subprocess.Process, asyncio.Future[None]]:
    """create_subprocess_exec, plus a future done when the process exits (pipes or not)."""
    loop = asyncio.get_running_loop()
    protocol: list[_ExitProtocol] = []

    def factory() -> _ExitProtocol:
        protocol.append(_ExitProtocol(loop))
        return protocol[0]

    transport, _ = await loop.subprocess_exec(factory, *argv, **options)
    return asyncio.subprocess.Process(transport, protocol[0], loop), protocol[0].exited


async def _read_line(fd: int) -> bytes:
    """One short line from a pipe (the pid a command reports), without a thread."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    data = bytearray()

    def readable() -> None:
        chunk = os.read(fd, 64)
        data.extend(chunk)
        if not chunk or b"\n" in data:
            loop.remove_reader(fd)
            if not done.done():
                done.set_result(bytes(data))

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)


class ProcessTable:
    def __init__(self, init: SandboxInit, env: Callable[[], dict[str, str]], workdir: str = "") -> None:
        self.init = init
        self._env = env
        self.workdir = workdir  # default cwd (a template's WORKDIR), else the user's home
        self.running: dict[int, ManagedProcess] = {}

    async def start(self, config: process_pb.ProcessConfig, tag: str | None, stdin: bool,
                    deadline_seconds: float | None, uid: int, home: str, user: str) -> ManagedProcess:
        cwd = sandbox_path(config.cwd, home) if config.has_field("cwd") and config.cwd else (self.workdir or home)
        env = {**self._env(), "HOME": home, "USER": user, "LOGNAME": user, **dict(config.envs)}
        report_read, report_write = os.pipe()
        try:
            await self.init.ensure()
            argv, pass_fds = self.init.enter_argv([config.cmd, *config.args], uid, cwd, report_write)
            proc, exited = await spawn(
                *argv, cwd="/", env=env, start_new_session=True, pass_fds=pass_fds,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            os.close(report_write)
            report_write = -1
            reported = await _read_line(report_read)
        except OSError as error:
            raise ConnectError(Code.INVALID_ARGUMENT, f"error starting process: {error}") from error
        except BoundaryError as error:
            raise ConnectError(Code.UNAVAILABLE, f"{SANDBOX_GONE}: {error}") from error
        finally:
            os.close(report_read)
            if report_write >= 0:
                os.close(report_write)
        if not reported.strip().isdigit():
            # It never got to exec: its stderr says why (no such cwd, the sandbox's init is gone).
            stderr = await proc.stderr.read()
            await proc.wait()
            raise ConnectError(Code.INVALID_ARGUMENT,
                               f"error starting process: {stderr.decode(errors='replace').strip()}")
        managed = ManagedProcess(proc, int(reported), config, tag)
        managed.exited = exited
        self.running[managed.pid] = managed
        asyncio.get_running_loop().create_task(self._supervise(managed, exited, deadline_seconds))
        return managed

    async def _supervise(self, managed: ManagedProcess, exited: asyncio.Future[None],
                         deadline_seconds: float | None) -> None:
        proc = managed.proc
        pumps = [asyncio.create_task(self._pump(managed, proc.stdout, "stdout")),
                 asyncio.create_task(self._pump(managed, proc.stderr, "stderr"))]
        # The call's deadline (Connect-Timeout-Ms) is the process's: envd SIGKILLs it then.
        timer = None
        if deadline_seconds is not None:
            timer = asyncio.get_running_loop().call_later(deadline_seconds, self._deadline, managed)
        await exited
        returncode = proc.returncode
        if timer is not None:
            timer.cancel()
        _, pending = await asyncio.wait(pumps, timeout=DRAIN_SECONDS)
        for task in pending:
            task.cancel()
        self.running.pop(managed.pid, None)
        managed.finished.set()
        managed.publish(Event(event=Oneof("end", _end_event(returncode))))
        managed.publish(None)

    @staticmethod
    async def _pump(managed: ManagedProcess, stream: asyncio.StreamReader, field: str) -> None:
        while chunk := await stream.read(READ_CHUNK):
            managed.publish(Event(event=Oneof("data", Event.DataEvent(output=Oneof(field, chunk)))))

    def _deadline(self, managed: ManagedProcess) -> None:
        managed.deadline_exceeded = True
        self._killpg(managed.proc.pid, signal.SIGKILL)

    @staticmethod
    def _killpg(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def find(self, selector: process_pb.ProcessSelector | None) -> ManagedProcess:
        match selector.selector if selector is not None else None:
            case Oneof(field="pid", value=pid) if pid in self.running:
                return self.running[pid]
            case Oneof(field="tag", value=tag):
                for managed in self.running.values():
                    if managed.tag == tag:
                        return managed
        raise ConnectError(Code.NOT_FOUND, f"process with {selector} not found")

    async def send_signal(self, selector: process_pb.ProcessSelector | None, sig: int) -> None:
        managed = self.find(selector)
        # The whole group: a command's children (bash -c pipelines) go with it.
        self._killpg(managed.proc.pid, sig)
        if sig == signal.SIGKILL:
            # Answer once it is reaped, as envd does: a `kill -0 PID` right after must fail. The
            # relay dies at once; the command, orphaned, is reaped by the sandbox's pid 1.
            deadline = asyncio.get_running_loop().time() + KILL_REAP_SECONDS
            while self.init.has_pid(managed.pid) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.005)

    async def send_stdin(self, selector: process_pb.ProcessSelector | None, data: bytes) -> None:
        stdin = self.find(selector).proc.stdin
        if stdin is None or stdin.is_closing():
            raise ConnectError(Code.FAILED_PRECONDITION, "stdin is not enabled or already closed for this process")
        stdin.write(data)
        await stdin.drain()

    def close_stdin(self, selector: process_pb.ProcessSelector | None) -> None:
        stdin = self.find(selector).proc.stdin
        if stdin is not None:
            stdin.close()

    def drop_streams(self) -> None:
        """End every open stream as E2B does when the sandbox goes away; processes are untouched."""
        for managed in self.running.values():
            managed.publish(ConnectError(Code.UNAVAILABLE, SANDBOX_GONE))
