"""`remote-agents operator` as a real child process, with its log kept for inspection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.kubectl import Kubectl, eventually


class OperatorProcess:
    def __init__(self, kubeconfig: str, e2b_env: dict[str, str], log_path: Path, *extra_args: str,
                 env: dict[str, str] | None = None):
        self.kubeconfig, self.e2b_env, self.log_path = kubeconfig, e2b_env, log_path
        self.extra_args = list(extra_args)
        self.extra_env = env or {}
        self.process: subprocess.Popen | None = None

    def start(self) -> "OperatorProcess":
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, **self.e2b_env, **self.extra_env}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "remote_agents.cli", "operator", *self.extra_args],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizer handling, like a crashed pod."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def stop_after_finalizing(process: OperatorProcess, kubectl: Kubectl) -> None:
    """Stop a module's operator only once the agents and templates of the namespaces its tests
    deleted are gone: their finalizers need this operator and this e2b-local, not the next module's."""
    def none_left():
        left = kubectl.run("get", "remoteagents,e2btemplates", "--all-namespaces", "-o", "name").stdout.split()
        if left:
            raise AssertionError(f"still there: {left}")
        return True
    try:
        eventually(none_left, 120, what="the deleted namespaces' agents and templates to be finalized")
    finally:
        process.stop()
