"""Autoscaled AgentPools end to end: memory first (paused agents are woken before any E2B create),
growth to maxReplicas under a queue, pausing back down without deleting before the retention,
and scale from zero (its time from task creation to Running is printed, not asserted)."""

from __future__ import annotations

import json
import re
import time

from tests.e2e.test_agent_pool import members, pool_manifest, pool_sandboxes
from tests.e2e.test_agent_task import task_manifest
from tests.support.kubectl import eventually

QUICK = {"command": "sleep 0.5; echo done"}
# Shrinks as soon as the demand falls (the default waits 300 s); deletes nothing for 10 minutes.
SCALING = {"minReplicas": 0, "maxReplicas": 6, "pausedRetentionSeconds": 600,
           "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}


def autoscaled_pool(name: str, namespace: str, repo_url: str, replicas: int, **scaling) -> str:
    manifest = json.loads(pool_manifest(name, namespace, repo_url, replicas, query=QUICK))
    manifest["spec"]["autoscaling"] = {**SCALING, **scaling}
    return json.dumps(manifest)


def tasks_list(count: int, namespace: str, pool: str) -> str:
    items = [json.loads(task_manifest(f"t-{i}", namespace, f"query {i}", pool=pool)) for i in range(count)]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def idle_paused(kubectl, namespace: str, pool: str) -> list[str]:
    return sorted(m["metadata"]["name"] for m in members(kubectl, namespace, pool)
                  if (m.get("status") or {}).get("idlePaused") and m["status"].get("phase") == "Paused")


def e2b_requests(e2b, offset: int) -> list[str]:
    """e2b-local's control-plane requests since `offset` in its log: ("create" | "resume", sandbox id)."""
    found = []
    for line in e2b.log_path.read_text(errors="replace")[offset:].splitlines():
        if re.search(r"\bPOST /(v2/)?sandboxes ->", line):
            found.append(("create", ""))
        elif match := re.search(r"\bPOST /(?:v2/)?sandboxes/([^/ ]+)/(?:resume|connect) ->", line):
            found.append(("resume", match[1]))
    return found


def test_paused_agents_are_woken_before_any_create_then_it_grows_drains_and_pauses(
        kubectl, namespace, operator, e2b, e2b_client, agent_repo):
    kubectl.apply(autoscaled_pool("burst", namespace, agent_repo.url, 3, minReplicas=3))
    eventually(lambda: sum(m["status"].get("phase") == "Ready" for m in members(kubectl, namespace, "burst")
                           if m.get("status")) == 3, 180, what="3 Ready agents")
    kubectl.run("patch", "apool", "burst", "-n", namespace, "--type=merge", "-p",
                '{"spec":{"autoscaling":{"minReplicas":0}}}')
    eventually(lambda: idle_paused(kubectl, namespace, "burst") == ["burst-0", "burst-1", "burst-2"], 120,
               what="the 3 agents paused")
    paused_ids = {s.sandbox_id for s in pool_sandboxes(e2b_client, namespace, "burst")}
    assert [str(s.state.value) for s in pool_sandboxes(e2b_client, namespace, "burst")] == ["paused"] * 3
    assert kubectl.get("agentpool", "burst", namespace)["spec"]["replicas"] == 0  # the autoscaler wrote it
    offset = e2b.log_path.stat().st_size

    kubectl.run("create", "-f", "-", input=tasks_list(60, namespace, "burst"))
    most = 0

    def drained() -> bool:
        nonlocal most
        most = max(most, len(members(kubectl, namespace, "burst")))
        phases = [(t.get("status") or {}).get("phase") for t in kubectl.items("agenttasks", namespace)]
        return phases.count("Succeeded") == 60
    eventually(drained, 300, interval=1, what="60 tasks succeeded")

    requests = e2b_requests(e2b, offset)
    first_create = next(i for i, (kind, _) in enumerate(requests) if kind == "create")
    assert {sandbox for kind, sandbox in requests[:first_create] if kind == "resume"} == paused_ids, requests
    assert [kind for kind, _ in requests].count("create") == 3  # grew to 6: only the missing 3 were created
    assert most == 6
    events = kubectl.items("events", namespace)
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == "burst"}
    assert {"ScaledUp", "AgentCreated"} <= reasons
    # Woken by the pool, or first by the dispatch of a task (whichever looked first).
    assert "AgentsWoken" in reasons or "WakingAgent" in {e["reason"] for e in events}

    # Drained: it pauses back down, and keeps every agent (the retention is 10 minutes).
    eventually(lambda: len(idle_paused(kubectl, namespace, "burst")) == 6, 180, what="all 6 agents paused")
    pool = kubectl.get("agentpool", "burst", namespace)
    assert pool["spec"]["replicas"] == 0
    assert (pool["status"]["replicas"], pool["status"]["pausedReplicas"]) == (6, 6)
    assert "AgentDeleted" not in {e["reason"] for e in kubectl.items("events", namespace)
                                  if e["involvedObject"]["name"] == "burst"}
    assert [str(s.state.value) for s in pool_sandboxes(e2b_client, namespace, "burst")] == ["paused"] * 6
    scaling = next(c for c in pool["status"]["conditions"] if c["type"] == "ScalingActive")
    assert scaling["status"] == "True" and scaling["reason"] in ("ScaledDown", "DesiredWithinRange")


def test_scale_from_zero(kubectl, namespace, operator, e2b, agent_repo):
    kubectl.apply(autoscaled_pool("cold", namespace, agent_repo.url, 0))
    eventually(lambda: (kubectl.get("agentpool", "cold", namespace).get("status") or {}).get("observedGeneration"),
               60, what="the pool seen by the operator")
    assert members(kubectl, namespace, "cold") == []

    created = time.monotonic()
    kubectl.run("create", "-f", "-", input=task_manifest("first", namespace, "hello", pool="cold"))
    eventually(lambda: (kubectl.get("agenttask", "first", namespace).get("status") or {}).get("phase")
               in ("Running", "Succeeded"), 180, interval=0.2, what="the task running")
    print(f"\nscale from zero (no agent): task created -> Running in {time.monotonic() - created:.1f}s")
    eventually(lambda: kubectl.get("agenttask", "first", namespace)["status"]["phase"] == "Succeeded", 60,
               what="the task done")
    assert [m["metadata"]["name"] for m in members(kubectl, namespace, "cold")] == ["cold-0"]

    # Paused again once idle; the next task wakes it instead of creating one.
    eventually(lambda: idle_paused(kubectl, namespace, "cold") == ["cold-0"], 120, what="cold-0 paused")
    offset = e2b.log_path.stat().st_size
    created = time.monotonic()
    kubectl.run("create", "-f", "-", input=task_manifest("second", namespace, "again", pool="cold"))
    eventually(lambda: (kubectl.get("agenttask", "second", namespace).get("status") or {}).get("phase")
               in ("Running", "Succeeded"), 120, interval=0.2, what="the task running")
    print(f"scale from zero (one paused agent): task created -> Running in {time.monotonic() - created:.1f}s")
    eventually(lambda: kubectl.get("agenttask", "second", namespace)["status"]["phase"] == "Succeeded", 60,
               what="the task done")
    assert [kind for kind, _ in e2b_requests(e2b, offset)].count("create") == 0
    assert [m["metadata"]["name"] for m in members(kubectl, namespace, "cold")] == ["cold-0"]


def test_the_api_server_checks_and_defaults_autoscaling(kubectl, crds, namespace):
    manifest = json.loads(autoscaled_pool("bad", namespace, "owner/name", 0, minReplicas=5, maxReplicas=2))
    refused = kubectl.run("create", "-f", "-", input=json.dumps(manifest), check=False)
    assert refused.returncode != 0
    assert "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas" in refused.stderr

    manifest["metadata"]["name"], manifest["spec"]["autoscaling"] = "defaults", {"maxReplicas": 3}
    manifest["spec"]["replicas"] = 0
    manifest["spec"]["paused"] = True  # nothing to run: only the stored defaults matter here
    kubectl.run("create", "-f", "-", input=json.dumps(manifest))
    stored = kubectl.get("agentpool", "defaults", namespace)["spec"]["autoscaling"]
    assert stored == {"minReplicas": 0, "maxReplicas": 3, "targetTasksPerAgent": 1, "pausedRetentionSeconds": 3600,
                      "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "maxStep": 100},
                                   "scaleDown": {"stabilizationWindowSeconds": 300, "maxStep": 100}}}
