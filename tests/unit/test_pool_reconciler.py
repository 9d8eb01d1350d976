"""PoolReconciler on the fakes: scaling with deterministic names, scale-down order, busy agents
kept, rollouts within maxUnavailable, in-place ref and pause changes."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from remote_agents.api.names import AGENTS, POOL_LABEL, POOLS, TASKS, TEMPLATE_HASH_LABEL
from remote_agents.controller.retry import RetryLater
from tests.support.faults import OperatorCrashed
from tests.support.fake_e2b import Program
from tests.support.world import NAMESPACE, REV_B, World, agent_spec

POOL = "p"


async def reconcile_pool(world: World) -> None:
    await world.operator.pools.reconcile(NAMESPACE, POOL)
    await world.kube.flush()


def members(world: World) -> list[dict]:
    return [world.agent(name) for name in world.kube.names(AGENTS, NAMESPACE, f"{POOL_LABEL}={POOL}")]


def live(world: World) -> list[str]:
    return sorted(m["metadata"]["name"] for m in members(world) if not m["metadata"].get("deletionTimestamp"))


def is_ready(agent: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               and c["observedGeneration"] == agent["metadata"]["generation"]
               for c in (agent.get("status") or {}).get("conditions") or [])


async def set_pool(world: World, **spec) -> None:
    await world.kube.patch(POOLS, NAMESPACE, POOL, {"spec": spec})


async def settle_members(world: World, ready: set[str] | None = None) -> None:
    """What Kopf would do next for the pool's agents: finish deleting those being deleted and
    reconcile the others (only those in `ready`, when given)."""
    for agent in members(world):
        name = agent["metadata"]["name"]
        if agent["metadata"].get("deletionTimestamp"):
            await world.delete_agent(name)
        elif ready is None or name in ready:
            await world.reconcile_agent(name)


async def grow_one_by_one(world: World, clock, replicas: int, ready: set[str] | None = None) -> None:
    """p-0, p-1, ... created a minute apart (so that "newest" means something), then set up."""
    await world.create_pool(POOL, 0)
    for count in range(1, replicas + 1):
        await set_pool(world, replicas=count)
        await reconcile_pool(world)
        clock.advance(60)
    await settle_members(world, ready)


async def occupy(world: World, agent: str) -> None:
    """A task that keeps running on `agent`."""
    await world.create_task(f"busy-{agent}", agent=agent)
    await world.eventually(lambda: world.status(f"busy-{agent}", TASKS).get("phase") == "Running",
                           f"a task running on {agent}")


async def test_scale_up_creates_named_owned_agents_once(world):
    pool = await world.create_pool(POOL, 3)
    await reconcile_pool(world)
    await reconcile_pool(world)  # nothing more to do

    assert live(world) == ["p-0", "p-1", "p-2"]
    for agent in members(world):
        assert agent["metadata"]["ownerReferences"][0]["uid"] == pool["metadata"]["uid"]
        assert agent["metadata"]["labels"][TEMPLATE_HASH_LABEL]
        assert agent["spec"]["source"]["ref"] == agent_spec()["source"]["ref"]
    assert world.events.reasons(POOL) == ["AgentCreated"] * 3


async def test_a_crash_mid_scale_up_leaves_no_twin(world):
    await world.create_pool(POOL, 3)
    world.kube.fail("create", OperatorCrashed(), after=True, when=lambda name, **_: name == "p-1")
    with pytest.raises(OperatorCrashed):
        await reconcile_pool(world)
    await world.restart()

    await reconcile_pool(world)

    assert live(world) == ["p-0", "p-1", "p-2"]


async def test_a_name_held_by_a_deleting_agent_is_not_reused(world):
    await world.create_pool(POOL, 2)
    await reconcile_pool(world)
    await settle_members(world)  # the finalizers are on
    await world.kube.delete(AGENTS, NAMESPACE, "p-0")  # its sandbox is still being killed

    await reconcile_pool(world)

    assert live(world) == ["p-1", "p-2"]


SCALE_DOWN = {
    # (replicas after, members not Ready, busy members) -> members left
    "the newest go first": (1, set(), set(), ["p-0"]),
    "not Ready before Ready": (2, {"p-0"}, set(), ["p-1", "p-2"]),
    "a busy agent is kept": (1, set(), {"p-2"}, ["p-2"]),
    "busy ones wait beyond the replicas": (1, set(), {"p-1", "p-2"}, ["p-1", "p-2"]),
    "to zero even busy ones go": (0, set(), {"p-2"}, []),
}


@pytest.mark.parametrize("replicas, unready, busy, left", SCALE_DOWN.values(), ids=SCALE_DOWN.keys())
async def test_scale_down_order(world, clock, replicas, unready, busy, left):
    world.e2b.programs["answer"] = Program(held=True)
    await grow_one_by_one(world, clock, 3, ready={"p-0", "p-1", "p-2"} - unready)
    world.start_task_loop()
    for agent in busy:
        await occupy(world, agent)

    await set_pool(world, replicas=replicas)
    await reconcile_pool(world)

    assert live(world) == left
    ready = next(c for c in world.status(POOL, POOLS)["conditions"] if c["type"] == "Ready")
    if len(left) > replicas:
        assert f"keeping {len(left) - replicas} busy agents" in ready["message"]


async def rollout(world: World) -> list[int]:
    """Reconcile the pool and its agents until every agent has the new template and is Ready;
    returns how many agents were unavailable after each pool round."""
    unavailable = []
    replicas = world.kube.object(POOLS, NAMESPACE, POOL)["spec"]["replicas"]
    for _ in range(20):
        await reconcile_pool(world)
        await reconcile_pool(world)  # poked again before the replacements are Ready: no more goes
        ready = [m for m in members(world) if is_ready(m) and not m["metadata"].get("deletionTimestamp")]
        unavailable.append(replicas - len(ready))
        hashes = {m["metadata"]["labels"][TEMPLATE_HASH_LABEL] for m in members(world)}
        if len(ready) == replicas == len(members(world)) and len(hashes) == 1 and unavailable[-1] == 0 \
                and world.status(POOL, POOLS).get("updatedReplicas") == replicas:
            return unavailable
        await settle_members(world)
    raise AssertionError(f"the rollout did not finish: unavailable per round {unavailable}")


ROLLOUTS = {
    # maxUnavailable -> agents replaced per round
    "one at a time": (1, 1),
    "two at a time": (2, 2),
    "a percentage": ("50%", 2),
    "a percentage rounds down but never to zero": ("10%", 1),
}


@pytest.mark.parametrize("max_unavailable, per_round", ROLLOUTS.values(), ids=ROLLOUTS.keys())
async def test_a_rollout_stays_within_max_unavailable(world, max_unavailable, per_round):
    await world.create_pool(POOL, 4, updateStrategy={"maxUnavailable": max_unavailable})
    await reconcile_pool(world)
    await settle_members(world)
    old_hash = members(world)[0]["metadata"]["labels"][TEMPLATE_HASH_LABEL]

    await set_pool(world, template={"spec": agent_spec(template="gpu")})
    unavailable = await rollout(world)

    assert max(unavailable) == per_round  # used the budget, never more
    assert len(unavailable) == 4 // per_round + 1
    assert all(m["metadata"]["labels"][TEMPLATE_HASH_LABEL] != old_hash for m in members(world))
    status = world.status(POOL, POOLS)
    assert (status["readyReplicas"], status["updatedReplicas"]) == (4, 4)
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["reason"] == "AllAgentsReady"


STRATEGIES = {
    # updateStrategy -> whether a busy outdated agent is replaced at once
    "RollingUpdate keeps a busy agent until its task ends": ({"maxUnavailable": 3}, False),
    "Recreate replaces it": ({"type": "Recreate"}, True),
}


@pytest.mark.parametrize("strategy, replaced", STRATEGIES.values(), ids=STRATEGIES.keys())
async def test_busy_outdated_agents_in_a_rollout(world, strategy, replaced):
    world.e2b.programs["answer"] = Program(held=True)
    await world.create_pool(POOL, 3, updateStrategy=strategy)
    await reconcile_pool(world)
    await settle_members(world)
    world.start_task_loop()
    await occupy(world, "p-1")

    await set_pool(world, template={"spec": agent_spec(template="gpu")})
    await reconcile_pool(world)

    deleting = {m["metadata"]["name"] for m in members(world) if m["metadata"].get("deletionTimestamp")}
    assert deleting == ({"p-0", "p-1", "p-2"} if replaced else {"p-0", "p-2"})


async def test_rejected_agents_stall_the_pool(world):
    await world.create_pool(POOL, 2)
    world.kube.fail("create", ApiException(status=422, reason="Invalid"))
    with pytest.raises(RetryLater) as retry:
        await reconcile_pool(world)
    assert retry.value.delay == 300  # a human has to fix the template: no hurry
    conditions = {c["type"]: c for c in world.status(POOL, POOLS)["conditions"]}
    assert (conditions["Ready"]["reason"], conditions["Stalled"]["status"]) == ("AgentsRejected", "True")


async def test_ref_and_pause_changes_are_applied_in_place(world):
    await world.create_pool(POOL, 2)
    await reconcile_pool(world)
    await settle_members(world)
    before = {m["metadata"]["name"]: m["metadata"]["uid"] for m in members(world)}

    await set_pool(world, paused=True, template={"spec": agent_spec(source={"repo": agent_spec()["source"]["repo"],
                                                                                "ref": REV_B})})
    await reconcile_pool(world)

    assert {m["metadata"]["name"]: m["metadata"]["uid"] for m in members(world)} == before
    assert all(m["spec"]["paused"] and m["spec"]["source"]["ref"] == REV_B for m in members(world))
