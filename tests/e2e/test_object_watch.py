"""The AgentTask stream (controller/object_watch.py) against the real API server, no operator."""

from __future__ import annotations

import asyncio

import kubernetes

from remote_agents.controller.clients.kube import Kube, api_path
from remote_agents.controller.clients.watch import ObjectWatch
from tests.e2e.test_agent_task import task_manifest


async def until(check, what: str, timeout: float = 30):
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_stream_lists_then_follows_tasks_and_a_relist_reports_the_vanished(cluster, crds, kubectl, namespace):
    kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig))
    kube = Kube()
    events: list[tuple[str | None, str]] = []
    bodies: dict[str, dict] = {}

    def deliver(kind, body):
        name = body["metadata"].get("name", body["metadata"]["uid"])
        events.append((kind, name))
        bodies[name] = body

    await asyncio.to_thread(kubectl.apply, task_manifest("before", namespace, "q", pool="p"))
    watch = ObjectWatch(kube, "agenttasks", (namespace,), deliver)
    watch.start(asyncio.get_running_loop())
    try:
        await until(lambda: (None, "before") in events, "the listed task")
        await asyncio.to_thread(kubectl.apply, task_manifest("after", namespace, "q", pool="p"))
        await until(lambda: ("ADDED", "after") in events, "the created task")
        await asyncio.to_thread(kubectl.run, "label", "agenttask", "after", "seen=yes", "-n", namespace)
        await until(lambda: ("MODIFIED", "after") in events, "the labelled task")
        assert bodies["after"]["metadata"]["labels"] == {"seen": "yes"}
        await asyncio.to_thread(kubectl.run, "delete", "agenttask", "before", "-n", namespace)
        await until(lambda: ("DELETED", "before") in events, "the deleted task")

        # What a relist after a lost watch does: objects gone meanwhile come as deleted (by uid).
        events.clear()
        known = {"uid-of-a-task-deleted-unseen", bodies["after"]["metadata"]["uid"]}
        listed, version = await asyncio.to_thread(watch._relist, api_path("agenttasks", namespace, ours=True), known,
                                                  asyncio.get_running_loop())
        await until(lambda: len(events) == 2, "the relist's events")
        assert events == [("DELETED", "uid-of-a-task-deleted-unseen"), (None, "after")]
        assert listed == {bodies["after"]["metadata"]["uid"]} and version.isdigit()
    finally:
        watch.stop()
