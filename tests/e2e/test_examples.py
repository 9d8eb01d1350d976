"""The examples run as a user would: against `remote-agents up`, with KUBECONFIG from its last line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_ANSWER = "sample-agent (1.0.0) researching: "


def remote_agents(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "remote_agents.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory):
    state = tmp_path_factory.mktemp("stack")
    try:
        started = remote_agents("up", "--state-dir", str(state))
        assert started.returncode == 0, f"remote-agents up failed:\n{started.stdout}\n{started.stderr}"
        last = started.stdout.strip().splitlines()[-1]
        assert last.startswith("KUBECONFIG="), started.stdout
        yield last.removeprefix("KUBECONFIG=")
    finally:
        remote_agents("down", "--state-dir", str(state), timeout=120)


def run_example(kubeconfig: str, script: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script)], capture_output=True, text=True,
                            timeout=420, env={**os.environ, "KUBECONFIG": kubeconfig})
    assert result.returncode == 0, f"{script} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_simple_agent(kubeconfig):
    out = run_example(kubeconfig, "simple_agent.py")
    assert f"{SAMPLE_ANSWER}What drove NVIDIA's revenue growth last quarter?\n" in out
    assert "words in the query: 7\n" in out
    assert out.splitlines()[-1].startswith("terminated agent-")


def test_agent_pool(kubeconfig):
    out = run_example(kubeconfig, "agent_pool.py")
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from agent_pool import QUESTIONS
    finally:
        sys.path.pop(0)
    answers = [line.strip() for line in out.splitlines() if SAMPLE_ANSWER in line]
    assert answers == [f"{SAMPLE_ANSWER}{question}" for question in QUESTIONS]
    agents = {line.split("]")[0].lstrip("[") for line in out.splitlines() if line.startswith("[")}
    assert agents and all(agent.startswith("pool-") for agent in agents)
    assert out.splitlines()[-1].startswith("deleted pool ")


def test_persistent_agent(kubeconfig):
    out = run_example(kubeconfig, "persistent_agent.py")
    assert "noted\npaused: phase Paused\nresumed: phase Ready, same sandbox: True\n" in out
    assert "I remember:\nNVDA closed at a record high\n" in out
