"""`remote-agents get` and `kubectl agents` against the real API server, as a shell user runs them."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_agent_task import task_manifest
from tests.e2e.test_remote_agent import agent_manifest
from tests.support.kubectl import Kubectl, eventually

BIN = Path(sys.executable).parent


@pytest.fixture
def context_kubeconfig(cluster, tmp_path, namespace) -> str:
    """A copy of the cluster's kubeconfig whose current context defaults to the test namespace,
    with a second context, `elsewhere`, defaulting to kube-system."""
    path = tmp_path / "kubeconfig"
    shutil.copy(cluster.kubeconfig, path)
    config = Kubectl(str(path))
    config.run("config", "set-context", "--current", f"--namespace={namespace}")
    current = config.run("config", "current-context").stdout.strip()
    context = yaml.safe_load(path.read_text())
    [mine] = [c for c in context["contexts"] if c["name"] == current]
    config.run("config", "set-context", "elsewhere", f"--cluster={mine['context']['cluster']}",
               f"--user={mine['context']['user']}", "--namespace=kube-system")
    return str(path)


@pytest.fixture
def objects(kubectl, crds, namespace):
    kubectl.apply(agent_manifest("analyst", namespace, "owner/repo"))
    kubectl.apply(task_manifest("question", namespace, "why?", agent="analyst"))
    return ["remoteagent.remoteagents.io/analyst", "agenttask.remoteagents.io/question"]


def _env(kubeconfig: str) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": kubeconfig, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def run(kubeconfig: str, *argv: str) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=120, env=_env(kubeconfig))
    assert result.returncode == 0, f"{argv} failed: {result.stderr}"
    return result


def test_output_formats_in_the_context_namespace(context_kubeconfig, objects, namespace):
    ra = str(BIN / "remote-agents")
    assert run(context_kubeconfig, ra, "get", "-o", "name").stdout.splitlines() == objects
    listed = json.loads(run(context_kubeconfig, ra, "get", "-o", "json").stdout)
    assert listed["kind"] == "List"
    assert [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in listed["items"]] == [
        ("RemoteAgent", namespace, "analyst"), ("AgentTask", namespace, "question")]
    assert yaml.safe_load(run(context_kubeconfig, ra, "get", "-o", "yaml").stdout)["items"] == listed["items"]
    table = run(context_kubeconfig, ra, "get", "-o", "wide").stdout.splitlines()
    assert table[0].split()[-2:] == ["REASON", "MESSAGE"] and len(table) == 3
    # Another context, another default namespace; -n still wins over it.
    elsewhere = run(context_kubeconfig, ra, "get", "--context", "elsewhere", "-o", "name")
    assert elsewhere.stdout == "" and "No agents, pools or tasks found in namespace kube-system" in elsewhere.stderr
    named = run(context_kubeconfig, ra, "get", "--context", "elsewhere", "-n", namespace, "-o", "name")
    assert named.stdout.splitlines() == objects


def test_kubectl_agents_plugin(context_kubeconfig, objects):
    plugins = run(context_kubeconfig, "kubectl", "plugin", "list").stdout
    assert str(BIN / "kubectl-agents") in plugins
    assert run(context_kubeconfig, "kubectl", "agents", "get", "-o", "name").stdout.splitlines() == objects
    assert run(context_kubeconfig, "kubectl", "agents", "--version").stdout.startswith("remote-agents ")


def test_watch_prints_each_change(context_kubeconfig, objects, kubectl, namespace):
    process = subprocess.Popen([str(BIN / "remote-agents"), "get", "-w", "-o", "json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=_env(context_kubeconfig))
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen: list[dict] = []

    def saw(predicate) -> bool:
        while not lines.empty():
            seen.append(json.loads(lines.get()))
        return any(predicate(obj) for obj in seen)
    try:
        eventually(lambda: saw(lambda o: o["metadata"]["name"] == "analyst"), 60, what="the agent as it is")
        kubectl.run("label", "remoteagent", "analyst", "-n", namespace, "watched=yes")
        eventually(lambda: saw(lambda o: (o["metadata"].get("labels") or {}).get("watched") == "yes"), 60,
                   what="the label change")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_kubectl_completes_the_plugin(context_kubeconfig):
    # kubectl asks kubectl_complete-agents for `kubectl agents ...` completions (cobra's protocol).
    commands = run(context_kubeconfig, "kubectl", "__complete", "agents", "g").stdout.splitlines()
    assert commands == ["get", ":4"]
    formats = run(context_kubeconfig, "kubectl", "__complete", "agents", "get", "-o", "").stdout.splitlines()
    assert formats == ["table", "wide", "json", "yaml", "name", ":4"]
