"""An autoscaled AgentPool on the fakes: replicas written through /scale from the queue, paused
agents woken before any create, idle ones paused (never deleted before their retention, never
with a session or a task), scale from zero, the budget (counted once across restarts), Events,
conditions and metrics."""

from __future__ import annotations

import asyncio
from collections import Counter

from remote_agents.api.names import AGENTS, POOLS, TASKS
from remote_agents.controller import metrics
from remote_agents.controller.pools import reconcile as pool_reconcile
from tests.support.fake_e2b import Program
from tests.support.world import NAMESPACE, World
from tests.unit.test_pool_reconciler import POOL, live, members, reconcile_pool, set_pool, settle_members

SCALING = {"minReplicas": 0, "maxReplicas": 6, "pausedRetentionSeconds": 600,
           "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}


def pool(world: World) -> dict:
    return world.kube.object(POOLS, NAMESPACE, POOL)


def condition(world: World, kind: str) -> dict:
    return next(c for c in world.status(POOL, POOLS)["conditions"] if c["type"] == kind)


def paused(world: World) -> list[str]:
    return sorted(m["metadata"]["name"] for m in members(world) if (m.get("status") or {}).get("idlePaused"))


async def round_trip(world: World) -> None:
    """The pool decides, its agents carry it out, the pool counts again (what the pokes do)."""
    await reconcile_pool(world)
    await settle_members(world)
    await reconcile_pool(world)


async def three_paused_agents(world: World, **scaling) -> None:
    """Three agents made at minReplicas 3, then paused by lowering minReplicas to 0."""
    await world.create_pool(POOL, 3, autoscaling={**SCALING, **scaling, "minReplicas": 3})
    await round_trip(world)
    assert [m["status"]["phase"] for m in members(world)] == ["Ready"] * 3
    await set_pool(world, autoscaling={"minReplicas": 0})
    await round_trip(world)
    assert paused(world) == ["p-0", "p-1", "p-2"]


async def test_idle_agents_are_paused_not_deleted(world):
    await three_paused_agents(world)

    assert pool(world)["spec"]["replicas"] == 0  # written through /scale
    assert live(world) == ["p-0", "p-1", "p-2"]
    assert [s.state for s in world.e2b.sandboxes.values()] == ["paused"] * 3
    status = world.status(POOL, POOLS)
    assert (status["replicas"], status["pausedReplicas"], status["queuedTasks"]) == (3, 3, 0)
    assert condition(world, "Ready")["status"] == "True"
    assert condition(world, "ScalingActive")["reason"] == "DesiredWithinRange"
    assert {"ScaledDown", "AgentsPaused"} <= set(world.events.reasons(POOL))
    assert metrics.registry.get_sample_value("remote_agents_pool_replicas", {
        "namespace": NAMESPACE, "pool": POOL, "kind": "paused"}) == 3


async def test_paused_agents_are_woken_before_any_create(world):
    await three_paused_agents(world)
    for i in range(10):
        await world.create_task(f"t-{i}", pool=POOL)

    await reconcile_pool(world)

    assert pool(world)["spec"]["replicas"] == 6
    assert paused(world) == []  # all three woken at once
    assert world.e2b.count("create") == 3 and live(world) == ["p-0", "p-1", "p-2"]  # no create yet
    assert "3 to create once the woken agents run" in condition(world, "Ready")["message"]
    world.operator.refresh_metrics()  # (at scrape time)
    assert metrics.registry.get_sample_value("remote_agents_pool_queued_tasks",
                                             {"namespace": NAMESPACE, "pool": POOL}) == 10

    await settle_members(world)  # the woken agents resume
    await round_trip(world)  # now the pool grows

    assert live(world) == [f"p-{i}" for i in range(6)]
    operations = [op for op, _ in world.e2b.calls if op in ("create", "resume")]
    assert operations == ["create"] * 3 + ["resume"] * 3 + ["create"] * 3
    reasons = world.events.reasons(POOL)
    assert reasons.index("AgentsWoken") < max(i for i, r in enumerate(reasons) if r == "AgentCreated")
    assert condition(world, "Ready")["status"] == "True"
    assert condition(world, "ScalingActive")["reason"] == "DesiredWithinRange"


async def test_drained_pool_pauses_and_deletes_only_after_the_retention(world, clock):
    world.e2b.programs["answer"] = Program(stdout="42\n")
    await three_paused_agents(world)
    await world.create_task("t-0", pool=POOL)
    await round_trip(world)
    world.start_task_loop()
    await world.eventually(lambda: world.status("t-0", TASKS).get("phase") == "Succeeded", "the task done")
    # The task loop lets go of the run after its finish write: until then p-0 counts as busy.
    await world.eventually(lambda: not +world.operator.tasks.running_counts(), "the run let go of")
    await world.kube.patch_status(AGENTS, NAMESPACE, "p-0", {"activeTasks": 0})  # as the mirror would

    await round_trip(world)
    assert paused(world) == ["p-0", "p-1", "p-2"]

    clock.advance(599)
    await round_trip(world)
    assert live(world) == ["p-0", "p-1", "p-2"]  # not before the retention

    clock.advance(2)
    await round_trip(world)
    assert "p-1" not in live(world) and "p-2" not in live(world)  # paused 601 s and more: gone
    assert any("paused longer than 600s" in e.message for e in world.events.events if e.reason == "AgentDeleted")


async def test_an_agent_holding_a_session_is_never_deleted(world, clock):
    await three_paused_agents(world)
    # An unfinished task of a session on p-1 (as the sessions' dispatch records it).
    await world.create_task("chat", agent="p-1", session="s-1", status={"phase": "Pending", "agent": "p-1"})
    clock.advance(10_000)
    await round_trip(world)
    assert live(world) == ["p-1"]


async def test_scale_from_zero_creates_one_agent_for_one_task(world):
    await world.create_pool(POOL, 0, autoscaling=SCALING)
    await reconcile_pool(world)
    assert live(world) == []

    await world.create_task("first", pool=POOL)
    await reconcile_pool(world)

    assert pool(world)["spec"]["replicas"] == 1 and live(world) == ["p-0"]
    assert "ScaledUp" in world.events.reasons(POOL)


async def test_scale_from_zero_wakes_one_paused_agent(world):
    await three_paused_agents(world)
    await world.create_task("first", pool=POOL)
    await reconcile_pool(world)
    assert len(paused(world)) == 2 and world.e2b.count("create") == 3


async def test_a_settled_pool_writes_nothing(world):
    await three_paused_agents(world)
    version = pool(world)["metadata"]["resourceVersion"]
    await reconcile_pool(world)
    await reconcile_pool(world)
    assert pool(world)["metadata"]["resourceVersion"] == version


async def test_the_budget_stops_the_pool_and_counts_once_across_restarts(world, clock):
    await world.create_pool(POOL, 2, autoscaling={**SCALING, "minReplicas": 2, "budget": {"agentSecondsPerDay": 100}})
    await round_trip(world)
    assert world.status(POOL, POOLS)["budget"]["runningAgents"] == 2
    assert condition(world, "BudgetExhausted")["status"] == "False"

    clock.advance(60)  # 2 agents x 60 s = 120 agent-seconds
    await world.create_task("more", pool=POOL)
    await round_trip(world)

    budget = world.status(POOL, POOLS)["budget"]
    assert budget["usedAgentSeconds"] == 120
    assert condition(world, "BudgetExhausted")["status"] == "True"
    assert paused(world) == ["p-0", "p-1"] and live(world) == ["p-0", "p-1"]  # paused, none created
    assert world.events.reasons(POOL).count("BudgetExhausted") == 1

    await world.restart()
    await reconcile_pool(world)
    assert world.status(POOL, POOLS)["budget"]["usedAgentSeconds"] == 120  # nothing counted twice
    assert world.status(POOL, POOLS)["budget"]["runningAgents"] == 0
    assert world.events.reasons(POOL).count("BudgetExhausted") == 1
    assert paused(world) == ["p-0", "p-1"]  # the queued task wakes nothing


async def test_the_autoscale_loop_follows_the_queue(world, monkeypatch):
    monkeypatch.setattr(pool_reconcile, "AUTOSCALE_SECONDS", 0.01)
    await world.create_pool(POOL, 0, autoscaling=SCALING)
    await reconcile_pool(world)  # as Kopf's handler does first: from now on the loop looks after it
    asyncio.get_running_loop().create_task(world.operator.pools.autoscale())

    await world.create_task("first", pool=POOL)

    await world.eventually(lambda: live(world) == ["p-0"], "the pool grown by the queue alone")
    assert pool(world)["spec"]["replicas"] == 1


async def test_a_paused_autoscaled_pool_keeps_its_members(world):
    await three_paused_agents(world)
    await world.create_task("waits", pool=POOL)
    await set_pool(world, paused=True)
    await round_trip(world)
    assert live(world) == ["p-0", "p-1", "p-2"] and world.e2b.count("create") == 3
    assert all(m["spec"]["paused"] for m in members(world))
    assert pool(world)["spec"]["replicas"] == 0  # not autoscaled while paused


async def test_an_agent_handed_a_task_during_the_round_is_not_paused(world):
    await world.create_pool(POOL, 2, autoscaling={**SCALING, "minReplicas": 2})
    await round_trip(world)
    await set_pool(world, autoscaling={"minReplicas": 0})
    looks = iter([Counter(), Counter({(NAMESPACE, "p-0"): 1})])  # idle when read, busy just before the pause
    world.operator.pools.running_counts = lambda: next(looks, Counter({(NAMESPACE, "p-0"): 1}))

    await reconcile_pool(world)

    assert paused(world) == ["p-1"]


async def test_a_task_being_claimed_is_demand_once(world):
    task = await world.create_task("first", pool=POOL)
    assert world.operator.tasks.queued(NAMESPACE, POOL) == 1
    world.operator.tasks.scheduler.starting[task["metadata"]["uid"]] = (NAMESPACE, "p-0")  # counted as running now
    assert world.operator.tasks.queued(NAMESPACE, POOL) == 0
    assert world.operator.tasks.running_counts()[(NAMESPACE, "p-0")] == 1
