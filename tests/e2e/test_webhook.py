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
