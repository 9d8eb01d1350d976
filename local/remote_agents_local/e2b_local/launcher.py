"""Start `remote-agents e2b-local` as a subprocess for tests and for `remote-agents up`.

    with launcher.start(tmp_path / "e2b") as e2b:
        env = {**os.environ, **e2b.env}   # E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOG_NAME = "e2b-local.log"


class LaunchError(RuntimeError):
    pass


@dataclass
class LocalE2B:
    """A running server. Its log (stderr, one line per request) is `state_dir / LOG_NAME`."""

    api_url: str
    api_key: str
    state_dir: Path
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_NAME

    @property
    def env(self) -> dict[str, str]:
        return {"E2B_API_URL": self.api_url, "E2B_SANDBOX_URL": self.api_url, "E2B_API_KEY": self.api_key}

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM the server's process group (it kills its sandboxes' processes), SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> LocalE2B:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _log_tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-20:])
    except OSError:
        return "(no log)"


def _read_settings(process: subprocess.Popen, log_path: Path, deadline: float) -> dict[str, str]:
    """The three KEY=VALUE lines the server prints once it has bound its port."""
    found: dict[str, str] = {}
    while len(found) < 3:
        line = process.stdout.readline()
        if not line or time.monotonic() > deadline:
            raise LaunchError(f"e2b-local exited or printed no settings; log:\n{_log_tail(log_path)}")
        key, sep, value = line.strip().partition("=")
        if sep and key in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"):
            found[key] = value
    return found


def _wait_healthy(url: str, process: subprocess.Popen, log_path: Path, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise LaunchError(f"e2b-local did not become healthy at {url}; log:\n{_log_tail(log_path)}")
        time.sleep(0.05)


def start(state_dir: Path, port: int = 0, extra_args: Sequence[str] = (), timeout: float = 30,
          api_key: str | None = None) -> LocalE2B:
    """Start a server on 127.0.0.1:`port` (0 = any free port) and return once it answers.
    `api_key`: the key it accepts, passed in its environment (never argv); None = the key the
    server keeps in its state dir (generated on first start)."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = state_dir / LOG_NAME
    command = [sys.executable, "-m", "remote_agents_local.e2b_local", "--host", "127.0.0.1",
               "--port", str(port), "--state-dir", str(state_dir), *extra_args]
    env = {k: v for k, v in os.environ.items() if k not in ("E2B_LOCAL_API_KEY", "E2B_LOCAL_API_KEY_FILE")}
    if api_key is not None:
        env["E2B_LOCAL_API_KEY"] = api_key
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with open(fd, "ab") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                   text=True, start_new_session=True, env=env)
    deadline = time.monotonic() + timeout
    try:
        found = _read_settings(process, log_path, deadline)
        _wait_healthy(found["E2B_API_URL"], process, log_path, deadline)
    except BaseException:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        raise
    return LocalE2B(api_url=found["E2B_API_URL"], api_key=found["E2B_API_KEY"], state_dir=state_dir, process=process)
