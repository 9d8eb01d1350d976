"""The decision layer: desired spec + what E2B shows -> the actions that converge them."""

from datetime import datetime, timedelta, timezone

from remote_agents.api.models import RemoteAgentSpec
from remote_agents.api.names import SANDBOX_CONFIG_KEY, SANDBOX_UID_KEY
from remote_agents.controller.agents import decide
from remote_agents.controller.sandboxes import ObservedSandbox

UID = "0b8e6a52-1c1d-4d1e-9d3f-1a2b3c4d5e6f"
REV_A = "a" * 40
REV_B = "b" * 40
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def spec(**overrides) -> RemoteAgentSpec:
    return RemoteAgentSpec.model_validate({"source": {"repo": "file:///srv/agent.git"}, **overrides})


def sandbox(sandbox_id: str, state: str = "running", config: str | None = None, started: int = 0,
            spec_for_hash: RemoteAgentSpec | None = None) -> ObservedSandbox:
    wanted = config or decide.config_hash(spec_for_hash or spec())
    return ObservedSandbox(sandbox_id, state, {SANDBOX_UID_KEY: UID, SANDBOX_CONFIG_KEY: wanted}, T0 + timedelta(seconds=started),
                           T0 + timedelta(hours=1))


def plan(s=None, recorded=None, revision=None, sandboxes=(), target=REV_A) -> decide.AgentPlan:
    return decide.plan_agent(uid=UID, spec=s or spec(), recorded_sandbox_id=recorded, recorded_revision=revision,
                        sandboxes=list(sandboxes), target_revision=target)


def test_new_agent_creates_with_stable_key_then_checks_out():
    first, again = plan(), plan()
    assert first.actions == [decide.Create(decide.idempotency_key(UID, None)), decide.Checkout(REV_A)]
    assert first == again  # a repeated create after a crash sends the same Idempotency-Key


def test_new_paused_agent_is_set_up_then_paused():
    assert plan(spec(paused=True)).actions[-1] == decide.Pause()


def test_crash_after_create_adopts_the_sandbox_instead_of_creating():
    result = plan(sandboxes=[sandbox("sb-1")])
    assert result.keep == "sb-1"
    assert result.actions == [decide.Checkout(REV_A)]  # adopted: code state unknown, so check out again


def test_converged_agent_needs_nothing():
    assert plan(recorded="sb-1", revision=REV_A, sandboxes=[sandbox("sb-1")]).actions == []


def test_duplicates_are_killed_keeping_the_recorded_one():
    result = plan(recorded="sb-2", revision=REV_A, sandboxes=[sandbox("sb-1"), sandbox("sb-2", started=5)])
    assert result.keep == "sb-2"
    assert result.actions == [decide.Kill("sb-1", "Duplicate")]


def test_duplicates_without_record_keep_the_oldest():
    result = plan(sandboxes=[sandbox("sb-new", started=9), sandbox("sb-old", started=1)])
    assert result.keep == "sb-old"
    assert decide.Kill("sb-new", "Duplicate") in result.actions


def test_lost_sandbox_is_recreated_with_a_fresh_key():
    result = plan(recorded="sb-1", revision=REV_A, sandboxes=[])
    assert result.actions == [decide.Create(decide.idempotency_key(UID, "sb-1"), replaces_lost="sb-1"), decide.Checkout(REV_A)]
    assert decide.idempotency_key(UID, "sb-1") != decide.idempotency_key(UID, None)


def test_new_ref_updates_in_place():
    result = plan(recorded="sb-1", revision=REV_A, sandboxes=[sandbox("sb-1")], target=REV_B)
    assert result.actions == [decide.Checkout(REV_B)]


def test_pause_and_resume():
    assert plan(spec(paused=True), "sb-1", REV_A, [sandbox("sb-1")]).actions == [decide.Pause()]
    assert plan(spec(paused=True), "sb-1", REV_A, [sandbox("sb-1", "paused")]).actions == []
    assert plan(spec(), "sb-1", REV_A, [sandbox("sb-1", "paused")]).actions == [decide.Resume()]


def test_template_or_env_change_recreates():
    changed = spec(template="other")
    result = plan(changed, "sb-1", REV_A, [sandbox("sb-1")])
    assert result.actions[0] == decide.Kill("sb-1", "ConfigChanged")
    assert result.actions[1] == decide.Create(decide.idempotency_key(UID, "sb-1"))
    env_changed = spec(env=[{"name": "MODE", "value": "fast"}])
    assert decide.config_hash(env_changed) != decide.config_hash(spec())


def test_config_hash_never_contains_secret_values_only_references():
    with_ref = spec(env=[{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "openai"}}}])
    assert decide.config_hash(with_ref) == decide.config_hash(with_ref.model_copy())  # depends on the reference only


def test_unresolvable_ref_without_sandbox_waits():
    result = plan(target=None)
    assert result.keep is None and result.actions == []


def test_deletion_policy():
    sandboxes = [sandbox("sb-1"), sandbox("sb-2")]
    assert decide.plan_deletion(deletion_policy="Delete", sandboxes=sandboxes) == [decide.Kill("sb-1", "Deleted"),
                                                                                decide.Kill("sb-2", "Deleted")]
    assert decide.plan_deletion(deletion_policy="Orphan", sandboxes=sandboxes) == []


def test_timeout_refresh_when_half_is_left():
    s = sandbox("sb-1")
    assert not decide.needs_timeout_refresh(s, (T0 + timedelta(minutes=10)).timestamp(), 3600)
    assert decide.needs_timeout_refresh(s, (T0 + timedelta(minutes=40)).timestamp(), 3600)
    paused = sandbox("sb-1", "paused")
    assert not decide.needs_timeout_refresh(paused, (T0 + timedelta(minutes=59)).timestamp(), 3600)


def view(**overrides) -> decide.AgentView:
    values = dict(uid=UID, namespace="ns", name="a", paused=False, sandbox_id="sb-1", revision=REV_A, repo="r",
                  ref="main", config_hash=decide.config_hash(spec()), timeout_seconds=3600, own_api_key=False,
                  deleting=False)
    return decide.AgentView(**{**values, **overrides})


def test_drift_from_the_fleet_wide_list():
    assert decide.drift(view(), [sandbox("sb-1")]) is None
    assert decide.drift(view(), []) == "SandboxLost"
    assert decide.drift(view(), [sandbox("sb-1"), sandbox("sb-2")]) == "DuplicateSandboxes"
    assert decide.drift(view(paused=True), [sandbox("sb-1")]) == "ShouldBePaused"
    assert decide.drift(view(), [sandbox("sb-1", "paused")]) == "ShouldBeRunning"
    assert decide.drift(view(config_hash="x"), [sandbox("sb-1")]) == "ConfigChanged"
    assert decide.drift(view(sandbox_id=None), []) is None  # not created yet: its own handler owns it


def test_an_agent_is_idle_paused_only_when_enabled_idle_long_enough_and_not_paused_already():
    assert decide.should_idle_pause(60, 0, 1000.0, False, 1060.0)
    assert not decide.should_idle_pause(60, 1, 1000.0, False, 2000.0)  # busy
    assert not decide.should_idle_pause(0, 0, 1000.0, False, 2000.0)  # disabled
    assert not decide.should_idle_pause(60, 0, 1000.0, True, 2000.0)  # already paused
    assert not decide.should_idle_pause(60, 0, None, False, 2000.0)  # never active
