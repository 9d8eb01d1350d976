"""AgentPool planning: scaling, ranked scale-down, rollouts within maxUnavailable, in-place changes."""

from remote_agents.api.models import AgentPoolSpec
from remote_agents.controller.pools import decide


def pool_spec(replicas=3, max_unavailable=1, strategy="RollingUpdate", paused=False, ref="main", env=None):
    template = {"spec": {"source": {"repo": "git://h/r.git", "ref": ref}, "env": env or []}}
    return AgentPoolSpec.model_validate({"replicas": replicas, "template": template, "paused": paused,
                                         "updateStrategy": {"type": strategy, "maxUnavailable": max_unavailable}})


def child(name, spec, ready=True, busy=0, created="2026-01-01T00:00:00Z", outdated=False, deleting=False,
          ref="main", paused=False):
    return decide.Child(name, "old" if outdated else decide.template_hash(spec), ref, paused, ready, deleting, busy, created)


def test_scale_up_from_zero_uses_deterministic_names():
    assert decide.plan_pool("p", pool_spec(3), []).create == ["p-0", "p-1", "p-2"]


def test_scale_up_fills_holes_and_never_reuses_a_name_still_deleting():
    spec = pool_spec(3)
    plan = decide.plan_pool("p", spec, [child("p-0", spec), child("p-2", spec), child("p-1", spec, deleting=True)])
    assert plan.create == ["p-3"]


def test_converged_pool_does_nothing():
    spec = pool_spec(2)
    plan = decide.plan_pool("p", spec, [child("p-0", spec), child("p-1", spec)])
    assert (plan.create, plan.delete, plan.patch) == ([], [], {})


def test_scale_down_removes_not_ready_then_idle_then_newest_never_busy():
    spec = pool_spec(1)
    children = [child("p-0", spec, busy=1, created="2026-01-01T00:00:01Z"),
                child("p-1", spec, created="2026-01-01T00:00:02Z"),
                child("p-2", spec, created="2026-01-01T00:00:03Z"),
                child("p-3", spec, ready=False, created="2026-01-01T00:00:00Z")]
    assert decide.plan_pool("p", spec, children).delete == ["p-3", "p-2", "p-1"]
    two = pool_spec(2)
    assert decide.plan_pool("p", two, [child("p-0", two, busy=1), child("p-1", two), child("p-2", two)]).delete == ["p-1"]


def test_busy_agents_are_kept_until_idle_unless_scaled_to_zero():
    spec = pool_spec(1)
    busy = [child("p-0", spec, busy=1), child("p-1", spec, busy=1)]
    plan = decide.plan_pool("p", spec, busy)
    assert plan.delete == [] and plan.waiting_for_busy == 1 and plan.create == []
    zero = pool_spec(0)
    assert sorted(decide.plan_pool("p", zero, [child("p-0", zero, busy=1)]).delete) == ["p-0"]


def test_rolling_update_respects_max_unavailable():
    new = pool_spec(3, env=[{"name": "MODE", "value": "fast"}])
    children = [child(f"p-{i}", new, outdated=True) for i in range(3)]
    plan = decide.plan_pool("p", new, children)
    assert len(plan.delete) == 1 and len(plan.create) == 1
    # One replacement not Ready yet: no budget left, nothing more is removed.
    children = [child("p-0", new, outdated=True), child("p-1", new, outdated=True), child("p-3", new, ready=False)]
    assert decide.plan_pool("p", new, children).delete == []


def test_max_unavailable_percent_and_recreate():
    assert decide.max_unavailable(pool_spec(10, max_unavailable="25%")) == 2
    assert decide.max_unavailable(pool_spec(2, max_unavailable="10%")) == 1
    new = pool_spec(3, strategy="Recreate", env=[{"name": "A", "value": "b"}])
    assert len(decide.plan_pool("p", new, [child(f"p-{i}", new, outdated=True) for i in range(3)]).delete) == 3


def test_ref_and_pause_changes_apply_in_place():
    spec = pool_spec(2, ref="release", paused=True)
    plan = decide.plan_pool("p", spec, [child("p-0", spec), child("p-1", spec, ref="release", paused=True)])
    assert plan.patch == {"p-0": {"source": {"ref": "release"}, "paused": True}}
    assert plan.delete == [] and plan.create == []
    assert decide.template_hash(pool_spec(ref="a")) == decide.template_hash(pool_spec(ref="b", paused=True))


def test_status_counts_and_selector():
    spec = pool_spec(3)
    children = [child("p-0", spec, paused=True), child("p-1", spec, ready=False, outdated=True), child("p-2", spec, deleting=True)]
    status = decide.pool_status("p", spec, children)
    assert status == {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 1, "pausedReplicas": 1,
                      "selector": "remoteagents.io/pool=p"}
