"""RemoteAgent end to end: real kube-apiserver + the operator process + e2b-local + kubectl."""

from __future__ import annotations

import hashlib
import json
import urllib.request

import pytest

from tests.support.kubectl import eventually

SECRET_VALUE = "sk-test-7f3a9c1e5b2d4f60"


def agent_manifest(name: str, namespace: str, repo_url: str, **spec) -> str:
    body = {
        "apiVersion": "remoteagents.io/v1alpha1", "kind": "RemoteAgent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"source": {"repo": repo_url, "ref": "main"}, **spec},
    }
    return json.dumps(body)


def wait_ready(kubectl, name: str, namespace: str, timeout: int = 120) -> dict:
    kubectl.run("wait", "--for=condition=Ready", f"--timeout={timeout}s", f"remoteagent/{name}", "-n", namespace,
                timeout=timeout + 10)
    return kubectl.get("remoteagent", name, namespace)


def test_agent_gets_exactly_one_sandbox_with_its_code_and_setup(kubectl, namespace, operator, e2b_client,
                                                                  agent_repo):
    kubectl.run("create", "secret", "generic", "agent-keys", "-n", namespace, f"--from-literal=token={SECRET_VALUE}")
    kubectl.apply(agent_manifest("dexter", namespace, agent_repo.url, setup=[
        "echo \"$GREETING\" > setup.out",
        "printf %s \"$API_TOKEN\" | sha256sum | cut -d' ' -f1 > secret.out",
    ], env=[{"name": "GREETING", "value": "hello"},
            {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "agent-keys", "key": "token"}}}]))
    agent = wait_ready(kubectl, "dexter", namespace)
    status = agent["status"]
    assert status["phase"] == "Ready"
    assert status["observedGeneration"] == agent["metadata"]["generation"]
    assert len(status["revision"]) == 40 and status["shortRevision"] == status["revision"][:12]

    sandboxes = e2b_client.by_uid(agent["metadata"]["uid"])
    assert [s.sandbox_id for s in sandboxes] == [status["sandboxID"]]
    assert sandboxes[0].metadata["remoteagents.io/name"] == "dexter"
    workdir = status["workdir"]
    assert e2b_client.read(status["sandboxID"], f"{workdir}/agent.txt") == "version 1\n"
    assert e2b_client.read(status["sandboxID"], f"{workdir}/setup.out") == "hello\n"
    secret_digest = hashlib.sha256(SECRET_VALUE.encode()).hexdigest()
    assert e2b_client.read(status["sandboxID"], f"{workdir}/secret.out") == secret_digest + "\n"

    # The secret reached the setup command and nothing else.
    events = kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout
    assert SECRET_VALUE not in json.dumps(agent) and SECRET_VALUE not in events
    assert SECRET_VALUE not in json.dumps(sandboxes[0].metadata)
    assert SECRET_VALUE not in operator.log()
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"SandboxCreated", "CodeUpdated"} <= reasons

    # kubectl get shows the printer columns.
    table = kubectl.run("get", "ra", "-n", namespace).stdout
    assert "PHASE" in table and "SANDBOX" in table and "Ready" in table


def test_pause_and_resume_keep_processes(kubectl, namespace, operator, e2b_client, agent_repo):
    kubectl.apply(agent_manifest("pausable", namespace, agent_repo.url))
    sandbox_id = wait_ready(kubectl, "pausable", namespace)["status"]["sandboxID"]
    sandbox = e2b_client.connect(sandbox_id)
    # The count is renamed into place: a read never sees the file between truncation and write.
    counter = sandbox.commands.run("i=0; while true; do i=$((i+1)); echo $i > /home/user/count.new; "
                                   "mv /home/user/count.new /home/user/count; sleep 0.2; done",
                                   background=True, timeout=0)

    kubectl.run("patch", "ra", "pausable", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":true}}')
    eventually(lambda: kubectl.get("ra", "pausable", namespace)["status"].get("phase") == "Paused", 60,
               what="phase Paused")
    assert str(e2b_client.info(sandbox_id).state.value) == "paused"
    kubectl.run("wait", "--for=condition=Ready", "--timeout=30s", "ra/pausable", "-n", namespace)

    kubectl.run("patch", "ra", "pausable", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":false}}')
    eventually(lambda: kubectl.get("ra", "pausable", namespace)["status"].get("phase") == "Ready", 60,
               what="phase Ready after resume")
    assert str(e2b_client.info(sandbox_id).state.value) == "running"
    resumed = e2b_client.connect(sandbox_id)
    assert counter.pid in [p.pid for p in resumed.commands.list()]
    before = int(resumed.files.read("/home/user/count"))
    eventually(lambda: int(resumed.files.read("/home/user/count")) > before, 10, what="the counter to go on")
    assert kubectl.get("ra", "pausable", namespace)["status"]["sandboxID"] == sandbox_id


def revision_is(kubectl, name: str, namespace: str, revision: str) -> bool:
    status = kubectl.get("ra", name, namespace)["status"]
    if status.get("revision") != revision:
        raise AssertionError(f"status: {status}")  # shown if the wait times out
    return True


def test_new_commit_and_new_ref_update_code_in_place(kubectl, namespace, operator, e2b_client, agent_repo):
    kubectl.apply(agent_manifest("tracker", namespace, agent_repo.url))
    first = wait_ready(kubectl, "tracker", namespace)["status"]

    # A push to the tracked branch is noticed by the periodic ref check.
    pushed = agent_repo.commit({"agent.txt": "version 2\n"}, "v2")
    eventually(lambda: revision_is(kubectl, "tracker", namespace, pushed), 60, what="status.revision to follow the branch")
    assert e2b_client.read(first["sandboxID"], f"{first['workdir']}/agent.txt") == "version 2\n"

    # A new ref in the spec is checked out in the same sandbox.
    release = agent_repo.commit({"agent.txt": "version 3\n"}, "v3", branch="release")
    kubectl.run("patch", "ra", "tracker", "-n", namespace, "--type=merge", "-p",
                '{"spec":{"source":{"ref":"release"}}}')
    eventually(lambda: revision_is(kubectl, "tracker", namespace, release), 60,
               what="status.revision to be the release branch")
    status = kubectl.get("ra", "tracker", namespace)["status"]
    assert status["sandboxID"] == first["sandboxID"]
    assert e2b_client.read(first["sandboxID"], f"{first['workdir']}/agent.txt") == "version 3\n"


@pytest.mark.parametrize("spec, field", [
    ({"source": {"repo": "x"}, "deletionPolicy": "Keep"}, "spec.deletionPolicy"),
    ({"source": {"repo": "x"}, "sandboxTimeoutSeconds": -5}, "spec.sandboxTimeoutSeconds"),
    ({"template": "base"}, "spec.source"),
    ({"source": {"repo": "x"}, "env": [{"name": "A", "value": "v", "valueFrom": {
        "secretKeyRef": {"name": "s", "key": "k"}}}]}, "spec.env[0]"),
])
def test_invalid_manifests_are_rejected_naming_the_field(kubectl, crds, namespace, spec, field):
    manifest = json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "RemoteAgent",
                           "metadata": {"name": "bad", "namespace": namespace}, "spec": spec})
    result = kubectl.run("apply", "-f", "-", input=manifest, check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr


def test_out_of_band_kill_is_recreated_and_delete_removes_everything(kubectl, namespace, operator, e2b_client,
                                                                     agent_repo):
    kubectl.apply(agent_manifest("phoenix", namespace, agent_repo.url))
    agent = wait_ready(kubectl, "phoenix", namespace)
    uid, first = agent["metadata"]["uid"], agent["status"]["sandboxID"]
    assert e2b_client.kill(first) is True

    def recreated():
        status = kubectl.get("ra", "phoenix", namespace)["status"]
        return status.get("phase") == "Ready" and status.get("sandboxID") not in (None, first)
    eventually(recreated, 90, what="a new sandbox after the out-of-band kill")
    assert len(e2b_client.by_uid(uid)) == 1
    events = json.loads(kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert "SandboxLost" in {e["reason"] for e in events}

    kubectl.run("delete", "ra", "phoenix", "-n", namespace, "--timeout=60s")
    assert kubectl.get("ra", "phoenix", namespace) is None
    assert e2b_client.by_uid(uid) == []


def test_metrics_and_health_endpoints(operator, kubectl, namespace, agent_repo):
    kubectl.apply(agent_manifest("observed", namespace, agent_repo.url))
    wait_ready(kubectl, "observed", namespace)
    with urllib.request.urlopen(f"{operator.metrics_url}/healthz", timeout=5) as response:
        assert response.status == 200
    text = eventually(lambda: urllib.request.urlopen(f"{operator.metrics_url}/metrics", timeout=5).read().decode(),
                      10, what="metrics")
    assert 'remote_agents_e2b_calls_total{operation="create",outcome="ok"}' in text
    assert 'remote_agents_agents{phase="Ready"}' in text
    assert "remote_agents_reconcile_duration_seconds_bucket" in text
    assert "remote_agents_agent_time_to_ready_seconds_count" in text


def test_bad_credentials_and_missing_secrets_stall_with_a_reason(kubectl, namespace, operator, e2b_client,
                                                                  agent_repo):
    kubectl.run("create", "secret", "generic", "e2b", "-n", namespace, "--from-literal=apiKey=e2b_wrong_key")
    kubectl.apply(agent_manifest("wrong-key", namespace, agent_repo.url,
                                 e2bApiKeySecretRef={"name": "e2b", "key": "apiKey"}))
    kubectl.apply(agent_manifest("no-secret", namespace, agent_repo.url, env=[
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "token"}}}]))

    def stalled(name: str) -> dict | None:
        conditions = (kubectl.get("ra", name, namespace).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Stalled" and c["status"] == "True"), None)
    assert eventually(lambda: stalled("wrong-key"), 60, what="Stalled for the wrong key")["reason"] == "E2BAuthFailed"
    missing = eventually(lambda: stalled("no-secret"), 60, what="Stalled for the missing Secret")
    assert missing["reason"] == "SecretNotFound" and "absent" in missing["message"]
    assert e2b_client.by_uid(kubectl.get("ra", "no-secret", namespace)["metadata"]["uid"]) == []

    # Fixing the Secret is enough: the agent recovers without any edit of its own.
    kubectl.run("create", "secret", "generic", "absent", "-n", namespace, "--from-literal=token=now-here")
    wait_ready(kubectl, "no-secret", namespace, timeout=120)
