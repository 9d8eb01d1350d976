"""Work that is fine must stay fine (issue 23): a setup command that fails is an outcome reported
with its exit code and redacted output, and an operator SIGKILLed while tasks run fails none of
them when it comes back, nor runs any twice."""

from __future__ import annotations

import json

from remote_agents.controller.redaction import MARKER
from tests.e2e.test_agent_pool import members, pool_manifest, wait_pool_ready
from tests.e2e.test_agent_task import finished, task_manifest
from tests.e2e.test_remote_agent import SECRET_VALUE, agent_manifest
from tests.support.kubectl import eventually

RUNS_LOG = "/home/user/runs.log"


def condition(kubectl, kind: str, name: str, namespace: str, type_: str) -> dict:
    conditions = (kubectl.get(kind, name, namespace).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def test_a_setup_step_that_exits_3_stalls_with_its_exit_code_and_redacted_output(kubectl, namespace, operator,
                                                                                 agent_repo):
    kubectl.run("create", "secret", "generic", "setup-keys", "-n", namespace, f"--from-literal=token={SECRET_VALUE}")
    kubectl.apply(agent_manifest("broken-setup", namespace, agent_repo.url, setup=[
        'echo "installing"; echo "the index refused token $API_TOKEN" >&2; exit 3',
    ], env=[{"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "setup-keys", "key": "token"}}}]))

    def stalled():
        found = condition(kubectl, "ra", "broken-setup", namespace, "Stalled")
        if found.get("status") != "True":
            raise AssertionError(f"status: {kubectl.get('ra', 'broken-setup', namespace).get('status')}")
        return found
    found = eventually(stalled, 120, what="the agent to be Stalled by its failed setup step")
    assert found["reason"] == "SetupFailed"
    assert found["message"].startswith("setup step 1 exited 3: ")
    assert f"the index refused token {MARKER}" in found["message"]  # the output, with the Secret's value blanked

    agent = kubectl.get("ra", "broken-setup", namespace)
    assert agent["status"]["phase"] == "Failed"
    assert condition(kubectl, "ra", "broken-setup", namespace, "Ready")["status"] == "False"
    events = json.loads(kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert any(e["reason"] == "SetupFailed" and "exited 3" in e["message"] for e in events)
    assert SECRET_VALUE not in json.dumps(agent) and SECRET_VALUE not in json.dumps(events)
    assert SECRET_VALUE not in operator.log()
    assert "AttributeError" not in operator.log()


def test_sigkill_while_ten_tasks_run_on_a_pool_fails_none_and_runs_each_once(kubectl, namespace, operator,
                                                                             e2b_client, agent_repo):
    # Each run appends its query to a log in its agent's sandbox: a run repeated shows up twice.
    command = f'echo "$AGENT_QUERY" >> {RUNS_LOG}; sleep 8; printf "answer to: %s\\n" "$AGENT_QUERY"'
    kubectl.apply(pool_manifest("crew", namespace, agent_repo.url, 5, maxConcurrentTasks=2,
                                query={"command": command}))
    wait_pool_ready(kubectl, "crew", namespace)
    queries = [f"question {i}" for i in range(10)]
    for i, query in enumerate(queries):
        kubectl.apply(task_manifest(f"job-{i}", namespace, query, pool="crew"))

    def all_running():
        phases = [(kubectl.get("agenttask", f"job-{i}", namespace).get("status") or {}).get("phase")
                  for i in range(10)]
        if phases != ["Running"] * 10:
            raise AssertionError(f"phases: {phases}")
        return True
    eventually(all_running, 60, interval=0.2, what="all ten tasks to run")
    operator.kill()
    operator.start()

    tasks = [finished(kubectl, f"job-{i}", namespace, timeout=180) for i in range(10)]
    assert [t["status"]["phase"] for t in tasks] == ["Succeeded"] * 10, [t["status"] for t in tasks]
    assert [t["status"]["output"] for t in tasks] == [f"answer to: {query}\n" for query in queries]
    runs = []
    for agent in members(kubectl, namespace, "crew"):
        sandbox = e2b_client.connect(agent["status"]["sandboxID"])
        if sandbox.files.exists(RUNS_LOG):
            runs += sandbox.files.read(RUNS_LOG).splitlines()
    assert sorted(runs) == sorted(queries)  # every task ran, and none twice
    assert "AgentGone" not in operator.log()
