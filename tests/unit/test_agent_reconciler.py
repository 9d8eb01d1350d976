"""AgentReconciler on the fakes: whatever crashed where, an agent ends with one sandbox, its code
checked out and its status saying so; sandboxes die only for a reason (duplicate, config change,
deletion)."""

from __future__ import annotations

import pytest

from remote_agents.api.models import RemoteAgentSpec
from remote_agents.api.names import (
    SANDBOX_CLUSTER_KEY, SANDBOX_CONFIG_KEY, SANDBOX_NAME_KEY, SANDBOX_NAMESPACE_KEY, SANDBOX_UID_KEY,
)
from remote_agents.controller.agents import decide
from remote_agents.controller.agents.decide import AGENT_HOME
from remote_agents.controller.clients.e2b import E2BAuthFailed, E2BUnavailable, SandboxGone
from remote_agents.controller.redaction import MARKER
from remote_agents.controller.retry import RetryLater
from tests.support.faults import OperatorCrashed
from tests.support.fake_e2b import FakeSandbox
from tests.support.world import CLUSTER, NAMESPACE, REV_A, REV_B, World, agent_spec

SETUP = "make setup"


def uid(world: World, name: str) -> str:
    return world.agent(name)["metadata"]["uid"]


def tags(world: World, name: str, **spec) -> dict[str, str]:
    """The metadata the operator puts on an agent's sandbox (its config hash for `spec`)."""
    return {SANDBOX_UID_KEY: uid(world, name), SANDBOX_CLUSTER_KEY: CLUSTER, SANDBOX_NAMESPACE_KEY: NAMESPACE,
            SANDBOX_NAME_KEY: name,
            SANDBOX_CONFIG_KEY: decide.config_hash(RemoteAgentSpec.model_validate(agent_spec(**spec)))}


def converged(world: World, name: str, revision: str = REV_A, phase: str = "Ready",
              state: str = "running") -> FakeSandbox:
    """Assert the agent has one sandbox, at `revision`, that its status names; returns it."""
    sandboxes = world.e2b.of(uid(world, name))
    assert len(sandboxes) == 1, f"{name} has {len(sandboxes)} sandboxes"
    sandbox, status = sandboxes[0], world.status(name)
    assert (status.get("phase"), status.get("sandboxID"), status.get("revision")) == \
           (phase, sandbox.sandbox_id, revision)
    assert sandbox.head(AGENT_HOME) == revision
    assert sandbox.state == state
    return sandbox


def condition(world: World, name: str, kind: str) -> dict:
    return next(c for c in world.status(name)["conditions"] if c["type"] == kind)


async def test_a_new_agent_gets_a_sandbox_with_its_code_set_up(world):
    world.e2b.script(SETUP)
    await world.ready_agent("a", setup=[SETUP], env=[{"name": "MODE", "value": "fast"}])
    sandbox = converged(world, "a")
    assert sandbox.metadata == tags(world, "a", setup=[SETUP], env=[{"name": "MODE", "value": "fast"}])
    setup = sandbox.commands[-1]
    assert (setup.command, setup.cwd, setup.envs) == (SETUP, AGENT_HOME, {"MODE": "fast"})
    assert condition(world, "a", "Ready")["status"] == "True"
    assert world.events.reasons("a") == ["SandboxCreated", "CodeUpdated"]


def _status_says(text: str):
    return lambda body, **_: text in (body.get("message") or "")


def _running(text: str):
    return lambda command, **_: text in command


CRASHES = {
    "before the create": ("e2b", "create", {}),
    "after the create, before its status": ("e2b", "create", {"after": True}),
    "after the Creating status, before the create": ("kube", "patch_status",
                                                     {"after": True, "when": _status_says("creating the sandbox")}),
    "after the sandbox id is recorded": ("kube", "patch_status",
                                         {"after": True, "when": _status_says("checking out the code")}),
    "before the checkout": ("e2b", "run", {"when": _running("git checkout")}),
    "after the checkout, before setup": ("e2b", "run", {"after": True, "when": _running("git checkout")}),
    "after setup, before its status": ("e2b", "run", {"after": True, "when": _running(SETUP)}),
    "after the revision is recorded, before Ready": ("kube", "patch_status",
                                                     {"after": True, "when": _status_says("code is up to date")}),
}


@pytest.mark.parametrize("fake, operation, options", CRASHES.values(), ids=CRASHES.keys())
async def test_a_restarted_operator_adopts_what_a_crash_left(world, fake, operation, options):
    world.e2b.script(SETUP)
    getattr(world, fake).fail(operation, OperatorCrashed(), **options)
    await world.create_agent("a", setup=[SETUP])
    with pytest.raises(OperatorCrashed):
        await world.reconcile_agent("a")
    await world.restart()

    await world.reconcile_agent("a")

    sandbox = converged(world, "a")
    assert sandbox.commands[-1].command == SETUP  # set up after the last checkout
    assert world.e2b.killed == []  # nothing to kill: the one sandbox was adopted, not replaced


async def test_a_lost_create_answer_is_retried_with_the_same_idempotency_key(world):
    world.e2b.fail("create", E2BUnavailable("timed out"), after=True)  # E2B made it; the answer never came
    await world.create_agent("a")
    with pytest.raises(RetryLater):
        await world.reconcile_agent("a")
    assert condition(world, "a", "Reconciling")["reason"] == "E2BUnavailable"
    [made] = world.e2b.of(uid(world, "a"))
    world.e2b.unlisted.add(made.sandbox_id)  # E2B's list lags behind: the retry cannot see it

    await world.reconcile_agent("a")

    assert converged(world, "a") is made
    assert world.e2b.count("create") == 2 and not world.e2b.gone


DUPLICATES = {
    # extra sandboxes (started, config of spec) -> which one is kept; "recorded" is the agent's own
    "the recorded one beats an older twin": ([(-100, {})], "recorded"),
    "no record: the oldest": ([(-50, {}), (-100, {})], 1),
    "no record: a current config beats an older stale one": ([(-50, {}), (-100, {"template": "old"})], 0),
}


@pytest.mark.parametrize("extra, keeper", DUPLICATES.values(), ids=DUPLICATES.keys())
async def test_duplicate_sandboxes_are_killed_but_one(world, clock, extra, keeper):
    if keeper == "recorded":
        await world.ready_agent("a")
        recorded = world.status("a")["sandboxID"]
    else:
        await world.create_agent("a")
    added = [world.e2b.add(tags(world, "a", **spec), started_at=clock.time() + started) for started, spec in extra]
    kept = recorded if keeper == "recorded" else added[keeper].sandbox_id

    await world.reconcile_agent("a")

    assert converged(world, "a").sandbox_id == kept
    assert sorted(world.e2b.killed) == sorted(s.sandbox_id for s in added if s.sandbox_id != kept)
    assert "SandboxKilled" in world.events.reasons("a")


async def test_a_lost_sandbox_is_recreated_from_git(world):
    await world.ready_agent("a")
    lost = world.status("a")["sandboxID"]
    world.e2b.lose(lost)

    await world.reconcile_agent("a")

    assert converged(world, "a").sandbox_id != lost
    assert world.e2b.killed == []
    assert ("Warning", "SandboxLost") in [(e.type, e.reason) for e in world.events.events]


PAUSING = {
    # (spec.paused at first, spec.paused after, E2B state in between) -> state, phase
    "paused from the start: set up, then paused": (True, True, None, "paused", "Paused"),
    "paused later": (False, True, None, "paused", "Paused"),
    "unpaused": (True, False, None, "running", "Ready"),
    "paused by E2B (timeout) while it should run": (False, False, "paused", "running", "Ready"),
    "resumed by someone while it should be paused": (True, True, "running", "paused", "Paused"),
}


@pytest.mark.parametrize("first, then, meanwhile, state, phase", PAUSING.values(), ids=PAUSING.keys())
async def test_pausing_follows_the_spec(world, first, then, meanwhile, state, phase):
    await world.ready_agent("a", paused=first)
    sandbox = world.e2b.of(uid(world, "a"))[0]
    checkouts = len(sandbox.commands)
    if meanwhile:
        sandbox.state = meanwhile
    await world.update_agent("a", paused=then)

    await world.reconcile_agent("a")

    assert converged(world, "a", phase=phase, state=state) is sandbox
    assert len(sandbox.commands) == checkouts  # the code was up to date: no checkout for a pause or resume
    assert condition(world, "a", "Ready")["status"] == "True"


async def test_an_adopted_paused_sandbox_is_brought_up_to_date_and_paused_again(world):
    await world.create_agent("a", paused=True)
    orphan = world.e2b.add(tags(world, "a", paused=True), state="paused")  # created before a crash, then paused

    await world.reconcile_agent("a")

    assert converged(world, "a", phase="Paused", state="paused") is orphan
    assert world.e2b.count("create") == 0


async def test_a_new_ref_is_checked_out_in_the_same_sandbox(world):
    await world.ready_agent("a")
    before = world.status("a")["sandboxID"]
    await world.update_agent("a", source={"repo": agent_spec()["source"]["repo"], "ref": REV_B})

    await world.reconcile_agent("a")

    assert converged(world, "a", revision=REV_B).sandbox_id == before
    assert world.e2b.count("create") == 1


async def test_a_code_update_plans_from_the_fleets_last_look(world):
    await world.ready_agent("a")
    await world.operator.fleet.check_sandboxes()  # the one fleet-wide list of the interval
    lists = world.e2b.count("list")
    await world.update_agent("a", source={"repo": agent_spec()["source"]["repo"], "ref": REV_B})

    await world.reconcile_agent("a")

    converged(world, "a", revision=REV_B)
    assert world.e2b.count("list") == lists  # a push's fan-out costs no list call per agent


async def test_a_sandbox_lost_since_the_fleets_look_is_recreated_after_a_fresh_look(world):
    await world.ready_agent("a")
    await world.operator.fleet.check_sandboxes()
    lost = world.status("a")["sandboxID"]
    world.e2b.lose(lost)
    await world.update_agent("a", source={"repo": agent_spec()["source"]["repo"], "ref": REV_B})
    with pytest.raises(RetryLater) as retry:
        await world.reconcile_agent("a")  # planned a checkout from the last look; the sandbox is gone
    assert retry.value.delay == 1

    await world.reconcile_agent("a")

    assert converged(world, "a", revision=REV_B).sandbox_id != lost


CONFIG_CHANGES = {
    "template": {"template": "gpu"},
    "environment": {"env": [{"name": "MODE", "value": "slow"}]},
}


@pytest.mark.parametrize("change", CONFIG_CHANGES.values(), ids=CONFIG_CHANGES.keys())
async def test_a_config_change_replaces_the_sandbox(world, change):
    await world.ready_agent("a")
    old = world.status("a")["sandboxID"]
    await world.update_agent("a", **change)

    await world.reconcile_agent("a")

    new = converged(world, "a")
    assert new.sandbox_id != old and world.e2b.killed == [old]
    assert new.metadata[SANDBOX_CONFIG_KEY] == tags(world, "a", **change)[SANDBOX_CONFIG_KEY]
    assert new.template == change.get("template", "base")


FAILURES = {
    # (how it fails) -> (Ready reason, stalled, phase, retry delay; None: the settings' retry delay)
    "E2B unavailable": (lambda w: w.e2b.fail("create", E2BUnavailable("503")), "E2BUnavailable", False, "Creating",
                        None),
    "key rejected": (lambda w: w.e2b.fail("list", E2BAuthFailed("401")), "E2BAuthFailed", True, "Failed", 300),
    "sandbox gone mid-step": (lambda w: w.e2b.fail("run", SandboxGone("404")), "SandboxGone", False, "SettingUp", 1),
    "checkout fails": (lambda w: w.e2b.script("git fetch", 128, stderr="fatal: no such commit"),
                       "CheckoutFailed", True, "Failed", 300),
    "setup fails": (lambda w: w.e2b.script(SETUP, 2, stderr="make: *** [setup] Error 2"), "SetupFailed", True,
                    "Failed", 300),
}


@pytest.mark.parametrize("inject, reason, stalled, phase, delay", FAILURES.values(), ids=FAILURES.keys())
async def test_failures_are_reported_and_retried(world, inject, reason, stalled, phase, delay):
    inject(world)
    await world.create_agent("a", setup=[SETUP])
    with pytest.raises(RetryLater) as retry:
        await world.reconcile_agent("a")
    assert retry.value.delay == (world.settings.retry_delay_seconds if delay is None else delay)
    status = world.status("a")
    assert (status["phase"], condition(world, "a", "Ready")["reason"]) == (phase, reason)
    assert condition(world, "a", "Stalled")["status"] == ("True" if stalled else "False")
    assert world.events.events[-1].reason == reason
    assert world.events.events[-1].type == ("Warning" if stalled else "Normal")


async def test_a_missing_secret_stalls_the_agent_without_a_sandbox(world):
    await world.create_agent("a", env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "t"}}}])
    with pytest.raises(RetryLater):
        await world.reconcile_agent("a")
    assert condition(world, "a", "Ready")["reason"] == "SecretNotFound"
    assert world.e2b.count("create") == 0


async def test_secret_values_reach_the_sandbox_but_never_status_or_events(world):
    secret = "hunter2-very-secret"
    world.kube.add_secret(NAMESPACE, "creds", {"t": secret})
    world.e2b.script(SETUP, 1, stderr=f"login failed for token {secret}\n")
    await world.create_agent("a", setup=[SETUP],
                             env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "t"}}}])
    with pytest.raises(RetryLater) as retry:
        await world.reconcile_agent("a")

    sandbox = world.e2b.of(uid(world, "a"))[0]
    assert sandbox.commands[-1].envs == {"TOKEN": secret}
    reported = [str(world.status("a")), str(world.events.events), str(retry.value), str(sandbox.metadata)]
    assert all(secret not in text for text in reported)
    assert MARKER in world.status("a")["message"]


async def test_an_agent_with_its_own_key_lives_in_its_own_account(world):
    world.kube.add_secret(NAMESPACE, "e2b", {"key": "e2b_own_key"})
    await world.ready_agent("a", e2bApiKeySecretRef={"name": "e2b", "key": "key"})
    sandbox = converged(world, "a")
    assert sandbox.api_key == "e2b_own_key"

    await world.delete_agent("a")

    assert world.e2b.killed == [sandbox.sandbox_id]  # (a kill with the operator's key finds nothing)


DELETIONS = {
    # deletionPolicy -> sandboxes killed, left running and recorded as orphans
    "Delete": ("Delete", True),
    "Orphan": ("Orphan", False),
}


@pytest.mark.parametrize("policy, killed", DELETIONS.values(), ids=DELETIONS.keys())
async def test_deleting_an_agent_kills_or_orphans_every_sandbox_of_it(world, clock, policy, killed):
    await world.ready_agent("a", deletionPolicy=policy)
    twin = world.e2b.add(tags(world, "a", deletionPolicy=policy))  # a duplicate no reconcile saw yet
    ours = {world.status("a")["sandboxID"], twin.sandbox_id}

    await world.delete_agent("a")

    assert world.agent("a") is None  # the finalizer went
    assert set(world.e2b.killed) == (ours if killed else set())
    assert await world.kube.orphaned_sandboxes(()) == (set() if killed else ours)
    assert world.events.reasons("a").count("SandboxKilled" if killed else "SandboxOrphaned") == 2
    for _ in range(2):  # and the orphan sweep, past its grace, leaves the orphans alone
        await world.operator.fleet.check_sandboxes()
        clock.advance(world.settings.orphan_grace_seconds)
    assert set(world.e2b.killed) == (ours if killed else set())
