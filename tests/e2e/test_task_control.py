"""Task control end to end: priorities reorder a busy agent's queue, a retried task survives a
killed sandbox, a cancelled running task leaves no process behind (also when it is deleted while
no operator runs), and the cost ledger matches
the phases a watcher sees. Figures are printed (run with -s to see them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

from remote_agents.client import RemoteAgentOrchestrator
from tests.e2e.test_agent_task import finished
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.kubectl import eventually

GO = "/home/user/go"
# Each query appends itself to a log; the one called "blocker" then waits for the test's go file.
LOGGING_QUERY = ('echo "$AGENT_QUERY" >> /home/user/order.log; '
                 f'if [ "$AGENT_QUERY" = blocker ]; then while [ ! -f {GO} ]; do sleep 0.2; done; fi; echo done')
WAITS_FOR_GO = f"while [ ! -f {GO} ]; do sleep 0.2; done; echo survived"
# Ignores SIGTERM (and so do the children it starts: an ignored signal stays ignored across exec),
# so only the SIGKILL after the grace ends it.
STUBBORN = "trap '' TERM; sleep 311 & sleep 312; wait"


def task(name: str, namespace: str, agent: str, query: str, **spec) -> str:
    return json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "AgentTask",
                       "metadata": {"name": name, "namespace": namespace},
                       "spec": {"query": query, "agentRef": {"name": agent}, "timeoutSeconds": 300, **spec}})


def status(kubectl, kind: str, name: str, namespace: str) -> dict:
    return (kubectl.get(kind, name, namespace) or {}).get("status") or {}


def in_phase(kubectl, kind: str, name: str, namespace: str, phase: str, timeout: float = 120) -> dict:
    return eventually(lambda: (s := status(kubectl, kind, name, namespace)).get("phase") == phase and s, timeout,
                      interval=0.2, what=f"{kind} {name} {phase}")


def processes(e2b_client, sandbox_id: str) -> str:
    """Every process in the sandbox (its own pid namespace), as ps prints them."""
    return e2b_client.connect(sandbox_id).commands.run("ps -eo pid,pgid,args").stdout


def runners(e2b_client, sandbox_id: str) -> list:
    """The task runners (tasks/runner.py) among the sandbox's commands."""
    return [p for p in e2b_client.connect(sandbox_id).commands.list() if "RUN_FILES" in (p.envs or {})]


def test_priorities_reorder_the_queue_of_a_busy_agent(kubectl, namespace, operator, e2b_client, agent_repo):
    kubectl.apply(agent_manifest("busy", namespace, agent_repo.url, query={"command": LOGGING_QUERY}))
    sandbox_id = wait_ready(kubectl, "busy", namespace)["status"]["sandboxID"]
    kubectl.apply(task("blocker", namespace, "busy", "blocker"))
    in_phase(kubectl, "agenttask", "blocker", namespace, "Running")
    for name, priority in (("low", 0), ("high", 10), ("mid", 5), ("low-later", 0)):
        kubectl.apply(task(name, namespace, "busy", name, priority=priority))
    e2b_client.connect(sandbox_id).files.write(GO, "")
    for name in ("low", "high", "mid", "low-later"):
        assert finished(kubectl, name, namespace)["status"]["phase"] == "Succeeded"
    order = e2b_client.read(sandbox_id, "/home/user/order.log").split()
    print(f"\nrun order: {order}")
    assert order == ["blocker", "high", "mid", "low", "low-later"]


def test_a_retried_task_survives_a_killed_sandbox_with_one_live_run_at_a_time(kubectl, namespace, operator,
                                                                              e2b_client, agent_repo):
    kubectl.apply(agent_manifest("fragile", namespace, agent_repo.url, query={"command": WAITS_FOR_GO}))
    first_sandbox = wait_ready(kubectl, "fragile", namespace)["status"]["sandboxID"]
    kubectl.apply(task("persistent", namespace, "fragile", "hold on", retries=2))
    first = in_phase(kubectl, "agenttask", "persistent", namespace, "Running")
    assert first["attempts"] == 1 and first["sandboxID"] == first_sandbox
    killed_at = time.monotonic()
    assert e2b_client.kill(first_sandbox)

    second = eventually(lambda: (s := status(kubectl, "agenttask", "persistent", namespace)).get("attempts") == 2
                        and s.get("phase") == "Running" and s, 180, interval=0.2, what="the second attempt running")
    print(f"\nsecond attempt running {time.monotonic() - killed_at:.1f}s after the kill")
    assert second["sandboxID"] != first_sandbox
    assert first_sandbox not in {s.sandbox_id for s in e2b_client.sandboxes()}  # the first run died with it
    assert len(runners(e2b_client, second["sandboxID"])) == 1  # one live attempt
    e2b_client.connect(second["sandboxID"]).files.write(GO, "")
    done = finished(kubectl, "persistent", namespace)["status"]
    assert done["phase"] == "Succeeded" and done["attempts"] == 2 and done["output"] == "survived\n"
    reasons = [e["reason"] for e in kubectl.items("events", namespace, "--field-selector",
                                                   "involvedObject.name=persistent")]
    assert "Retrying" in reasons


def test_a_cancelled_running_task_leaves_no_process_behind(cluster, kubectl, namespace, operator, e2b_client,
                                                          agent_repo):
    kubectl.apply(agent_manifest("stubborn", namespace, agent_repo.url, query={"command": STUBBORN}))
    sandbox_id = wait_ready(kubectl, "stubborn", namespace)["status"]["sandboxID"]
    kubectl.apply(task("doomed", namespace, "stubborn", "never mind"))
    in_phase(kubectl, "agenttask", "doomed", namespace, "Running")
    eventually(lambda: "sleep 312" in processes(e2b_client, sandbox_id), 30, what="the run's processes")
    assert not kubectl.get("agenttask", "doomed", namespace)["metadata"].get("finalizers")  # a delete is one call

    started = time.monotonic()
    RemoteAgentOrchestrator(namespace=namespace, kubeconfig=cluster.kubeconfig).cancel_task("doomed", timeout=60)
    print(f"\ncancelled (SIGTERM ignored, SIGKILL after the grace) in {time.monotonic() - started:.1f}s")
    left = processes(e2b_client, sandbox_id)
    assert "sleep 311" not in left and "sleep 312" not in left, left
    eventually(lambda: not runners(e2b_client, sandbox_id), 10, what="the runner gone")
    reasons = [e["reason"] for e in kubectl.items("events", namespace, "--field-selector",
                                                   "involvedObject.name=doomed")]
    assert "TaskCancelled" in reasons
    # The slot is free: the next task runs.
    kubectl.apply(task("after", namespace, "stubborn", "again", timeoutSeconds=2))
    assert finished(kubectl, "after", namespace)["status"]["agent"] == "stubborn"


def test_a_task_deleted_while_no_operator_runs_has_its_run_stopped_by_the_next_operator(
        kubectl, namespace, operator, e2b_client, agent_repo):
    kubectl.apply(agent_manifest("stubborn", namespace, agent_repo.url, query={"command": STUBBORN},
                                 maxConcurrentTasks=2))
    sandbox_id = wait_ready(kubectl, "stubborn", namespace)["status"]["sandboxID"]
    kubectl.apply(task("forgotten", namespace, "stubborn", "never mind"))
    kubectl.apply(task("kept", namespace, "stubborn", "go on", timeoutSeconds=600))
    in_phase(kubectl, "agenttask", "forgotten", namespace, "Running")
    in_phase(kubectl, "agenttask", "kept", namespace, "Running")
    eventually(lambda: processes(e2b_client, sandbox_id).count("sleep 312") == 2, 30, what="both runs' processes")

    operator.kill()
    kubectl.run("delete", "agenttask", "forgotten", "-n", namespace, "--wait=true")
    operator.start()

    eventually(lambda: processes(e2b_client, sandbox_id).count("sleep 312") == 1, 60,
               what="the forgotten task's run stopped")
    assert len(runners(e2b_client, sandbox_id)) == 1  # the kept task's run goes on
    assert status(kubectl, "agenttask", "kept", namespace)["phase"] == "Running"
    assert "stopped run" in operator.log() and "while no operator ran" in operator.log()


def test_the_ledger_matches_the_phases_a_watcher_sees(kubectl, namespace, operator, agent_repo):
    kubectl.apply(agent_manifest("metered", namespace, agent_repo.url, maxConcurrentTasks=2,
                                 query={"command": "sleep 3; echo ok"}))
    ready = in_phase(kubectl, "ra", "metered", namespace, "Ready")
    ready_seen = time.monotonic()
    kubectl.apply(task("metered-task", namespace, "metered", "q"))
    time.sleep(15)  # an interval to measure, not an assertion
    pause_asked = time.monotonic()
    kubectl.run("patch", "ra", "metered", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":true}}')
    paused = in_phase(kubectl, "ra", "metered", namespace, "Paused")
    paused_seen = time.monotonic()
    time.sleep(15)
    kubectl.run("patch", "ra", "metered", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":false}}')
    resumed = in_phase(kubectl, "ra", "metered", namespace, "Ready")
    resumed_seen = time.monotonic()

    running = paused["usage"]["runningSeconds"] - ready["usage"]["runningSeconds"]
    paused_for = resumed["usage"]["pausedSeconds"] - paused["usage"]["pausedSeconds"]
    watched_running, watched_paused = paused_seen - ready_seen, resumed_seen - paused_seen
    print(f"\nrunning: ledger {running:.0f}s, watched {watched_running:.1f}s (pause asked after "
          f"{pause_asked - ready_seen:.1f}s); paused: ledger {paused_for:.0f}s, watched {watched_paused:.1f}s")
    # Whole-second records and the watcher's polling: within 5 %, or 2 s on these short spells.
    for ledger, watched in ((running, watched_running), (paused_for, watched_paused)):
        assert abs(ledger - watched) <= max(0.05 * watched, 2.0), (ledger, watched)

    done = finished(kubectl, "metered-task", namespace)["status"]
    print(f"task: runSeconds {done['runSeconds']}, agentSeconds {done['agentSeconds']}")
    assert 3 <= done["runSeconds"] < 3 + 5
    assert abs(done["agentSeconds"] - done["runSeconds"] / 2) < 0.01  # one of the agent's two slots
    text = urllib.request.urlopen(f"{operator.metrics_url}/metrics", timeout=10).read().decode()
    assert f'remote_agents_agent_sandbox_seconds{{namespace="{namespace}",pool="",state="paused"}}' in text
    assert f'remote_agents_task_agent_seconds_total{{namespace="{namespace}",pool=""}}' in text


def test_remote_agents_cancel_deletes_a_waiting_task_at_once(cluster, kubectl, namespace, operator):
    kubectl.apply(task("unwanted", namespace, "no-such-agent", "never mind"))
    eventually(lambda: status(kubectl, "agenttask", "unwanted", namespace).get("conditions"), 30,
               what="the task to say why it waits")
    assert not kubectl.get("agenttask", "unwanted", namespace)["metadata"].get("finalizers")  # cheap to delete
    done = subprocess.run([sys.executable, "-m", "remote_agents.cli", "cancel", "-n", namespace, "unwanted"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KUBECONFIG": cluster.kubeconfig})
    assert done.returncode == 0 and done.stdout == "agenttask/unwanted cancelled\n", done.stderr
    assert kubectl.get("agenttask", "unwanted", namespace) is None
