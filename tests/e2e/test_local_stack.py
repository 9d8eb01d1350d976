"""`remote-agents up` / `down`: the main job on embedded defaults, driven like a user would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from remote_agents_local import processes


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "remote_agents.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def progress_steps(stderr: str) -> list[tuple[float, str]]:
    """The `[  12.3s] step` lines `up` prints as it goes."""
    found = [re.fullmatch(r"\[\s*(\d+\.\d)s\] (.+)", line) for line in stderr.splitlines()]
    return [(float(match[1]), match[2]) for match in found if match]


def test_up_runs_everything_and_down_stops_it(tmp_path):
    state = tmp_path / "stack"
    result = cli("up", "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last == f"KUBECONFIG={state / 'cluster' / 'kubeconfig'}"
    assert "kubectl get remoteagents" in result.stdout
    steps = progress_steps(result.stderr)
    assert [step for _, step in steps] == [
        "stopping what an earlier run left", "starting the control plane (etcd, kube-apiserver, kube-controller-manager)", "installing the CRDs",
        "starting e2b-local", "starting the git daemon with the sample agent's repository",
        "starting the LLM and market-data stand-ins for the research-demo agent", "starting the operator",
        "creating RemoteAgent remote-agents-demo/sample-agent and waiting for it to be Ready",
        "waiting for RemoteAgent remote-agents-demo/research-demo to be Ready", "ready"]
    assert [elapsed for elapsed, _ in steps] == sorted(elapsed for elapsed, _ in steps)
    kubeconfig = last.split("=", 1)[1]
    try:
        agent = json.loads(subprocess.run(
            ["kubectl", "--kubeconfig", kubeconfig, "get", "ra", "sample-agent", "-n", "remote-agents-demo",
             "-o", "json"], capture_output=True, text=True, check=True).stdout)
        assert agent["status"]["phase"] == "Ready"
        # The agent of Dexter's shape answers through the LLM stand-in, after its one tool call.
        asked = subprocess.run([sys.executable, "-m", "remote_agents.cli", "query", "--agent", "research-demo",
                                "-n", "remote-agents-demo", "What is the price of ACME?"], capture_output=True,
                               text=True, timeout=300, env={**os.environ, "KUBECONFIG": kubeconfig})
        assert (asked.returncode, asked.stdout) == (0, "ACME closed at 123.45 USD on 2026-11-30.\n"), asked.stderr
        again = cli("up", "--state-dir", str(state))
        assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == last
        assert [step for _, step in progress_steps(again.stderr)] == ["already running"]
        pids = json.loads((state / "stack.json").read_text())["pids"]
        cluster_pids = json.loads((state / "cluster" / "state.json").read_text())["pids"]
    finally:
        assert cli("down", "--state-dir", str(state)).returncode == 0
    assert not any(processes.alive(pid) for pid in [*pids.values(), *cluster_pids.values()])
