"""Background processes that outlive the command that started them (`cluster up`, `up`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def state_root() -> Path:
    """Where the long-running local pieces keep their state ($XDG_STATE_HOME/remote-agents)."""
    return Path(os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")) / "remote-agents"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_detached(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start `args` in a session of its own (immune to the terminal's ^C), output appended to `log_path`."""
    # 0600: a log may carry what the process prints, e2b-local's key included.
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with open(fd, "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    return process.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0): look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def terminate(pid: int, grace_seconds: float = 10, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after the grace period. `group`: signal its whole process group."""
    send = (lambda sig: os.killpg(pid, sig)) if group else (lambda sig: os.kill(pid, sig))
    if not alive(pid):
        return
    try:
        send(signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        try:
            send(signal.SIGKILL)
        except ProcessLookupError:
            pass


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
