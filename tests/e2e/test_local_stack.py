"""`remote-agents up` / `down`: the main job on embedded defaults, driven like a user would."""

from __future__ import annotations

import json
import subprocess
import sys

from remote_agents_local import processes


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "remote_agents.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_up_runs_everything_and_down_stops_it(tmp_path):
    state = tmp_path / "stack"
    result = cli("up", "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last == f"KUBECONFIG={state / 'cluster' / 'kubeconfig'}"
    assert "kubectl get remoteagents" in result.stdout
    kubeconfig = last.split("=", 1)[1]
    try:
        agent = json.loads(subprocess.run(
            ["kubectl", "--kubeconfig", kubeconfig, "get", "ra", "sample-agent", "-n", "remote-agents-demo",
             "-o", "json"], capture_output=True, text=True, check=True).stdout)
        assert agent["status"]["phase"] == "Ready"
        again = cli("up", "--state-dir", str(state))
        assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == last
        pids = json.loads((state / "stack.json").read_text())["pids"]
        cluster_pids = json.loads((state / "cluster" / "state.json").read_text())["pids"]
    finally:
        assert cli("down", "--state-dir", str(state)).returncode == 0
    assert not any(processes.alive(pid) for pid in [*pids.values(), *cluster_pids.values()])
