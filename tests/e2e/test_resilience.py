"""Faults the operator must ride out: repeated SIGKILLs while scaling, orphaned sandboxes, and
restarts of the kube-apiserver and of the sandbox backend. Bounded in time; no timing asserts."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import urllib.request
from pathlib import Path

from e2b import Sandbox

from remote_agents_local.cluster import control_plane
from remote_agents_local.e2b_local import launcher
from tests.e2e.test_agent_pool import members, pool_manifest, pool_sandboxes, wait_pool_ready
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.kubectl import eventually


def test_ten_sigkills_during_a_scale_to_50_leave_exactly_50_sandboxes(kubectl, namespace, operator, e2b_client,
                                                                        agent_repo):
    kubectl.apply(pool_manifest("storm", namespace, agent_repo.url, 0))
    kubectl.run("scale", "agentpool/storm", "-n", namespace, "--replicas=50")
    rng = random.Random(20261126)
    for _ in range(10):
        time.sleep(rng.uniform(0.5, 3.0))
        operator.kill()
        operator.start()
    pool = wait_pool_ready(kubectl, "storm", namespace, timeout=400)
    assert pool["status"]["readyReplicas"] == 50
    time.sleep(3)  # a late duplicate would show up now
    agents = members(kubectl, namespace, "storm")
    sandboxes = pool_sandboxes(e2b_client, namespace, "storm")
    assert len(agents) == 50 and len(sandboxes) == 50
    assert {s.metadata["remoteagents.io/uid"] for s in sandboxes} == {a["metadata"]["uid"] for a in agents}


def test_orphans_are_swept_but_orphaned_by_policy_are_kept(kubectl, namespace, operator, e2b, e2b_client,
                                                           agent_repo):
    cluster_id = kubectl.get("namespace", "kube-system")["metadata"]["uid"]
    ghost = Sandbox.create(metadata={"remoteagents.io/cluster": cluster_id, "remoteagents.io/uid": "ghost-uid",
                                     "remoteagents.io/namespace": namespace, "remoteagents.io/name": "ghost"},
                           **e2b_client.opts)
    kubectl.apply(agent_manifest("keeper", namespace, agent_repo.url, deletionPolicy="Orphan"))
    kept = wait_ready(kubectl, "keeper", namespace)["status"]["sandboxID"]
    kubectl.run("delete", "ra", "keeper", "-n", namespace, "--timeout=60s")

    eventually(lambda: e2b_client.by_uid("ghost-uid") == [], 60, what="the orphan to be swept")
    assert ghost.sandbox_id not in {s.sandbox_id for s in e2b_client.sandboxes()}
    assert "killing orphaned sandbox" in operator.log()

    def metrics() -> str:
        with urllib.request.urlopen(f"{operator.metrics_url}/metrics", timeout=5) as response:
            return response.read().decode()
    # Counted once the kill call has returned to the operator, which may be after e2b-local's list
    # no longer shows the sandbox.
    eventually(lambda: "remote_agents_orphan_sandboxes_killed_total 1.0" in metrics(), 10,
               what="the kill counted")
    time.sleep(10)  # longer than the grace period plus a health interval
    assert kept in {s.sandbox_id for s in e2b_client.sandboxes()}, "a sandbox orphaned by policy was killed"
    events = json.loads(kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert "SandboxOrphaned" in {e["reason"] for e in events}


def test_apiserver_and_sandbox_backend_restarts_are_survived(cluster, kubectl, namespace, operator, e2b,
                                                             e2b_client, agent_repo, tmp_path):
    kubectl.apply(agent_manifest("dozer", namespace, agent_repo.url, paused=True))
    eventually(lambda: (kubectl.get("ra", "dozer", namespace).get("status") or {}).get("phase") == "Paused", 60,
               what="agent paused")
    paused_id = kubectl.get("ra", "dozer", namespace)["status"]["sandboxID"]

    # The kube-apiserver dies mid-run; the control plane comes back on the same ports.
    os.kill(cluster.pids["kube-apiserver"], signal.SIGKILL)
    restarted = control_plane.up(Path(cluster.state_dir))
    assert restarted.api_port == cluster.api_port
    cluster.pids.update(restarted.pids)
    kubectl.apply(agent_manifest("after-apiserver", namespace, agent_repo.url))
    wait_ready(kubectl, "after-apiserver", namespace, timeout=180)

    # The sandbox backend restarts on the same state and port.
    port = int(e2b.api_url.rsplit(":", 1)[1])
    e2b.stop()
    fresh = launcher.start(e2b.state_dir, port=port, extra_args=["--max-running", "500"])
    e2b.process = fresh.process  # the module's fixture stops whichever process runs last
    assert str(e2b_client.info(paused_id).state.value) == "paused"
    kubectl.apply(agent_manifest("after-e2b", namespace, agent_repo.url))
    wait_ready(kubectl, "after-e2b", namespace, timeout=180)
    kubectl.run("patch", "ra", "dozer", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":false}}')
    eventually(lambda: kubectl.get("ra", "dozer", namespace)["status"].get("phase") == "Ready", 90,
               what="the paused agent resumed after the restarts")
    assert kubectl.get("ra", "dozer", namespace)["status"]["sandboxID"] == paused_id
    assert operator.process.poll() is None, "the operator died instead of recovering"
