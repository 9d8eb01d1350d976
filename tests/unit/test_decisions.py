"""The decision layer: desired spec + what E2B shows -> the actions that converge them."""

from datetime import datetime, timedelta, timezone

from remote_agents.api.models import RemoteAgentSpec
from remote_agents.controller import decisions as d
from remote_agents.controller.e2b_gateway import CONFIG_KEY, UID_KEY, ObservedSandbox

UID = "0b8e6a52-1c1d-4d1e-9d3f-1a2b3c4d5e6f"
REV_A = "a" * 40
REV_B = "b" * 40
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def spec(**overrides) -> RemoteAgentSpec:
    return RemoteAgentSpec.model_validate({"source": {"repo": "file:///srv/agent.git"}, **overrides})


def sandbox(sandbox_id: str, state: str = "running", config: str | None = None, started: int = 0,
            spec_for_hash: RemoteAgentSpec | None = None) -> ObservedSandbox:
    wanted = config or d.config_hash(spec_for_hash or spec())
    return ObservedSandbox(sandbox_id, state, {UID_KEY: UID, CONFIG_KEY: wanted}, T0 + timedelta(seconds=started),
                           T0 + timedelta(hours=1))


def plan(s=None, recorded=None, revision=None, sandboxes=(), target=REV_A) -> d.AgentPlan:
    return d.plan_agent(uid=UID, spec=s or spec(), recorded_sandbox_id=recorded, recorded_revision=revision,
                        sandboxes=list(sandboxes), target_revision=target)


def test_new_agent_creates_with_stable_key_then_checks_out():
    first, again = plan(), plan()
    assert first.actions == [d.Create(d.idempotency_key(UID, None)), d.Checkout(REV_A)]
    assert first == again  # a repeated create after a crash sends the same Idempotency-Key


def test_new_paused_agent_is_set_up_then_paused():
    assert plan(spec(paused=True)).actions[-1] == d.Pause()


def test_crash_after_create_adopts_the_sandbox_instead_of_creating():
    result = plan(sandboxes=[sandbox("sb-1")])
    assert result.keep == "sb-1"
    assert result.actions == [d.Checkout(REV_A)]  # adopted: code state unknown, so check out again


def test_converged_agent_needs_nothing():
    assert plan(recorded="sb-1", revision=REV_A, sandboxes=[sandbox("sb-1")]).actions == []


def test_duplicates_are_killed_keeping_the_recorded_one():
    result = plan(recorded="sb-2", revision=REV_A, sandboxes=[sandbox("sb-1"), sandbox("sb-2", started=5)])
    assert result.keep == "sb-2"
    assert result.actions == [d.Kill("sb-1", "Duplicate")]


def test_duplicates_without_record_keep_the_oldest():
    result = plan(sandboxes=[sandbox("sb-new", started=9), sandbox("sb-old", started=1)])
    assert result.keep == "sb-old"
    assert d.Kill("sb-new", "Duplicate") in result.actions


def test_lost_sandbox_is_recreated_with_a_fresh_key():
    result = plan(recorded="sb-1", revision=REV_A, sandboxes=[])
    assert result.actions == [d.Create(d.idempotency_key(UID, "sb-1"), replaces_lost="sb-1"), d.Checkout(REV_A)]
    assert d.idempotency_key(UID, "sb-1") != d.idempotency_key(UID, None)


def test_new_ref_updates_in_place():
    result = plan(recorded="sb-1", revision=REV_A, sandboxes=[sandbox("sb-1")], target=REV_B)
    assert result.actions == [d.Checkout(REV_B)]


def test_pause_and_resume():
    assert plan(spec(paused=True), "sb-1", REV_A, [sandbox("sb-1")]).actions == [d.Pause()]
    assert plan(spec(paused=True), "sb-1", REV_A, [sandbox("sb-1", "paused")]).actions == []
    assert plan(spec(), "sb-1", REV_A, [sandbox("sb-1", "paused")]).actions == [d.Resume()]


def test_template_or_env_change_recreates():
    changed = spec(template="other")
    result = plan(changed, "sb-1", REV_A, [sandbox("sb-1")])
    assert result.actions[0] == d.Kill("sb-1", "ConfigChanged")
    assert result.actions[1] == d.Create(d.idempotency_key(UID, "sb-1"))
    env_changed = spec(env=[{"name": "MODE", "value": "fast"}])
    assert d.config_hash(env_changed) != d.config_hash(spec())


def test_config_hash_never_contains_secret_values_only_references():
    with_ref = spec(env=[{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "openai"}}}])
    assert d.config_hash(with_ref) == d.config_hash(with_ref.model_copy())  # depends on the reference only


def test_unresolvable_ref_without_sandbox_waits():
    result = plan(target=None)
    assert result.waiting_for_revision and result.actions == []


def test_deletion_policy():
    sandboxes = [sandbox("sb-1"), sandbox("sb-2")]
    assert d.plan_deletion(deletion_policy="Delete", sandboxes=sandboxes) == [d.Kill("sb-1", "Deleted"),
                                                                                d.Kill("sb-2", "Deleted")]
    assert d.plan_deletion(deletion_policy="Orphan", sandboxes=sandboxes) == []


def test_timeout_refresh_when_half_is_left():
    s = sandbox("sb-1")
    assert not d.needs_timeout_refresh(s, (T0 + timedelta(minutes=10)).timestamp(), 3600)
    assert d.needs_timeout_refresh(s, (T0 + timedelta(minutes=40)).timestamp(), 3600)
    paused = sandbox("sb-1", "paused")
    assert not d.needs_timeout_refresh(paused, (T0 + timedelta(minutes=59)).timestamp(), 3600)


def view(**overrides) -> d.AgentView:
    values = dict(uid=UID, namespace="ns", name="a", paused=False, sandbox_id="sb-1", revision=REV_A, repo="r",
                  ref="main", config_hash=d.config_hash(spec()), timeout_seconds=3600, own_api_key=False,
                  deleting=False)
    return d.AgentView(**{**values, **overrides})


def test_drift_from_the_fleet_wide_list():
    assert d.drift(view(), [sandbox("sb-1")]) is None
    assert d.drift(view(), []) == "SandboxLost"
    assert d.drift(view(), [sandbox("sb-1"), sandbox("sb-2")]) == "DuplicateSandboxes"
    assert d.drift(view(paused=True), [sandbox("sb-1")]) == "ShouldBePaused"
    assert d.drift(view(), [sandbox("sb-1", "paused")]) == "ShouldBeRunning"
    assert d.drift(view(config_hash="x"), [sandbox("sb-1")]) == "ConfigChanged"
    assert d.drift(view(sandbox_id=None), []) is None  # not created yet: its own handler owns it
