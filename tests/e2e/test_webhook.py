"""GitHub push webhooks end to end: a signed push moves every tracking agent (and pool member)
to the pushed commit; a bad delivery changes nothing. The periodic ref check is slowed down to an
hour here, so only the webhook can explain the update."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest

from remote_agents_local import processes
from tests.e2e.test_agent_pool import pool_manifest, wait_pool_ready
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.kubectl import eventually
from tests.support.operator_process import OperatorProcess, stop_after_finalizing

SECRET = "whsec-test-5c1d2e"


@pytest.fixture(scope="module")
def operator(cluster, crds, kubectl, e2b, tmp_path_factory):
    port = processes.free_port()
    process = OperatorProcess(cluster.kubeconfig, e2b.env, tmp_path_factory.mktemp("operator") / "operator.log",
                              "--health-interval", "2", "--ref-poll-interval", "3600", "--webhook-port", str(port),
                              env={"GITHUB_WEBHOOK_SECRET": SECRET,
                                   "REMOTE_AGENTS_E2B_CREATES_PER_SECOND": "5"}).start()
    process.webhook_url = f"http://127.0.0.1:{port}/webhooks/github"
    eventually(lambda: _post(process.webhook_url, b"{}", {"X-GitHub-Event": "ping"})[0] in (200, 401), 30,
               what="the webhook receiver to listen")
    yield process
    stop_after_finalizing(process, kubectl)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def deliver(url: str, repo_url: str, commit: str, secret: str = SECRET, signed: bool = True) -> tuple[int, str]:
    body = json.dumps({"ref": "refs/heads/main", "after": commit, "deleted": False,
                       "repository": {"clone_url": repo_url, "full_name": "local/agent"}}).encode()
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4())}
    if signed:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return _post(url, body, headers)


def revisions(kubectl, namespace: str) -> dict[str, str | None]:
    return {a["metadata"]["name"]: (a.get("status") or {}).get("revision")
            for a in kubectl.items("remoteagents", namespace)}


def test_signed_push_updates_every_tracking_agent_and_pool_member(kubectl, namespace, operator, e2b_client,
                                                                  agent_repo):
    for name in ("solo-a", "solo-b"):
        kubectl.apply(agent_manifest(name, namespace, agent_repo.url))
    kubectl.apply(pool_manifest("fleet", namespace, agent_repo.url, 18))
    wait_pool_ready(kubectl, "fleet", namespace, timeout=240)
    for name in ("solo-a", "solo-b"):
        wait_ready(kubectl, name, namespace)
    found = revisions(kubectl, namespace)
    assert len(found) == 20, found

    pushed = agent_repo.commit({"agent.txt": "version 2\n"}, "v2")
    status, _ = deliver(operator.webhook_url, agent_repo.url, pushed, secret="wrong-secret")
    assert status == 401
    status, _ = deliver(operator.webhook_url, agent_repo.url, pushed, signed=False)
    assert status == 401
    time.sleep(3)
    assert pushed not in revisions(kubectl, namespace).values(), "an unsigned delivery changed something"

    started = time.monotonic()
    status, body = deliver(operator.webhook_url, agent_repo.url, pushed)
    assert status == 200 and json.loads(body)["matched"] == 20
    eventually(lambda: set(revisions(kubectl, namespace).values()) == {pushed}, 120, interval=0.2,
               what="every agent at the pushed commit")
    latency = time.monotonic() - started
    print(f"\nwebhook: delivery to 20 agents updated in {latency:.2f}s")
    agent = kubectl.get("ra", "fleet-7", namespace)
    assert e2b_client.read(agent["status"]["sandboxID"], f"{agent['status']['workdir']}/agent.txt") == "version 2\n"
    assert SECRET not in operator.log()


def push_body(repo_url: str, before: str, after: str, pushed_at: int) -> bytes:
    repository = {"clone_url": repo_url, "full_name": "local/agent", "pushed_at": pushed_at}
    return json.dumps({"ref": "refs/heads/main", "before": before, "after": after, "deleted": False,
                       "repository": repository}).encode()


def send(url: str, body: bytes) -> tuple[int, dict]:
    """The signed body under a fresh delivery id: what anyone who once saw the body can do."""
    status, answer = _post(url, body, {
        "X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()})
    return status, json.loads(answer or "{}")


def test_replayed_pushes_never_move_an_agent_back(kubectl, namespace, operator, e2b_client, agent_repo):
    kubectl.apply(agent_manifest("steady", namespace, agent_repo.url))
    first = wait_ready(kubectl, "steady", namespace)["status"]["revision"]
    second = agent_repo.commit({"agent.txt": "version 2\n"}, "v2")
    old_push = push_body(agent_repo.url, "0" * 40, first, pushed_at=1_700_000_000)
    new_push = push_body(agent_repo.url, first, second, pushed_at=1_700_000_060)

    assert send(operator.webhook_url, new_push) == (200, {"matched": 1})
    eventually(lambda: revisions(kubectl, namespace) == {"steady": second}, 120, what="the agent at the pushed commit")
    assert send(operator.webhook_url, new_push) == (200, {"duplicate": True})  # same signed body, new id
    assert send(operator.webhook_url, old_push) == (200, {"stale": True})  # older than the branch's last push

    # A restarted operator remembers no push: the old one gets through, and still moves nothing,
    # since what an agent runs is what the branch names when it reconciles, never the push's commit.
    operator.restart()
    eventually(lambda: _post(operator.webhook_url, b"{}", {"X-GitHub-Event": "ping"})[0] == 401, 60,
               what="the restarted webhook receiver")
    assert send(operator.webhook_url, old_push) == (200, {"matched": 1})

    def handled_the_old_push():
        agent = kubectl.get("ra", "steady", namespace)
        annotations = agent["metadata"].get("annotations") or {}
        return first in annotations.get("remoteagents.io/last-handled-configuration", "") and agent
    agent = eventually(handled_the_old_push, 60, what="the agent's reconcile after the old push")
    assert agent["status"]["revision"] == second
    assert e2b_client.read(agent["status"]["sandboxID"], f"{agent['status']['workdir']}/agent.txt") == "version 2\n"
    events = kubectl.items("events", namespace, "--field-selector", "involvedObject.name=steady")
    checkouts = [e["message"] for e in events if e["reason"] == "CodeUpdated"]
    assert sorted(message.split()[2] for message in checkouts) == sorted([first[:12], second[:12]]), checkouts
