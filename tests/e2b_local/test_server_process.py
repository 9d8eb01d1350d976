"""Things that need their own server: state across a restart, injected faults, the CLI output."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import RateLimitException, ServiceBusyException

from remote_agents_local.e2b_local import launcher
from remote_agents_local.e2b_local.server import listening_socket
from tests.e2b_local.helpers import wait_for


def _use(server: launcher.LocalE2B, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)


def test_state_survives_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state = tmp_path / "state"
    with launcher.start(state) as server:
        _use(server, monkeypatch)
        running = Sandbox.create(timeout=300, metadata={"role": "running"})
        paused = Sandbox.create(timeout=300, metadata={"role": "paused"})
        running.files.write("/home/user/r.txt", "r")
        paused.files.write("/home/user/p.txt", "p")
        paused.pause()
    with launcher.start(state) as server:
        _use(server, monkeypatch)
        listed = {s.sandbox_id: s for s in Sandbox.list().next_items()}
        assert listed[running.sandbox_id].state == SandboxState.RUNNING
        assert listed[paused.sandbox_id].state == SandboxState.PAUSED
        assert listed[paused.sandbox_id].metadata == {"role": "paused"}
        # Running: its processes died with the old server, its files and envd did not.
        again = Sandbox.connect(running.sandbox_id)
        assert again.commands.list() == []
        assert again.commands.run("cat /home/user/r.txt").stdout == "r"
        resumed = Sandbox.connect(paused.sandbox_id)
        assert resumed.files.read("/home/user/p.txt") == "p"
        assert again.kill() is True and resumed.kill() is True


def test_injected_errors_are_retried_then_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    args = ["--error-rate", "create=1", "--latency", "info=0.4", "--error-rate", "list=0"]
    with launcher.start(tmp_path / "faulty", extra_args=args) as server:
        _use(server, monkeypatch)
        started = time.monotonic()
        with pytest.raises((RateLimitException, ServiceBusyException)):
            Sandbox.create()
        # The SDK retried (3 times, waiting Retry-After: 1 s between attempts).
        assert time.monotonic() - started >= 2.5
        attempts = [line for line in server.log_path.read_text().splitlines() if "POST /v2/sandboxes" in line]
        assert len(attempts) == 4 and all(("-> 503" in a or "-> 429" in a) for a in attempts)
        assert Sandbox.list(query=SandboxQuery(state=[SandboxState.RUNNING])).next_items() == []


def test_latency_injection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with launcher.start(tmp_path / "slow", extra_args=["--latency", "info=0.5"]) as server:
        _use(server, monkeypatch)
        box = Sandbox.create(timeout=60)
        started = time.monotonic()
        box.get_info()
        assert time.monotonic() - started >= 0.5
        box.kill()


def test_bad_fault_spec_fails_fast(tmp_path: Path):
    with pytest.raises(launcher.LaunchError, match="error-rate"):
        launcher.start(tmp_path / "bad", extra_args=["--error-rate", "bogus=1"], timeout=15)


def _alive(pid: int) -> bool:
    """Exists and is not a zombie (whether init reaps orphans quickly depends on the machine)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def test_processes_left_by_a_killed_server_are_reaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state = tmp_path / "crash"
    server = launcher.start(state)
    _use(server, monkeypatch)
    box = Sandbox.create(timeout=300)
    pid = box.commands.run("exec sleep 300", background=True, timeout=0).pid
    # At once, while the command may still be entering its sandbox: it holds the namespace's
    # descriptor itself, so it gets in without the server. No graceful shutdown: it is orphaned.
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait(10)
    wait_for(lambda: _command_line(pid) == b"sleep\0" + b"300\0", 10)
    with launcher.start(state):
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "the new server did not kill the orphaned process"


def test_connections_send_each_write_at_once():
    # A response is two writes (headers, body): with Nagle's algorithm on, the body waited for the
    # client's delayed ACK, 40 ms on every call. Accepted connections inherit the listener's option.
    listener = listening_socket("127.0.0.1", 0)
    listener.listen()
    with listener, socket.create_connection(listener.getsockname()[:2]):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
