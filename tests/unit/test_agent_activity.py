"""Idle pausing on the fakes, the task loop running: an agent idle for its idlePauseSeconds is
paused (by its reconcile), and the next task for it wakes it and runs."""

from __future__ import annotations

from remote_agents.api.names import AGENTS, RECONCILE_REQUEST_ANNOTATION, TASKS
from tests.support.fake_e2b import Program
from tests.support.world import NAMESPACE, World


def sandbox(world: World):
    return world.e2b.sandboxes[world.status("a")["sandboxID"]]


def reconcile_requested(world: World) -> bool:
    return RECONCILE_REQUEST_ANNOTATION in (world.agent("a")["metadata"].get("annotations") or {})


async def test_an_idle_agent_is_paused_and_the_next_task_wakes_it(world):
    world.e2b.programs["answer"] = Program(stdout="42\n")
    await world.ready_agent("a", idlePauseSeconds=60)
    world.start_task_loop()

    await world.eventually(lambda: world.status("a").get("idlePaused") and reconcile_requested(world),
                           "the agent marked idle", creep=5)
    await world.reconcile_agent("a")  # the requested reconcile
    assert sandbox(world).state == "paused"
    assert next(c for c in world.status("a")["conditions"] if c["type"] == "Ready")["reason"] == "IdlePaused"

    await world.kube.patch(AGENTS, NAMESPACE, "a", {"metadata": {"annotations": {RECONCILE_REQUEST_ANNOTATION: None}}})
    await world.create_task("t", agent="a")
    await world.eventually(lambda: world.status("a").get("idlePaused") is False and reconcile_requested(world),
                           "the agent woken")
    assert "WakingAgent" in world.events.reasons("t")
    await world.reconcile_agent("a")

    await world.eventually(lambda: world.status("t", TASKS).get("phase") == "Succeeded", "the task ran")
    assert sandbox(world).state == "running"


async def test_a_reconcile_that_read_the_agent_before_its_wake_leaves_the_woken_task_running(world):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a", idlePauseSeconds=60)
    world.start_task_loop()
    await world.eventually(lambda: world.status("a").get("idlePaused") and reconcile_requested(world),
                           "the agent marked idle", creep=5)
    # Another reconcile asked for before the wake (say, by the fleet's drift check) gets this body.
    before_the_wake = world.agent("a")
    await world.reconcile_agent("a")
    await world.create_task("t", agent="a")
    [process] = await world.eventually(lambda: [p for p in world.e2b.processes if p.running], "the woken task's run")
    assert sandbox(world).state == "running"  # its start call resumed the sandbox

    await world.operator.agents.reconcile(before_the_wake)

    assert sandbox(world).state == "running" and world.e2b.count("pause") == 1  # the run is not frozen
    process.end()
    await world.eventually(lambda: world.status("t", TASKS).get("phase") == "Succeeded", "the task ran")
