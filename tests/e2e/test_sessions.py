"""Sessions on resident agents end to end: a conversation sticks to one agent of a pool and to its
process (through a pause), a session whose agent is gone fails with the reason, many sessions at
once never cross, and a resident process that dies is started again and reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from remote_agents.client import RemoteAgentOrchestrator
from tests.support.kubectl import eventually

SERVER_SOURCE = (Path(__file__).resolve().parents[1] / "support" / "resident_server.py").read_text()
# Port 0: one per agent, as e2b-local's sandboxes share the machine's network (E2B's do not).
RESIDENT = {"server": {"command": "python3 server.py", "port": 0, "readyTimeoutSeconds": 60}}


@pytest.fixture
def resident_repo(git_server, request):
    return git_server.create(request.node.name, {"server.py": SERVER_SOURCE})


@pytest.fixture
def orchestrator(cluster, namespace, operator) -> RemoteAgentOrchestrator:
    return RemoteAgentOrchestrator(namespace=namespace, kubeconfig=cluster.kubeconfig, task_grace_seconds=60)


def agent_spec(repo) -> dict:
    return {"source": {"repo": repo.url, "ref": "main"}, **RESIDENT}


def create_pool(kubectl, namespace: str, name: str, repo, replicas: int) -> None:
    kubectl.apply(json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "AgentPool",
                              "metadata": {"name": name, "namespace": namespace},
                              "spec": {"replicas": replicas, "template": {"spec": agent_spec(repo)}}}))
    kubectl.run("wait", "--for=condition=Ready", "--timeout=240s", f"agentpool/{name}", "-n", namespace,
                timeout=250)


def create_agent(kubectl, namespace: str, name: str, repo) -> dict:
    kubectl.apply(json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "RemoteAgent",
                              "metadata": {"name": name, "namespace": namespace}, "spec": agent_spec(repo)}))
    kubectl.run("wait", "--for=condition=Ready", "--timeout=180s", f"remoteagent/{name}", "-n", namespace,
                timeout=190)
    return kubectl.get("remoteagent", name, namespace)


def answer(result: dict) -> dict:
    assert result["success"], result
    return json.loads(result["output"])


def events(kubectl, namespace: str, reason: str) -> list[dict]:
    return [e for e in kubectl.items("events", namespace) if e.get("reason") == reason]


def test_a_session_sticks_to_one_agent_and_one_process_through_a_pause(kubectl, namespace, orchestrator,
                                                                        resident_repo):
    create_pool(kubectl, namespace, "research", resident_repo, 3)
    session = orchestrator.session("research")
    first = answer(session.ask("remember the fund's benchmark is the MSCI World"))
    holder = session.agent
    agent = kubectl.get("remoteagent", holder, namespace)
    assert agent["status"]["server"]["pid"] == first["pid"]  # the answer came from the recorded process

    kubectl.run("patch", "agentpool/research", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":true}}')
    eventually(lambda: kubectl.get("remoteagent", holder, namespace)["status"].get("phase") == "Paused", 120,
               what=f"{holder} paused")
    kubectl.run("patch", "agentpool/research", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":false}}')
    kubectl.run("wait", "--for=condition=Ready", "--timeout=120s", "agentpool/research", "-n", namespace,
                timeout=130)

    second = answer(session.ask("what is the benchmark?"))
    assert session.history[1]["agent"] == holder  # the second question went to the same agent of three
    assert second["facts"] == ["the fund's benchmark is the MSCI World"]  # the answer uses the first
    assert (second["pid"], second["count"]) == (first["pid"], first["count"] + 1)  # same process, memory kept
    tasks = [kubectl.get("agenttask", turn["task"], namespace) for turn in session.history]
    assert [t["status"]["session"] for t in tasks] == [session.name] * 2
    agent = eventually(lambda: (a := kubectl.get("remoteagent", holder, namespace))["status"].get("sessions") == 1
                       and a, 30, what="the agent counts its session")
    assert agent["status"]["server"]["pid"] == first["pid"] and agent["status"]["server"]["restarts"] == 0
    table = kubectl.run("get", "remoteagents", "-n", namespace, "-o", "wide").stdout
    assert "SESSIONS" in table.splitlines()[0]


def test_a_session_whose_agent_was_deleted_fails_its_next_task(kubectl, namespace, orchestrator, resident_repo):
    create_agent(kubectl, namespace, "analyst", resident_repo)
    session = orchestrator.session("analyst")
    answer(session.ask("remember the portfolio is long energy"))
    orchestrator.terminate_agent("analyst")

    result = session.ask("what is the portfolio?", timeout=60)
    assert not result["success"]
    assert result["reason"] == "SessionAgentGone"
    assert session.name in result["error"] and "analyst" in result["error"]
    assert any(session.name in e["message"] for e in events(kubectl, namespace, "SessionAgentGone"))


def test_twenty_sessions_on_five_agents_never_cross(kubectl, namespace, orchestrator, resident_repo):
    create_pool(kubectl, namespace, "desk", resident_repo, 5)
    sessions = [orchestrator.session("desk", name=f"client-{index:02d}") for index in range(20)]
    for turn in range(3):  # each round: one question of every session, all at once
        names = [orchestrator.submit_task(f"remember {s.name} fact {turn}", pool="desk", session=s.name, turn=turn)
                 for s in sessions]
        for session, result in zip(sessions, orchestrator.wait_tasks(names, 300)):
            session.history.append(result)
    agents_used, pid_of = set(), {}
    for session in sessions:
        answers = [answer(turn) for turn in session.history]
        assert len({turn["agent"] for turn in session.history}) == 1, session.name  # exactly one agent
        assert len({a["pid"] for a in answers}) == 1
        assert all(a["session"] == session.name for a in answers)
        # Each answer knows this session's facts, in order, and nothing of any other session.
        assert [a["facts"] for a in answers] == [[f"{session.name} fact {i}" for i in range(n + 1)]
                                                 for n in range(3)]
        agents_used.add(session.agent)
        assert pid_of.setdefault(session.agent, answers[0]["pid"]) == answers[0]["pid"]  # one process per agent
    assert len(agents_used) == 5  # the first questions spread over the pool
    servers = {a["metadata"]["name"]: a["status"]["server"]["pid"] for a in kubectl.items("remoteagents", namespace)}
    assert servers == pid_of  # each answer came from its own agent's recorded process
    for agent in agents_used:  # ... and each process counted exactly the questions its agent was given
        counts = sorted(answer(t)["count"] for s in sessions for t in s.history if t["agent"] == agent)
        assert counts == list(range(1, len(counts) + 1)), agent


def test_a_resident_process_that_dies_is_restarted_and_reported(kubectl, namespace, orchestrator, resident_repo,
                                                                e2b_client):
    agent = create_agent(kubectl, namespace, "trader", resident_repo)
    session = orchestrator.session("trader")
    first = answer(session.ask("remember the stop loss is 5%"))
    assert agent["status"]["server"]["pid"] == first["pid"]
    sandbox = e2b_client.connect(agent["status"]["sandboxID"])

    def relay_parents() -> list[int]:  # (the relay's arguments end with its tokens file)
        listed = sandbox.commands.run("ps -eo ppid=,args=").stdout.splitlines()
        return [int(line.split()[0]) for line in listed if line.endswith("relay.tokens")]
    assert relay_parents() == [first["pid"]]  # the tasks' relay runs as the resident process's child

    sandbox.commands.run(f"kill -9 {first['pid']}")
    restarted = eventually(lambda: (a := kubectl.get("remoteagent", "trader", namespace))["status"]["server"]
                           .get("restarts") == 1 and a, 60, what="the resident process restarted")
    server = restarted["status"]["server"]
    assert server["pid"] != first["pid"] and server["lostSessions"] == [session.name]
    reported = events(kubectl, namespace, "ServerRestarted")
    assert reported and str(first["pid"]) in reported[0]["message"] and session.name in reported[0]["message"]

    # The old relay went with its process; the new process has its own.
    eventually(lambda: relay_parents() == [server["pid"]], 30, what="one relay, the new process's")
    after = answer(session.ask("what is the stop loss?"))
    assert after["pid"] == server["pid"] and after["facts"] == []  # a new process: the memory really is gone


def test_a_code_update_restarts_the_resident_process_only_between_tasks(kubectl, namespace, orchestrator,
                                                                         resident_repo, e2b_client):
    agent = create_agent(kubectl, namespace, "quant", resident_repo)
    before = agent["status"]["server"]
    busy = orchestrator.submit_task("wait for /tmp/release", agent="quant", timeout=300)
    eventually(lambda: kubectl.get("agenttask", busy, namespace)["status"].get("phase") == "Running", 60,
               what="the long task running")

    commit = resident_repo.commit({"notes.txt": "v2\n"}, "v2")
    updated = eventually(lambda: (a := kubectl.get("remoteagent", "quant", namespace))["status"].get("revision")
                         == commit and a, 90, what="the new commit checked out")
    # Checked out while the task runs, but the process that serves it is left alone.
    assert updated["status"]["server"]["pid"] == before["pid"]
    assert updated["status"]["server"]["revision"] == before["revision"] != commit
    queued = orchestrator.submit_task("hello", agent="quant", timeout=300)  # waits for the upgrade

    e2b_client.connect(agent["status"]["sandboxID"]).commands.run("touch /tmp/release")
    first, second = orchestrator.wait_tasks([busy, queued], 300)
    assert answer(first)["pid"] == before["pid"]
    server = kubectl.get("remoteagent", "quant", namespace)["status"]["server"]
    assert server["revision"] == commit and server["pid"] != before["pid"] and server["restarts"] == 0
    assert answer(second)["pid"] == server["pid"]  # the next task went to the upgraded process
    assert events(kubectl, namespace, "ServerUpgraded")


def test_remote_agents_query_continues_a_session(cluster, kubectl, namespace, operator, resident_repo):
    create_agent(kubectl, namespace, "desk", resident_repo)

    def query(question: str) -> dict:
        done = subprocess.run([str(Path(sys.executable).parent / "remote-agents"), "query", "-n", namespace,
                               "--agent", "desk", "--session", "morning", question], capture_output=True, text=True,
                              timeout=180, env={**os.environ, "KUBECONFIG": cluster.kubeconfig})
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    first = query("remember the call is at nine")
    second = query("when is the call?")
    assert second["session"] == "morning" and second["facts"] == ["the call is at nine"]
    assert second["pid"] == first["pid"]
