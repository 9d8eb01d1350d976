"""The orchestrator client and the `query` / `get` commands against the real control plane,
operator and e2b-local: every method does its work through the Kubernetes objects."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from remote_agents import OrchestratorError, RemoteAgentOrchestrator, TaskTimeout, WaitTimeout
from tests.support.kubectl import eventually

# One query command for every case: the query picks the behaviour, answer.sh answers the rest.
QUERY_COMMAND = ('case "$AGENT_QUERY" in '
                 'fail*) echo "cannot do that"; exit 3;; '
                 'big*) head -c 6000 /dev/zero | tr "\\0" x;; '
                 'slow*) sleep 60;; '
                 'version*) cat agent.txt;; '
                 'remember*) echo "$AGENT_QUERY" >> memory.txt; cat memory.txt;; '
                 '*) bash answer.sh;; esac')


@pytest.fixture
def orchestrator(cluster, namespace, agent_repo) -> RemoteAgentOrchestrator:
    return RemoteAgentOrchestrator(namespace=namespace, kubeconfig=cluster.kubeconfig, repo=agent_repo.url,
                                   query_command=QUERY_COMMAND, task_grace_seconds=30)


def cli(cluster, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "remote_agents.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "KUBECONFIG": cluster.kubeconfig})


def test_agent_lifecycle_through_the_client(orchestrator, kubectl, namespace, operator, e2b_client, agent_repo):
    agent = orchestrator.launch_agent("analyst", setup=["echo \"$GREETING\" > greeting.txt"],
                                      env={"GREETING": "hi"}, timeout=120)
    health = orchestrator.health_check(agent)
    assert health["ready"] and health["phase"] == "Ready" and len(health["revision"]) == 40
    assert health["conditions"]["Ready"]["status"] == "True" and health["conditions"]["Stalled"]["reason"]
    sandbox = health["sandbox"]
    assert e2b_client.read(sandbox, f"{kubectl.get('ra', agent, namespace)['status']['workdir']}/greeting.txt") \
        == "hi\n"
    assert orchestrator.list_agents() == [{"name": "analyst", "phase": "Ready", "ready": True, "sandbox": sandbox,
                                           "revision": health["revision"], "pool": None, "paused": False}]

    answer = orchestrator.query_agent(agent, "what is 6 x 7?", timeout=60)
    assert answer["success"] and answer["output"] == "answer to: what is 6 x 7?\n", answer
    assert answer["exit_code"] == 0 and answer["agent"] == agent and answer["duration_seconds"] >= 0
    assert kubectl.get("agenttask", answer["task"], namespace)["spec"]["agentRef"] == {"name": agent}

    big = orchestrator.query_agent(agent, "big please", timeout=60)
    assert big["success"] and big["output"] == "x" * 6000  # status.output is cut at 4 KiB; this came whole

    failed = orchestrator.query_agent(agent, "fail now", timeout=60)
    assert not failed["success"] and failed["exit_code"] == 3 and failed["reason"] == "QueryFailed"
    assert failed["output"] == "cannot do that\n" and "exited 3" in failed["error"]

    slow = orchestrator.query_agent(agent, "slow one", timeout=2)
    assert not slow["success"] and slow["reason"] == "DeadlineExceeded"

    orchestrator.query_agent(agent, "remember first", timeout=60)
    orchestrator.pause_agent(agent)
    assert orchestrator.health_check(agent)["phase"] == "Paused"
    assert str(e2b_client.info(sandbox).state.value) == "paused"
    orchestrator.resume_agent(agent)
    kept = orchestrator.query_agent(agent, "remember second", timeout=60)
    assert kept["output"] == "remember first\nremember second\n"  # same sandbox, disk kept
    assert orchestrator.health_check(agent)["sandbox"] == sandbox

    new_main = agent_repo.commit({"agent.txt": "version 2\n"}, "v2")
    assert orchestrator.update_agent_code(agent) == new_main
    assert orchestrator.query_agent(agent, "version?", timeout=60)["output"] == "version 2\n"
    branch = agent_repo.commit({"agent.txt": "version 3\n"}, "v3", branch="v3")
    assert orchestrator.update_agent_code(agent, ref="v3") == branch
    assert kubectl.get("ra", agent, namespace)["spec"]["source"]["ref"] == "v3"
    assert orchestrator.query_agent(agent, "version?", timeout=60)["output"] == "version 3\n"

    uid = kubectl.get("ra", agent, namespace)["metadata"]["uid"]
    orchestrator.terminate_agent(agent)
    assert kubectl.get("ra", agent, namespace) is None and orchestrator.list_agents() == []
    eventually(lambda: not e2b_client.by_uid(uid), 30, what="the sandbox to be killed")
    with pytest.raises(OrchestratorError, match="not found"):
        orchestrator.health_check(agent)


def test_waits_are_bounded_and_stuck_agents_fail_fast(orchestrator, namespace, operator):
    with pytest.raises(OrchestratorError, match="RefNotFound"):
        orchestrator.launch_agent("no-such-ref", ref="does-not-exist", timeout=60)
    with pytest.raises(WaitTimeout, match="slow-setup"):
        orchestrator.launch_agent("slow-setup", setup=["sleep 30"], timeout=2)
    assert orchestrator.launch_agent(wait=False).startswith("agent-")  # a generated name
    paused = orchestrator.launch_agent("sleeper", timeout=120)
    orchestrator.pause_agent(paused)
    orchestrator.task_grace_seconds = 0
    with pytest.raises(TaskTimeout, match="sleeper-q-"):
        orchestrator.query_agent(paused, "anyone?", timeout=2)  # waits with AgentPaused, never runs


def test_pool_answers_queries_in_parallel_in_input_order(orchestrator, kubectl, namespace, operator):
    pool = orchestrator.create_agent_pool(2, timeout=180)
    assert kubectl.get("agentpool", pool, namespace)["status"]["readyReplicas"] == 2
    members = {a["name"] for a in orchestrator.list_agents()}
    assert members == {f"{pool}-0", f"{pool}-1"}
    assert {a["pool"] for a in orchestrator.list_agents()} == {pool}

    queries = [f"question number {i}" for i in range(5)]
    results = orchestrator.query_pool(pool, queries, timeout=120)
    assert [r["output"] for r in results] == [f"answer to: {q}\n" for q in queries]
    assert all(r["success"] for r in results) and {r["agent"] for r in results} <= members
    assert {kubectl.get("agenttask", r["task"], namespace)["spec"]["poolRef"]["name"] for r in results} == {pool}

    orchestrator.delete_pool(pool)
    assert orchestrator.list_agents() == []  # foreground deletion waited for the agents


def test_cli_query_and_get(orchestrator, cluster, namespace, operator):
    agent = orchestrator.launch_agent("cli-agent", timeout=120)
    pool = orchestrator.create_agent_pool(1, name="cli-pool", timeout=120)

    asked = cli(cluster, "query", "--agent", agent, "-n", namespace, "--timeout", "60", "is it up?")
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout == "answer to: is it up?\n"
    assert f"Running on {agent}" in asked.stderr and "Succeeded" in asked.stderr

    pooled = cli(cluster, "query", "--pool", pool, "-n", namespace, "from the pool")
    assert pooled.returncode == 0 and pooled.stdout == "answer to: from the pool\n", pooled.stderr
    assert "Running on cli-pool-0" in pooled.stderr

    failed = cli(cluster, "query", "--agent", agent, "-n", namespace, "fail please")
    assert failed.returncode == 1 and failed.stdout == "cannot do that\n"
    assert "QueryFailed" in failed.stderr and "exited 3" in failed.stderr

    # Progress shows why the task waits; resuming the agent lets the same command finish.
    orchestrator.pause_agent(agent)
    waiting = subprocess.Popen([sys.executable, "-m", "remote_agents.cli", "query", "--agent", agent, "-n", namespace,
                                "--timeout", "60", "after the nap"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "KUBECONFIG": cluster.kubeconfig})
    try:
        progress = []  # Pending, maybe first without a reason, then with why it waits
        while not progress or ("Pending (AgentPaused" not in progress[-1] and progress[-1]):
            progress.append(waiting.stderr.readline())
        assert "spec.paused" in progress[-1], progress
        orchestrator.resume_agent(agent)
        stdout, stderr = waiting.communicate(timeout=120)
    finally:
        waiting.kill()
    assert waiting.returncode == 0 and stdout == "answer to: after the nap\n", stderr
    assert f"Running on {agent}" in stderr

    table = cli(cluster, "get", "-n", namespace)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["KIND", "NAMESPACE", "NAME", "PHASE", "READY"]
    rows = {(line.split()[0], line.split()[2]): line.split() for line in lines[1:]}
    assert rows[("RemoteAgent", agent)][3:5] == ["Ready", "True"]
    assert rows[("RemoteAgent", "cli-pool-0")][3:5] == ["Ready", "True"]
    assert rows[("AgentPool", pool)][3:5] == ["Ready", "1/1"]
    assert sum(1 for kind, _ in rows if kind == "AgentTask") == 4
    everywhere = cli(cluster, "get", "-A")
    assert everywhere.returncode == 0 and f" {namespace} " in everywhere.stdout
