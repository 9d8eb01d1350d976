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


@pytest.mark.parametrize("content", [b"", b'{"sandboxes": {"i1": {"sandbox_id": "i1", "templ', b"[1, 2]"])
def test_an_unreadable_state_file_is_set_aside_and_its_sandbox_directories_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes):
    state = tmp_path / "state"
    with launcher.start(state) as server:
        _use(server, monkeypatch)
        box = Sandbox.create(timeout=300)
        box.files.write("/home/user/kept.txt", "kept")
    (state / "sandboxes.json").write_bytes(content)
    with launcher.start(state) as server:
        _use(server, monkeypatch)
        assert Sandbox.list().next_items() == []  # started empty instead of exiting with a traceback
        log = server.log_path.read_text()
        assert "state file" in log and "is unreadable" in log and "set aside as" in log
        assert f"sandbox directory {state / 'sandboxes' / box.sandbox_id} has no record" in log
        aside = list(state.glob("sandboxes.json.unreadable-*"))
        assert len(aside) == 1 and aside[0].read_bytes() == content
        assert (state / "sandboxes" / box.sandbox_id / "home/user/kept.txt").read_text() == "kept"
        assert Sandbox.create(timeout=60).kill() is True
    assert (state / "sandboxes.json").stat().st_mode & 0o777 == 0o600


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


def _host_pids(command_line: bytes) -> list[int]:
    """Host pids whose /proc/PID/cmdline is exactly `command_line` (sandbox pids are not host pids)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == command_line and _alive(int(entry.name)):
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return found


def test_a_killed_server_takes_its_sandboxes_processes_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state = tmp_path / "crash"
    server = launcher.start(state)
    _use(server, monkeypatch)
    box = Sandbox.create(timeout=300)
    # A daemon that left the command's session and process group (setsid + double fork).
    marker = b"sleep\x00" + b"317.25\x00"
    box.commands.run("setsid sh -c 'sleep 317.25 & exit' </dev/null >/dev/null 2>&1", timeout=10)
    daemons = wait_for(lambda: _host_pids(marker), 10)
    # No graceful shutdown: the sandbox's init dies with the server (bwrap --die-with-parent), and
    # the kernel kills the rest of its pid namespace.
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait(10)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in daemons) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in daemons), "a sandbox process outlived the killed server"
    with launcher.start(state) as again:
        _use(again, monkeypatch)
        # The sandbox is still listed and usable: a new init, the same files.
        assert Sandbox.connect(box.sandbox_id).commands.run("echo back").stdout == "back\n"


def test_connections_send_each_write_at_once():
    # A response is two writes (headers, body): with Nagle's algorithm on, the body waited for the
    # client's delayed ACK, 40 ms on every call. Accepted connections inherit the listener's option.
    listener = listening_socket("127.0.0.1", 0)
    listener.listen()
    with listener, socket.create_connection(listener.getsockname()[:2]):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
