"""Autoscaling decisions (pools/autoscale.py): replicas from the queue with stabilization and steps,
memory-first member plans (wake before create, pause before delete, retention), and the budget's
count (restarts never count twice)."""

import pytest

from remote_agents.api.models import PoolAutoscaling
from remote_agents.controller.pools import autoscale
from remote_agents.controller.pools.decide import Child

NOW = 1_000_000.0


def scaling(**overrides) -> PoolAutoscaling:
    return PoolAutoscaling.model_validate({"minReplicas": 0, "maxReplicas": 6, **overrides})


RECOMMEND = {
    # (queued, running, target per agent, min, max) -> running agents wanted
    "idle goes to min": (0, 0, 1, 0, 6, 0),
    "idle keeps min": (0, 0, 1, 2, 6, 2),
    "one task wakes one from zero": (1, 0, 1, 0, 6, 1),
    "queued plus running": (3, 2, 1, 0, 6, 5),
    "capped at max": (60, 0, 1, 0, 6, 6),
    "target rounds up": (5, 0, 2, 0, 6, 3),
}


@pytest.mark.parametrize("queued, running, target, low, high, wanted", RECOMMEND.values(), ids=RECOMMEND.keys())
def test_recommend(queued, running, target, low, high, wanted):
    config = scaling(minReplicas=low, maxReplicas=high, targetTasksPerAgent=target)
    assert autoscale.recommend(config, queued, running) == wanted


def decide(config, current, queued, history=(), exhausted=False):
    return autoscale.decide_replicas(config, current, queued, 0, list(history), NOW, exhausted)


def test_scale_up_at_once_within_max_step():
    assert (decide(scaling(), 0, 60).replicas, decide(scaling(), 0, 60).reason) == (6, "ScaledUp")
    stepped = scaling(maxReplicas=20, behavior={"scaleUp": {"maxStep": 4}})
    assert decide(stepped, 2, 60).replicas == 6


def test_scale_down_waits_for_a_whole_window_of_lower_demand():
    config = scaling(behavior={"scaleDown": {"stabilizationWindowSeconds": 60}})
    busy_recently = [(NOW - 30, 4)]
    assert decide(config, 4, 0, busy_recently).replicas == 4  # demand was 4 inside the window
    assert decide(config, 4, 0, busy_recently).reason == "ScalingLimited"
    assert decide(config, 4, 0, [(NOW - 90, 4)]).replicas == 0  # out of the window: shrink
    assert decide(config, 4, 0, [(NOW - 30, 2)]).replicas == 2  # to the highest in the window


def test_scale_down_default_window_is_300s_and_max_step_applies():
    config = scaling()
    assert config.behavior.scale_down.stabilization_window_seconds == 300
    assert config.behavior.scale_up.stabilization_window_seconds == 0
    stepped = scaling(behavior={"scaleDown": {"stabilizationWindowSeconds": 0, "maxStep": 1}})
    assert decide(stepped, 4, 0).replicas == 3


def test_scale_up_window_takes_the_lowest_recommendation():
    config = scaling(behavior={"scaleUp": {"stabilizationWindowSeconds": 30}})
    assert decide(config, 1, 6, [(NOW - 10, 2)]).replicas == 2


def test_budget_stops_growth_but_not_shrinking():
    config = scaling(behavior={"scaleDown": {"stabilizationWindowSeconds": 0}})
    held = decide(config, 2, 60, exhausted=True)
    assert (held.replicas, held.reason) == (2, "BudgetExhausted")
    assert decide(config, 2, 0, exhausted=True).replicas == 0


def test_a_steady_pool_says_so():
    assert decide(scaling(), 3, 3).reason == "DesiredWithinRange"


def test_cel_rule_names_both_fields():
    rule = PoolAutoscaling.model_config["json_schema_extra"]["x-kubernetes-validations"][0]
    assert rule["rule"] == "self.minReplicas <= self.maxReplicas"
    assert "minReplicas" in rule["message"] and "maxReplicas" in rule["message"]


# ---- members ------------------------------------------------------------------------------------

def member(name, state="running", tasks=0, used=0.0, paused_for=None, phase=None):
    """state: running | idle-paused | waking (woken, its sandbox still paused)."""
    idle_paused = state == "idle-paused"
    return Child(name, "h", "main", False, True, False, tasks, "2026-01-01T00:00:00Z", idle_paused=idle_paused,
                 phase=phase or ("Paused" if state != "running" else "Ready"), last_activity=NOW - used,
                 paused_since=NOW - paused_for if paused_for is not None else (NOW if idle_paused else None))


def plan(replicas, members, sessions=(), exhausted=False, **config):
    return autoscale.plan_members(scaling(pausedRetentionSeconds=600, **config), replicas, members, NOW,
                                  set(sessions), exhausted)


MEMBER_PLANS = {
    # replicas, members -> (wake, pause, create, delete)
    "scale from zero with no agent creates one": (1, [], ([], [], 1, [])),
    "scale from zero wakes a paused one": (1, [member("p-0", "idle-paused")], (["p-0"], [], 0, [])),
    "the warmest paused agents are woken first": (
        2, [member("p-0", "idle-paused", used=300), member("p-1", "idle-paused", used=10),
            member("p-2", "idle-paused", used=100)], (["p-1", "p-2"], [], 0, [])),
    "wake every paused agent before any create": (
        6, [member(f"p-{i}", "idle-paused") for i in range(3)], (["p-0", "p-1", "p-2"], [], 0, [])),
    "no create while a woken agent is not running yet": (
        4, [member("p-0", "waking"), member("p-1")], ([], [], 0, [])),
    "creates once every member runs, up to maxReplicas": (
        9, [member(f"p-{i}") for i in range(3)], ([], [], 3, [])),
    "the least recently used idle agents pause first": (
        1, [member("p-0", used=5), member("p-1", used=50), member("p-2", used=20)], ([], ["p-1", "p-2"], 0, [])),
    "busy agents keep running": (0, [member("p-0", tasks=1), member("p-1")], ([], ["p-1"], 0, [])),
    "paused past the retention are deleted, oldest pause first": (
        0, [member("p-0", "idle-paused", paused_for=700), member("p-1", "idle-paused", paused_for=900),
            member("p-2", "idle-paused", paused_for=100)], ([], [], 0, ["p-1", "p-0"])),
}


@pytest.mark.parametrize("replicas, members, expected", MEMBER_PLANS.values(), ids=MEMBER_PLANS.keys())
def test_member_plans(replicas, members, expected):
    result = plan(replicas, members)
    assert (result.wake, result.pause, result.create, result.delete) == expected


def test_a_held_create_is_reported():
    assert plan(4, [member("p-0", "waking"), member("p-1")]).waiting_for_wakes == 2
    assert plan(0, [member("p-0", tasks=1), member("p-1", tasks=2)]).waiting_for_busy == 2


def test_never_deleted_with_a_session_or_a_task_or_when_woken():
    old = dict(paused_for=10_000)
    members = [member("p-0", "idle-paused", **old), member("p-1", "idle-paused", tasks=1, **old),
               member("p-2", "idle-paused", **old)]
    assert plan(0, members, sessions={"p-0"}).delete == ["p-2"]
    woken = plan(1, members, sessions={"p-0"})
    assert (woken.wake, woken.delete) == (["p-0"], ["p-2"])  # the one it wakes stays, past its retention too


def test_a_user_paused_member_is_neither_woken_nor_deleted():
    user_paused = Child("p-0", "h", "main", True, True, False, 0, "", phase="Paused", paused_since=NOW - 10_000)
    assert plan(1, [user_paused]).wake == [] and plan(0, [user_paused]).delete == []


def test_at_the_budget_idle_agents_pause_and_nothing_wakes():
    members = [member("p-0"), member("p-1", tasks=1), member("p-2", "idle-paused")]
    result = plan(6, members, exhausted=True)
    assert (result.pause, result.wake, result.create) == (["p-0"], [], 0)


# ---- the budget ---------------------------------------------------------------------------------

def test_the_budget_counts_running_agents_over_time_once():
    start = autoscale.accrue(None, 2, 1000)
    assert (start.used, start.window_start, start.running) == (0, 1000, 2)
    later = autoscale.accrue(start, 3, 1060)
    assert later.used == 120  # 2 agents for 60 s; from now 3 run
    # A restarted operator reads `later` back from status and goes on from there: nothing twice.
    assert autoscale.accrue(later, 3, 1060).used == 120
    assert autoscale.accrue(later, 0, 1070).used == 150


def test_a_new_window_starts_from_what_ran_inside_it():
    start = autoscale.BudgetCount(0, 5000, 86_000, 2)
    rolled = autoscale.accrue(start, 2, 86_500)
    assert (rolled.window_start, rolled.used) == (86_400, 200)  # 100 s of 2 agents after the turn


def test_the_budget_is_written_only_when_it_moved():
    idle = autoscale.BudgetCount(0, 10, 100, 0)
    assert not autoscale.worth_writing(idle, autoscale.accrue(idle, 0, 5000))  # at rest: never
    running = autoscale.BudgetCount(0, 10, 100, 2)
    assert not autoscale.worth_writing(running, autoscale.accrue(running, 2, 110))
    assert autoscale.worth_writing(running, autoscale.accrue(running, 2, 100 + autoscale.BUDGET_RESOLUTION_SECONDS))
    assert autoscale.worth_writing(running, autoscale.accrue(running, 1, 101))
