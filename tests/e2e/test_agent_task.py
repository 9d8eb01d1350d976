"""AgentTask end to end: dispatch, exact query delivery, waiting, pools, idle pause, timeouts."""

from __future__ import annotations

import json
import time

from tests.e2e.test_agent_pool import members, pool_manifest, wait_pool_ready
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.fake_github import FakeGitHub
from tests.support.kubectl import eventually

HOSTILE = "\"; rm -rf ~; echo $(id) ' `uname` \\n %s {{x}}\n second line ✓"
# stdout is the query read from stdin; the environment copy goes to a file to be compared too.
ECHO_QUERY = "printf '%s' \"$AGENT_QUERY\" > \"$RUN_FILES.env_query\"; echo 'a note on stderr' >&2; cat"


def task_manifest(name: str, namespace: str, query: str, agent: str | None = None, pool: str | None = None,
                  timeout: int = 120) -> str:
    ref = {"agentRef": {"name": agent}} if agent else {"poolRef": {"name": pool}}
    return json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "AgentTask",
                       "metadata": {"name": name, "namespace": namespace},
                       "spec": {"query": query, "timeoutSeconds": timeout, **ref}})


def finished(kubectl, name: str, namespace: str, timeout: float = 120) -> dict:
    def done():
        task = kubectl.get("agenttask", name, namespace)
        if (task.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return task
        raise AssertionError(f"status: {task.get('status')}")
    return eventually(done, timeout, what=f"task {name} to finish")


def test_task_output_in_status_and_configmap_and_hostile_query_round_trips(kubectl, namespace, operator,
                                                                              e2b_client, agent_repo):
    kubectl.apply(agent_manifest("echo", namespace, agent_repo.url, query={"command": ECHO_QUERY}))
    sandbox_id = wait_ready(kubectl, "echo", namespace)["status"]["sandboxID"]
    kubectl.apply(task_manifest("hostile", namespace, HOSTILE, agent="echo"))
    task = finished(kubectl, "hostile", namespace)
    status = task["status"]
    assert status["phase"] == "Succeeded", status
    assert status["exitCode"] == 0 and status["agent"] == "echo"
    assert status["output"] == HOSTILE
    config_map = kubectl.get("configmap", status["outputConfigMap"], namespace)
    assert config_map["data"]["stdout"] == HOSTILE
    assert config_map["data"]["stderr"] == "a note on stderr\n"
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == task["metadata"]["uid"]
    run_files = f"/home/user/.remote-agents/tasks/{task['metadata']['uid']}"
    assert e2b_client.read(sandbox_id, f"{run_files}.env_query") == HOSTILE
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Complete"] == "True" and conditions["Ready"] == "True"
    table = kubectl.run("get", "atask", "-n", namespace).stdout
    assert "Succeeded" in table and "echo" in table


def test_task_for_user_paused_agent_waits_with_reason(kubectl, namespace, operator, agent_repo):
    kubectl.apply(agent_manifest("sleepy", namespace, agent_repo.url, paused=True,
                                 query={"command": "bash answer.sh"}))
    eventually(lambda: (kubectl.get("ra", "sleepy", namespace).get("status") or {}).get("phase") == "Paused", 60,
               what="agent paused")
    kubectl.apply(task_manifest("waits", namespace, "hello", agent="sleepy"))
    task = eventually(lambda: (t := kubectl.get("agenttask", "waits", namespace))["status"].get("conditions") and t,
                      30, what="the task to say why it waits")
    ready = next(c for c in task["status"]["conditions"] if c["type"] == "Ready")
    assert task["status"]["phase"] == "Pending"
    assert ready["reason"] == "AgentPaused" and "spec.paused" in ready["message"]
    kubectl.run("patch", "ra", "sleepy", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":false}}')
    assert finished(kubectl, "waits", namespace)["status"]["output"] == "answer to: hello\n"


def test_a_task_queued_behind_another_is_pending_without_a_write(kubectl, namespace, operator, agent_repo):
    kubectl.apply(agent_manifest("single", namespace, agent_repo.url, query={"command": "sleep 3; echo done"}))
    wait_ready(kubectl, "single", namespace)
    kubectl.apply(task_manifest("first", namespace, "one", agent="single"))
    eventually(lambda: kubectl.get("agenttask", "first", namespace)["status"]["phase"] == "Running", 30,
               what="the first task to run")
    kubectl.apply(task_manifest("queued", namespace, "two", agent="single"))
    created = kubectl.get("agenttask", "queued", namespace)
    assert created["status"] == {"phase": "Pending", "observedGeneration": 0}  # the API server's defaults
    time.sleep(1.5)  # rounds run every few ms: a "why it waits" note would have been written by now
    assert kubectl.get("agenttask", "first", namespace)["status"]["phase"] == "Running"
    waiting = kubectl.get("agenttask", "queued", namespace)
    assert waiting["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"], waiting["status"]
    assert kubectl.run("get", "agenttask", "queued", "-n", namespace, "--no-headers").stdout.split()[1] == "Pending"
    assert finished(kubectl, "queued", namespace)["status"]["phase"] == "Succeeded"


def test_six_tasks_on_a_pool_of_three_never_overlap_on_an_agent(kubectl, namespace, operator, e2b_client,
                                                                 agent_repo):
    command = 'echo "$(date +%s.%N) start" >> /home/user/tasks.log; sleep 1; echo "$(date +%s.%N) end" >> ' \
              '/home/user/tasks.log; echo done'
    kubectl.apply(pool_manifest("workers", namespace, agent_repo.url, 3, query={"command": command}))
    wait_pool_ready(kubectl, "workers", namespace)
    for i in range(6):
        kubectl.apply(task_manifest(f"job-{i}", namespace, f"query {i}", pool="workers"))
    tasks = [finished(kubectl, f"job-{i}", namespace, timeout=180) for i in range(6)]
    assert all(t["status"]["phase"] == "Succeeded" for t in tasks), [t["status"] for t in tasks]
    assert {t["status"]["agent"] for t in tasks} <= {"workers-0", "workers-1", "workers-2"}
    for agent in {t["status"]["agent"] for t in tasks}:
        sandbox_id = kubectl.get("ra", agent, namespace)["status"]["sandboxID"]
        events = [line.split() for line in e2b_client.read(sandbox_id, "/home/user/tasks.log").splitlines()]
        kinds = [kind for _, kind in sorted(events, key=lambda e: float(e[0]))]
        assert kinds == ["start", "end"] * (len(kinds) // 2), f"{agent} ran two tasks at once: {kinds}"


def test_idle_agent_is_paused_and_woken_by_the_next_task(kubectl, namespace, operator, e2b_client, agent_repo):
    kubectl.apply(agent_manifest("idler", namespace, agent_repo.url, idlePauseSeconds=5,
                                 query={"command": "bash answer.sh"}))
    sandbox_id = wait_ready(kubectl, "idler", namespace)["status"]["sandboxID"]

    def idle_paused():
        status = kubectl.get("ra", "idler", namespace).get("status") or {}
        return status.get("phase") == "Paused" and status.get("idlePaused")
    eventually(idle_paused, 60, what="the idle agent to be paused")
    assert str(e2b_client.info(sandbox_id).state.value) == "paused"
    ready = next(c for c in kubectl.get("ra", "idler", namespace)["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "IdlePaused"

    kubectl.apply(task_manifest("wake-up", namespace, "are you there", agent="idler"))
    task = finished(kubectl, "wake-up", namespace)
    assert task["status"]["phase"] == "Succeeded" and task["status"]["output"] == "answer to: are you there\n"
    assert kubectl.get("ra", "idler", namespace)["status"]["sandboxID"] == sandbox_id


def test_timeout_fails_the_task_and_kills_its_process(kubectl, namespace, operator, e2b_client, agent_repo):
    kubectl.apply(agent_manifest("slow", namespace, agent_repo.url,
                                 query={"command": "sleep 301 & sleep 302"}))
    sandbox_id = wait_ready(kubectl, "slow", namespace)["status"]["sandboxID"]
    kubectl.apply(task_manifest("too-slow", namespace, "wait", agent="slow", timeout=2))
    status = finished(kubectl, "too-slow", namespace, timeout=90)["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "DeadlineExceeded"
    assert status["exitCode"] == 143  # SIGTERM first (SIGKILL only for a run that outlives the grace)
    sandbox = e2b_client.connect(sandbox_id)
    # Both sleeps (the command's own and the one it put in the background) went with the deadline.
    assert not {"sleep 301", "sleep 302"} & set(sandbox.commands.run("ps -eo args").stdout.splitlines())


def test_a_run_that_ignores_sigterm_at_its_deadline_is_killed_after_the_grace(kubectl, namespace, operator,
                                                                             e2b_client, agent_repo):
    kubectl.apply(agent_manifest("stubborn", namespace, agent_repo.url,
                                 query={"command": "trap '' TERM; sleep 303"}))  # the sleep inherits the ignore
    sandbox = e2b_client.connect(wait_ready(kubectl, "stubborn", namespace)["status"]["sandboxID"])
    kubectl.apply(task_manifest("deaf", namespace, "wait", agent="stubborn", timeout=2))
    status = finished(kubectl, "deaf", namespace, timeout=90)["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "DeadlineExceeded"
    eventually(lambda: "sleep 303" not in sandbox.commands.run("ps -eo args").stdout.splitlines(), 10,
               what="the SIGKILL")


def test_deleting_a_running_task_kills_its_process(kubectl, namespace, operator, e2b_client, agent_repo):
    kubectl.apply(agent_manifest("busy", namespace, agent_repo.url,
                                 query={"command": "sleep 307 & sleep 308"}))
    sandbox = e2b_client.connect(wait_ready(kubectl, "busy", namespace)["status"]["sandboxID"])
    kubectl.apply(task_manifest("cancelled", namespace, "wait", agent="busy", timeout=600))
    eventually(lambda: "sleep 308" in sandbox.commands.run("ps -eo args").stdout.splitlines(), 60,
               what="the run to start")
    kubectl.run("delete", "agenttask", "cancelled", "-n", namespace)
    # Both sleeps (the command's own and the one it put in the background) go with the task.
    eventually(lambda: not {"sleep 307", "sleep 308"} & set(sandbox.commands.run("ps -eo args").stdout.splitlines()),
               30, what="the run to be killed")


def test_task_output_is_published_to_github_through_pygithub(kubectl, namespace, operator, agent_repo):
    with FakeGitHub(tokens=("ghp_task_token_81f2",)) as github:
        github.add_repo("quant/research", issues=(7,))
        kubectl.run("create", "secret", "generic", "gh", "-n", namespace, "--from-literal=token=ghp_task_token_81f2")
        kubectl.apply(agent_manifest("publisher", namespace, agent_repo.url, query={"command": "bash answer.sh"}))
        wait_ready(kubectl, "publisher", namespace)
        task = json.loads(task_manifest("report", namespace, "top gainers", agent="publisher"))
        task["spec"]["github"] = {"repo": "quant/research", "issue": 7, "apiUrl": github.url,
                                  "credentialsSecretRef": {"name": "gh", "key": "token"}}
        kubectl.apply(json.dumps(task))
        url = eventually(lambda: (kubectl.get("agenttask", "report", namespace).get("status") or {}).get("githubUrl"),
                         90, what="the published comment's URL")
        assert "quant/research/issues/7#issuecomment-" in url
        comments = github.repos["quant/research"].comments
        assert len(comments) == 1 and "answer to: top gainers" in comments[0]["body"]
        assert "ghp_task_token_81f2" not in operator.log()


def test_scale_down_waits_for_busy_agents_and_their_status_shows_the_tasks(kubectl, namespace, operator, agent_repo):
    # The query is the number of seconds the task sleeps (it arrives on stdin).
    kubectl.apply(pool_manifest("keepers", namespace, agent_repo.url, 2, query={"command": "sleep \"$(cat)\""}))
    wait_pool_ready(kubectl, "keepers", namespace)
    kubectl.apply(task_manifest("short", namespace, "4", agent="keepers-0"))
    kubectl.apply(task_manifest("long", namespace, "20", agent="keepers-1"))
    eventually(lambda: all((kubectl.get("agenttask", name, namespace).get("status") or {}).get("phase") == "Running"
                           for name in ("short", "long")), 30, what="both tasks running")
    # At once, before any status could mirror the running tasks: both agents are busy, none may go.
    kubectl.run("scale", "agentpool/keepers", "-n", namespace, "--replicas=1")

    def only_the_long_runner_left():
        assert kubectl.get("agenttask", "long", namespace)["status"]["phase"] == "Running", "long task ended"
        names = [a["metadata"]["name"] for a in members(kubectl, namespace, "keepers")]
        assert "keepers-1" in names, f"the busy agent was removed: {names}"
        return names == ["keepers-1"]
    eventually(only_the_long_runner_left, 15, what="the agent whose task ended to be removed, the busy one kept")
    assert kubectl.get("ra", "keepers-1", namespace)["status"]["activeTasks"] == 1
    assert finished(kubectl, "long", namespace, timeout=60)["status"]["phase"] == "Succeeded"
    assert finished(kubectl, "short", namespace)["status"]["phase"] == "Succeeded"

    def idle_again():
        status = kubectl.get("ra", "keepers-1", namespace)["status"]
        return status.get("activeTasks") == 0 and status.get("lastActivityTime")
    eventually(idle_again, 15, what="the agent's status to show it idle again")


LEAKY_TOKEN = "tok-7f3a9c21e5b8d04c"
LEAKY_FILE_KEY = "filekey-5d2e8a19c3"  # stored with the newline a Secret made from a file ends with
# Prints the Secret values on both streams; the first one straddles status.output's 4 KiB cut.
LEAKY_COMMAND = ("sleep \"${AGENT_QUERY#sleep }\"; head -c 4090 /dev/zero | tr '\\0' x; echo \"$TOKEN\"; "
                 "echo \"key=$FILE_KEY\"; echo \"err $TOKEN\" >&2")


def test_secret_values_are_redacted_from_status_configmap_and_github(kubectl, namespace, operator, agent_repo):
    kubectl.apply(json.dumps({"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": "leaky", "namespace": namespace}, "stringData": {"token": LEAKY_TOKEN, "file": LEAKY_FILE_KEY + "\n",
                                             "gh": "ghp_leaky_token_3c9d"}}))
    secret = lambda key: {"secretKeyRef": {"name": "leaky", "key": key}}  # noqa: E731
    kubectl.apply(agent_manifest("leaky", namespace, agent_repo.url, query={"command": LEAKY_COMMAND},
                                 env=[{"name": "TOKEN", "valueFrom": secret("token")},
                                      {"name": "FILE_KEY", "valueFrom": secret("file")}]))
    wait_ready(kubectl, "leaky", namespace)

    def assert_redacted(task: dict) -> str:
        status = task["status"]
        assert status["phase"] == "Succeeded", status
        stored = kubectl.get("configmap", status["outputConfigMap"], namespace)["data"]
        for text in (status["output"], stored["stdout"], stored["stderr"]):
            assert LEAKY_TOKEN[:8] not in text and LEAKY_FILE_KEY[:8] not in text, text[-200:]
        assert status["output"].startswith("x" * 4090 + "[redac")  # cut after redacting, not before
        assert stored["stdout"].endswith("x[redacted]\nkey=[redacted]\n\n")  # the value's own newline stays
        assert stored["stderr"] == "err [redacted]\n"
        return stored["stdout"]

    # A run the operator started and finished itself, published to GitHub.
    with FakeGitHub(tokens=("ghp_leaky_token_3c9d",)) as github:
        github.add_repo("quant/research", issues=(7,))
        task = json.loads(task_manifest("leak-now", namespace, "sleep 0", agent="leaky"))
        task["spec"]["github"] = {"repo": "quant/research", "issue": 7, "apiUrl": github.url,
                                  "credentialsSecretRef": {"name": "leaky", "key": "gh"}}
        kubectl.apply(json.dumps(task))
        assert_redacted(finished(kubectl, "leak-now", namespace))
        eventually(lambda: github.repos["quant/research"].comments, 90, what="the published comment")
        body = github.repos["quant/research"].comments[0]["body"]
        assert LEAKY_TOKEN not in body and LEAKY_FILE_KEY not in body and "x[redacted]\nkey=[redacted]" in body

    # A run that outlives the operator which started it: the next one redacts it all the same.
    kubectl.apply(task_manifest("leak-later", namespace, "sleep 8", agent="leaky"))
    eventually(lambda: kubectl.get("agenttask", "leak-later", namespace)["status"]["phase"] == "Running", 30,
               what="the run to start")
    operator.restart()
    assert_redacted(finished(kubectl, "leak-later", namespace))
    assert LEAKY_TOKEN not in operator.log() and LEAKY_FILE_KEY not in operator.log()


def test_github_api_url_must_be_https_and_an_allowed_host_or_no_token_is_sent(kubectl, namespace, operator,
                                                                            agent_repo):
    plain = json.loads(task_manifest("plain-http", namespace, "q", agent="nobody"))
    plain["spec"]["github"] = {"repo": "quant/research", "issue": 7, "apiUrl": "http://github.example.com/api/v3",
                               "credentialsSecretRef": {"name": "gh", "key": "token"}}
    refused = kubectl.run("apply", "-f", "-", input=json.dumps(plain), check=False)
    assert refused.returncode != 0 and "spec.github.apiUrl" in refused.stderr and "https" in refused.stderr

    with FakeGitHub(tokens=("ghp_deputy_token_77a1",)) as github:
        github.add_repo("quant/research", issues=(7,))
        kubectl.run("create", "secret", "generic", "gh", "-n", namespace, "--from-literal=token=ghp_deputy_token_77a1")
        kubectl.apply(agent_manifest("deputy", namespace, agent_repo.url, query={"command": "bash answer.sh"}))
        wait_ready(kubectl, "deputy", namespace)
        task = json.loads(task_manifest("elsewhere", namespace, "q", agent="deputy"))
        # Loopback, so the schema lets it through; but "localhost" is not among the operator's hosts.
        task["spec"]["github"] = {"repo": "quant/research", "issue": 7,
                                  "apiUrl": github.url.replace("127.0.0.1", "localhost"),
                                  "credentialsSecretRef": {"name": "gh", "key": "token"}}
        kubectl.apply(json.dumps(task))
        error = eventually(lambda: kubectl.get("agenttask", "elsewhere", namespace)["status"].get("githubError"), 90,
                           what="the publish to be refused")
        assert "'localhost' is not allowed" in error and "api.github.com" in error
        assert github.calls == [], "a request (and the token) went to a host that is not allowed"
    events = kubectl.items("events", namespace, "--field-selector", "involvedObject.name=elsewhere")
    assert any(e["type"] == "Warning" and e["reason"] == "PublishFailed" and "not allowed" in e["message"]
               for e in events), events
