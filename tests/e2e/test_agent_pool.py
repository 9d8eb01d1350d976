"""AgentPool end to end: scale with kubectl, roll out a template change, pause, delete, crash."""

from __future__ import annotations

import json
import time

from tests.support.kubectl import eventually


def pool_manifest(name: str, namespace: str, repo_url: str, replicas: int, **template_spec) -> str:
    return json.dumps({
        "apiVersion": "remoteagents.io/v1alpha1", "kind": "AgentPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "updateStrategy": {"type": "RollingUpdate", "maxUnavailable": 1},
                 "template": {"metadata": {"labels": {"team": "quant"}},
                              "spec": {"source": {"repo": repo_url, "ref": "main"}, **template_spec}}},
    })


def members(kubectl, namespace: str, pool: str) -> list[dict]:
    return [a for a in kubectl.items("remoteagents", namespace, "-l", f"remoteagents.io/pool={pool}")
            if not a["metadata"].get("deletionTimestamp")]


def pool_sandboxes(e2b_client, namespace: str, pool: str) -> list:
    return [s for s in e2b_client.sandboxes() if s.metadata.get("remoteagents.io/namespace") == namespace
            and s.metadata.get("remoteagents.io/name", "").startswith(f"{pool}-")]


def wait_pool_ready(kubectl, name: str, namespace: str, timeout: int = 180) -> dict:
    kubectl.run("wait", "--for=condition=Ready", f"--timeout={timeout}s", f"agentpool/{name}", "-n", namespace,
                timeout=timeout + 10)
    return kubectl.get("agentpool", name, namespace)


def test_scale_with_kubectl_and_selector(kubectl, namespace, operator, e2b_client, agent_repo):
    kubectl.apply(pool_manifest("research", namespace, agent_repo.url, 3))
    pool = wait_pool_ready(kubectl, "research", namespace)
    assert pool["status"]["readyReplicas"] == 3 and pool["status"]["replicas"] == 3
    assert len(pool_sandboxes(e2b_client, namespace, "research")) == 3

    kubectl.run("scale", "agentpool/research", "-n", namespace, "--replicas=5")
    eventually(lambda: kubectl.get("agentpool", "research", namespace)["status"].get("readyReplicas") == 5
               and kubectl.get("agentpool", "research", namespace)["status"]["observedGeneration"]
               == kubectl.get("agentpool", "research", namespace)["metadata"]["generation"], 120,
               what="5 ready agents")
    assert len(pool_sandboxes(e2b_client, namespace, "research")) == 5

    kubectl.run("scale", "agentpool/research", "-n", namespace, "--replicas=1")
    eventually(lambda: len(members(kubectl, namespace, "research")) == 1
               and len(pool_sandboxes(e2b_client, namespace, "research")) == 1, 120, what="one agent left")
    pool = wait_pool_ready(kubectl, "research", namespace)
    selected = kubectl.items("remoteagents", namespace, "-l", pool["status"]["selector"])
    assert [a["metadata"]["name"] for a in selected] == [m["metadata"]["name"] for m in members(kubectl, namespace,
                                                                                                 "research")]
    assert all(a["metadata"]["labels"]["team"] == "quant" for a in selected)
    table = kubectl.run("get", "apool", "research", "-n", namespace).stdout
    assert "DESIRED" in table and "READY" in table and "UPDATED" in table
    scale = json.loads(kubectl.run("get", "--raw",
                                   f"/apis/remoteagents.io/v1alpha1/namespaces/{namespace}/agentpools/research/scale").stdout)
    assert scale["spec"]["replicas"] == 1 and scale["status"]["selector"] == "remoteagents.io/pool=research"


def test_rollout_keeps_max_unavailable_then_pause_then_delete(kubectl, namespace, operator, e2b_client,
                                                              agent_repo):
    kubectl.apply(pool_manifest("roll", namespace, agent_repo.url, 3))
    wait_pool_ready(kubectl, "roll", namespace)
    before = {m["metadata"]["uid"] for m in members(kubectl, namespace, "roll")}

    kubectl.apply(pool_manifest("roll", namespace, agent_repo.url, 3, env=[{"name": "MODE", "value": "fast"}]))
    worst = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        pool = kubectl.get("agentpool", "roll", namespace)
        ready = [m for m in members(kubectl, namespace, "roll") if any(
            c["type"] == "Ready" and c["status"] == "True" and c.get("observedGeneration") == m["metadata"]["generation"]
            for c in (m.get("status") or {}).get("conditions", []))]
        worst = max(worst, 3 - len(ready))
        status = pool.get("status") or {}
        if status.get("observedGeneration") == pool["metadata"]["generation"] and status.get("updatedReplicas") == 3 \
                and status.get("readyReplicas") == 3:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"rollout did not finish: {kubectl.get('agentpool', 'roll', namespace)['status']}")
    assert worst <= 1, f"{worst} agents were unavailable at once (maxUnavailable 1)"
    after = members(kubectl, namespace, "roll")
    assert not before & {m["metadata"]["uid"] for m in after}  # every agent was replaced
    assert all(m["spec"]["env"] == [{"name": "MODE", "value": "fast"}] for m in after)
    wait_pool_ready(kubectl, "roll", namespace)
    assert len(pool_sandboxes(e2b_client, namespace, "roll")) == 3

    kubectl.run("patch", "apool", "roll", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":true}}')
    eventually(lambda: [str(s.state.value) for s in pool_sandboxes(e2b_client, namespace, "roll")] == ["paused"] * 3,
               90, what="every sandbox paused")
    assert wait_pool_ready(kubectl, "roll", namespace)["status"]["pausedReplicas"] == 3
    kubectl.run("patch", "apool", "roll", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":false}}')
    eventually(lambda: [str(s.state.value) for s in pool_sandboxes(e2b_client, namespace, "roll")] == ["running"] * 3,
               90, what="every sandbox running")

    kubectl.run("delete", "agentpool", "roll", "-n", namespace)
    eventually(lambda: kubectl.items("remoteagents", namespace, "-l", "remoteagents.io/pool=roll") == []
               and pool_sandboxes(e2b_client, namespace, "roll") == [], 120, what="agents and sandboxes gone")


def test_operator_killed_during_scale_to_20_ends_with_exactly_20(kubectl, namespace, operator, e2b_client,
                                                                  agent_repo):
    kubectl.apply(pool_manifest("burst", namespace, agent_repo.url, 0))
    kubectl.run("scale", "agentpool/burst", "-n", namespace, "--replicas=20")
    eventually(lambda: len(pool_sandboxes(e2b_client, namespace, "burst")) >= 3, 60, interval=0.2,
               what="the scale-up to be under way")
    operator.kill()
    time.sleep(2)
    operator.start()
    pool = wait_pool_ready(kubectl, "burst", namespace, timeout=300)
    assert pool["status"]["readyReplicas"] == 20
    time.sleep(3)  # any late duplicate would show up now
    assert len(members(kubectl, namespace, "burst")) == 20
    sandboxes = pool_sandboxes(e2b_client, namespace, "burst")
    assert len(sandboxes) == 20
    assert len({s.metadata["remoteagents.io/uid"] for s in sandboxes}) == 20
