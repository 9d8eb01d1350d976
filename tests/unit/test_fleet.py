"""Fleet on the fakes: one fleet-wide E2B list finds agents that drifted (and only asks for their
reconcile), kills sandboxes of this cluster whose object is gone only after the grace, refreshes
timeouts; a push pokes the agents behind on that branch."""

from __future__ import annotations

import pytest

from remote_agents.api.names import (
    AGENTS, PUSHED_REVISION_ANNOTATION, RECONCILE_REQUEST_ANNOTATION, SANDBOX_CLUSTER_KEY, SANDBOX_NAME_KEY,
    SANDBOX_NAMESPACE_KEY, SANDBOX_UID_KEY,
)
from remote_agents.controller.sources.repos import repo_key
from remote_agents.controller.sources.webhook import PushEvent
from tests.support.world import CLUSTER, NAMESPACE, REPO, REV_A, REV_B, World

GRACE = 300  # the world's orphan_grace_seconds


def requested(world: World, name: str, annotation: str = RECONCILE_REQUEST_ANNOTATION) -> str | None:
    return (world.agent(name)["metadata"].get("annotations") or {}).get(annotation)


def sandbox_of(world: World, name: str):
    return world.e2b.sandboxes[world.status(name)["sandboxID"]]


async def check(world: World) -> None:
    await world.kube.flush()  # the fleet's view is the watch's: up to date first
    await world.operator.fleet.check_sandboxes()
    await world.kube.flush()


async def lose(world: World, name: str) -> None:
    world.e2b.lose(world.status(name)["sandboxID"])


async def add_twin(world: World, name: str) -> None:
    world.e2b.add(dict(sandbox_of(world, name).metadata))


async def pause_in_e2b(world: World, name: str) -> None:
    sandbox_of(world, name).state = "paused"


async def resume_in_e2b(world: World, name: str) -> None:
    sandbox_of(world, name).state = "running"


async def change_template(world: World, name: str) -> None:
    await world.update_agent(name, template="gpu")


async def delete_and_lose(world: World, name: str) -> None:
    await world.kube.delete(AGENTS, NAMESPACE, name)  # its finalizer holds it: being deleted
    world.e2b.lose(world.status(name)["sandboxID"])


DRIFT = {
    # (agent spec, what happens) -> whether a reconcile is requested
    "in step": ({}, None, False),
    "its sandbox is lost": ({}, lose, True),
    "a duplicate appeared": ({}, add_twin, True),
    "paused in E2B while it should run": ({}, pause_in_e2b, True),
    "running in E2B while it should be paused": ({"paused": True}, resume_in_e2b, True),
    "paused as it should be": ({"paused": True}, None, False),
    "its config changed": ({}, change_template, True),
    "being deleted": ({}, delete_and_lose, False),
    "its own E2B account (not in the list)": ({"e2bApiKeySecretRef": {"name": "e2b", "key": "k"}}, lose, False),
}


@pytest.mark.parametrize("spec, happening, wanted", DRIFT.values(), ids=DRIFT.keys())
async def test_drift_requests_a_reconcile_and_never_kills(world, spec, happening, wanted):
    world.kube.add_secret(NAMESPACE, "e2b", {"k": "e2b_own_key"})
    await world.ready_agent("a", **spec)
    if happening:
        await happening(world, "a")

    await check(world)

    assert bool(requested(world, "a")) == wanted
    assert world.e2b.killed == []


def tagged(uid: str, cluster: str = CLUSTER) -> dict[str, str]:
    return {SANDBOX_UID_KEY: uid, SANDBOX_CLUSTER_KEY: cluster, SANDBOX_NAMESPACE_KEY: NAMESPACE,
            SANDBOX_NAME_KEY: "gone"}


ORPHANS = {
    # whose sandbox -> killed once the grace is over
    "of this cluster, its object gone": ("gone-uid", CLUSTER, False, True),
    "of another cluster": ("gone-uid", "another-cluster", False, False),
    "left running by deletionPolicy Orphan": ("gone-uid", CLUSTER, True, False),
    "of an agent that exists": (None, CLUSTER, False, False),
}


@pytest.mark.parametrize("uid, cluster, released, killed", ORPHANS.values(), ids=ORPHANS.keys())
async def test_orphans_are_killed_only_after_the_grace(world, clock, uid, cluster, released, killed):
    await world.ready_agent("a")
    sandbox = world.e2b.add(tagged(uid or world.agent("a")["metadata"]["uid"], cluster))
    if released:
        await world.kube.record_orphan(NAMESPACE, sandbox.sandbox_id, "gone")

    await check(world)
    clock.advance(GRACE - 1)
    await check(world)
    assert world.e2b.killed == []  # the grace covers objects not seen yet (an operator starting up)
    clock.advance(1)
    await check(world)

    assert world.e2b.killed == ([sandbox.sandbox_id] if killed else [])


REFRESHES = {
    # (state, seconds left of its 3600) -> refreshed
    "running, less than half left": ("running", 1000, True),
    "running, more than half left": ("running", 2000, False),
    "paused": ("paused", 1000, False),
}


@pytest.mark.parametrize("state, left, refreshed", REFRESHES.values(), ids=REFRESHES.keys())
async def test_timeouts_are_refreshed_at_half_time(world, clock, state, left, refreshed):
    await world.ready_agent("a", paused=state == "paused")
    sandbox = sandbox_of(world, "a")
    sandbox.end_at = before = clock.time() + left

    await check(world)

    assert world.e2b.count("set_timeout") == int(refreshed)
    if refreshed:
        assert sandbox.end_at >= clock.time() + 3600 - 1  # the agent's whole sandboxTimeoutSeconds again
    else:
        assert sandbox.end_at == before


async def tracking(world: World, name: str, repo: str = REPO, ref: str = "main", revision: str = REV_A) -> None:
    """An agent on a branch, at `revision` (as its reconcile would have recorded)."""
    await world.create_agent(name, source={"repo": repo, "ref": ref})
    await world.kube.patch_status(AGENTS, NAMESPACE, name, {"revision": revision, "sandboxID": "sb-x"})
    await world.kube.flush()


PUSHES = {
    # the other agent's source (repo, ref, revision) -> poked by a push of REV_B to main of REPO
    "behind on the branch": ((REPO, "main", REV_A), True),
    "already at the commit": ((REPO, "main", REV_B), False),
    "another branch": ((REPO, "dev", REV_A), False),
    "another repository": (("file:///srv/other.git", "main", REV_A), False),
}


@pytest.mark.parametrize("source, poked", PUSHES.values(), ids=PUSHES.keys())
async def test_a_push_pokes_the_agents_behind_on_its_branch(world, source, poked):
    await tracking(world, "control")  # behind on main: always poked
    await tracking(world, "other", *source)

    matched = await world.operator.fleet.on_push(PushEvent(frozenset({repo_key(REPO)}), "main", REV_B, "delivery-1"))

    await world.eventually(lambda: requested(world, "control", PUSHED_REVISION_ANNOTATION), "the control poked")
    assert requested(world, "control", PUSHED_REVISION_ANNOTATION) == REV_B
    assert bool(requested(world, "other")) == poked
    assert matched == 1 + (source[:2] == (REPO, "main"))
