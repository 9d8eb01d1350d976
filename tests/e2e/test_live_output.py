"""Live output end to end: a task's status.progress advancing with few writes, and `remote-agents
logs -f` / `query --follow` (the CLI as a subprocess) streaming the run from its sandbox, from the
first line, after a reconnect and after the end; the agent's Secret values in neither."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from remote_agents.client import RemoteAgentOrchestrator
from tests.e2e.test_agent_task import finished, task_manifest
from tests.e2e.test_remote_agent import agent_manifest, wait_ready

BIN = Path(sys.executable).parent
TOKEN = "tok-live-7c41e9d2"
LINES = 20
# A line a second on each stream, the token in every stderr line and in the answer; exit code 3.
TICKER = (f'for i in $(seq 1 {LINES}); do echo "line $i"; echo "progress $i of {LINES} token=$TOKEN" >&2; sleep 1; '
          'done; echo "answer token=$TOKEN"; exit 3')
WATCH_COLUMNS = '{.metadata.name}|{.metadata.resourceVersion}|{.status.phase}|{.status.progress.count}|' \
                '{.status.progress.line}{"\\n"}'


class Lines:
    """A subprocess's stdout and stderr lines, as they come, in one queue of (stream, line)."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.queue: queue.Queue = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        for name in ("stdout", "stderr"):
            threading.Thread(target=self._read, args=(name,), daemon=True).start()

    def _read(self, name: str) -> None:
        for line in getattr(self.process, name):
            self.queue.put((name, line))
        self.queue.put((name, None))

    def next(self, stream: str, timeout: float = 120) -> str:
        """The next line of `stream` (lines of the other stream are kept in `seen`)."""
        while True:
            name, line = self.queue.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"{stream} closed; seen {self.seen}")
            self.seen.append((name, line))
            if name == stream:
                return line

    def rest(self, timeout: float = 120) -> tuple[list[str], list[str], int]:
        """Everything until the process exits: stdout lines, stderr lines (with those seen) and its code."""
        closed = 0
        while closed < 2:
            name, line = self.queue.get(timeout=timeout)
            if line is None:
                closed += 1
            else:
                self.seen.append((name, line))
        code = self.process.wait(timeout)
        return [line for name, line in self.seen if name == "stdout"], \
            [line for name, line in self.seen if name == "stderr"], code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)


@pytest.fixture
def cli_env(cluster, e2b) -> dict[str, str]:
    return {**os.environ, **e2b.env, "KUBECONFIG": cluster.kubeconfig,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture
def ticker(kubectl, namespace, operator, agent_repo) -> str:
    kubectl.run("create", "secret", "generic", "live-creds", "-n", namespace, f"--from-literal=token={TOKEN}")
    kubectl.apply(agent_manifest("ticker", namespace, agent_repo.url, query={"command": TICKER},
                                 env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "live-creds",
                                                                                        "key": "token"}}}]))
    wait_ready(kubectl, "ticker", namespace)
    return "ticker"


def test_logs_follow_streams_the_run_live_from_its_start_and_progress_takes_few_writes(
        kubectl, namespace, ticker, cli_env):
    ra = str(BIN / "remote-agents")
    # Every write to the namespace's tasks, from before the task exists.
    watch = Lines(["kubectl", "--kubeconfig", cli_env["KUBECONFIG"], "get", "agenttasks", "-n", namespace, "--watch",
                   "-o", f"jsonpath={WATCH_COLUMNS}"], cli_env)
    try:
        kubectl.apply(task_manifest("tick", namespace, "go", agent=ticker))
        first = Lines([ra, "logs", "tick", "-n", namespace, "-f"], cli_env)
        assert first.next("stdout") == "line 1\n"
        assert kubectl.get("agenttask", "tick", namespace)["status"]["phase"] == "Running"  # before the run ends
        assert first.next("stdout") == "line 2\n"
        first.kill()

        again = Lines([ra, "logs", "tick", "-n", namespace, "-f"], cli_env)  # a reconnect starts from the beginning
        assert again.next("stdout") == "line 1\n"
        assert kubectl.get("agenttask", "tick", namespace)["status"]["phase"] == "Running"
        stdout, stderr, code = again.rest()
        assert stdout == [f"line {i}\n" for i in range(1, LINES + 1)] + ["answer token=[redacted]\n"]
        assert stderr == [f"progress {i} of {LINES} token=[redacted]\n" for i in range(1, LINES + 1)]
        assert code == 3  # the task's exit code

        task = finished(kubectl, "tick", namespace)
        assert task["status"]["exitCode"] == 3
        assert task["status"]["progress"]["count"] == LINES
        assert task["status"]["progress"]["line"] == f"progress {LINES} of {LINES} token=[redacted]"
    finally:
        watch.process.kill()
    watched, watch_errors, _ = watch.rest()
    events = [line.rstrip("\n").split("|") for line in watched]
    ours = [event for event in events if event[0] == "tick"]
    assert ours, (watched, watch_errors)
    versions = {event[1] for event in ours}
    running_counts = [int(event[3]) for event in ours if event[2] == "Running" and event[3]]
    # The progress of a running task advanced, in a few writes for LINES lines: the claim, a write
    # per progress interval (5 s) and the end, nowhere near one per line.
    assert len(set(running_counts)) >= 2 and running_counts == sorted(running_counts), ours
    assert len(versions) <= LINES // 2, ours
    assert all(TOKEN not in event[4] for event in ours if len(event) > 4)

    after = subprocess.run([ra, "logs", "tick", "-n", namespace], capture_output=True, text=True, timeout=120,
                           env=cli_env)
    assert after.stdout.splitlines(keepends=True) == stdout  # all of it, at once, after the end
    assert after.stderr.splitlines(keepends=True) == stderr
    assert after.returncode == 3
    assert TOKEN not in after.stdout + after.stderr

    # Without an E2B key: the output the operator recorded (redacted by it), after a note saying so.
    keyless = {k: v for k, v in cli_env.items() if k != "E2B_API_KEY"}
    recorded = subprocess.run([ra, "logs", "tick", "-n", namespace], capture_output=True, text=True, timeout=120,
                              env=keyless)
    note, *recorded_stderr = recorded.stderr.splitlines(keepends=True)
    assert "live output unavailable (no E2B API key" in note
    assert recorded.stdout.splitlines(keepends=True) == stdout and recorded_stderr == stderr
    assert recorded.returncode == 3


def test_query_follow_prints_the_run_as_it_goes_and_exits_with_its_code(kubectl, namespace, ticker, cli_env,
                                                                          cluster, e2b, monkeypatch):
    ra = str(BIN / "remote-agents")
    query = Lines([ra, "query", "--agent", ticker, "-n", namespace, "--follow", "a question"], cli_env)
    assert query.next("stdout") == "line 1\n"
    [task] = kubectl.items("agenttask", namespace)
    assert task["status"]["phase"] == "Running"  # the first line came while the run was running
    stdout, stderr, code = query.rest()
    assert stdout[-1] == "answer token=[redacted]\n" and len(stdout) == LINES + 1
    status_lines = [line for line in stderr if not line.startswith("progress")]
    assert status_lines and all(line.startswith(task["metadata"]["name"]) for line in status_lines)  # Pending, Running
    stderr = [line for line in stderr if line.startswith("progress")]
    assert stderr[-1] == f"progress {LINES} of {LINES} token=[redacted]\n"
    assert code == 3
    assert TOKEN not in "".join(stdout + stderr)

    # The Python client's iterator: the same lines, from the start.
    for key, value in e2b.env.items():
        monkeypatch.setenv(key, value)
    orchestrator = RemoteAgentOrchestrator(namespace=namespace, kubeconfig=cluster.kubeconfig)
    followed = list(orchestrator.follow_task(task["metadata"]["name"]))
    assert [line for stream, line in followed if stream == "stdout"] == stdout
    assert [line for stream, line in followed if stream == "stderr"] == stderr
