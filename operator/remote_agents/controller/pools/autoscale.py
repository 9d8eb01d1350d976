"""How many agents an autoscaled AgentPool wants, and which members wake, pause or go. Pure.

Memory first: a paused agent costs almost nothing and wakes with its memory in about a second,
so capacity is added by waking idle-paused members before creating any, and removed by pausing
the least recently used idle ones; only members paused longer than the retention are deleted,
oldest first, never one with an open session or a running task.

`spec.replicas` (written through /scale) is the number of *running* members wanted; paused
members stay members (status.pausedReplicas) until their retention ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from remote_agents.api.models import PoolAutoscaling, ScalingRules
from remote_agents.controller.pools.decide import Child, MemberPlan

BUDGET_WINDOW_SECONDS = 86400
# While agents run, the budget's count is written at most this often (at rest: never).
BUDGET_RESOLUTION_SECONDS = 30

Recommendation = tuple[float, int]  # (when, replicas wanted by the demand alone)


@dataclass(frozen=True)
class Decision:
    replicas: int
    wanted: int  # what the demand alone asks for (kept for the stabilization windows)
    reason: str  # ScaledUp | ScaledDown | DesiredWithinRange | ScalingLimited | BudgetExhausted
    message: str


def recommend(autoscaling: PoolAutoscaling, queued: int, running: int) -> int:
    """Running agents the demand asks for, within [minReplicas, maxReplicas]."""
    wanted = math.ceil((queued + running) / autoscaling.target_tasks_per_agent)
    return max(autoscaling.min_replicas, min(autoscaling.max_replicas, wanted))


def _stabilized(current: int, history: list[Recommendation], now: float, rules: ScalingRules, up: bool) -> int:
    window = [wanted for at, wanted in history if now - at <= rules.stabilization_window_seconds]
    if up:  # grow only to what the whole window asked for at least
        return min(current + rules.max_step, min(window))
    return max(current - rules.max_step, max(window))


def decide_replicas(autoscaling: PoolAutoscaling, current: int, queued: int, running: int,
                    history: list[Recommendation], now: float, budget_exhausted: bool) -> Decision:
    """The replicas to write. `history` holds earlier recommendations (the caller keeps them, with
    this one appended, for the stabilization windows); `running`: tasks running on members."""
    wanted = recommend(autoscaling, queued, running)
    demand = f"{queued} queued and {running} running tasks at {autoscaling.target_tasks_per_agent} per agent"
    window = [*history, (now, wanted)]
    if budget_exhausted and wanted >= current:
        return Decision(current, wanted, "BudgetExhausted", f"the daily budget is used up: not growing ({demand})")
    if wanted > current:
        replicas = _stabilized(current, window, now, autoscaling.behavior.scale_up, up=True)
    elif wanted < current:
        replicas = _stabilized(current, window, now, autoscaling.behavior.scale_down, up=False)
    else:
        replicas = current
    replicas = max(autoscaling.min_replicas, min(autoscaling.max_replicas, replicas))
    if replicas > current:
        return Decision(replicas, wanted, "ScaledUp", f"{current} -> {replicas} running agents: {demand}")
    if replicas < current:
        return Decision(replicas, wanted, "ScaledDown", f"{current} -> {replicas} running agents: {demand}")
    if wanted != replicas:
        return Decision(replicas, wanted, "ScalingLimited", f"{replicas} running agents, {wanted} wanted ({demand}); "
                                                    f"held by the stabilization window or maxReplicas")
    return Decision(replicas, wanted, "DesiredWithinRange", f"{replicas} running agents for {demand}")


def prune(history: list[Recommendation], now: float, autoscaling: PoolAutoscaling) -> list[Recommendation]:
    """The recommendations still inside the longer of the two windows."""
    keep = max(autoscaling.behavior.scale_up.stabilization_window_seconds,
               autoscaling.behavior.scale_down.stabilization_window_seconds)
    return [(at, wanted) for at, wanted in history if now - at <= keep]


# ---- members ------------------------------------------------------------------------------------

def is_paused(child: Child) -> bool:
    return child.paused or child.idle_paused


def is_waking(child: Child) -> bool:
    """Woken (no longer idle-paused) but its sandbox not running yet."""
    return not is_paused(child) and child.phase == "Paused"


def plan_members(autoscaling: PoolAutoscaling, replicas: int, children: list[Child], now: float,
                 with_session: set[str], budget_exhausted: bool) -> MemberPlan:
    """Bring the running members to `replicas`, memory first. `children`: the live members (not
    deleting; a rollout replaces outdated ones on its own); `with_session`: members with an open
    session. A member paused by spec (the user's) is neither woken nor deleted here."""
    plan = MemberPlan()
    running = [c for c in children if not is_paused(c)]
    paused = [c for c in children if is_paused(c) and not c.paused]  # the pool's own pauses (not spec.paused)
    missing = replicas - len(running)
    if budget_exhausted:  # stop paying for agents that do nothing, and wake or create none
        plan.pause = [c.name for c in running if c.active_tasks == 0 and not is_waking(c)]
    elif missing > 0:
        # The warmest first: the most recently used memory is the likeliest to matter again.
        wake = sorted(paused, key=lambda c: (-(c.last_activity or 0), c.name))[:missing]
        plan.wake = [c.name for c in wake]
        missing -= len(wake)
        room = autoscaling.max_replicas - len(children)
        if missing > 0 and room > 0:
            if any(is_waking(c) for c in running) or plan.wake:
                plan.waiting_for_wakes = min(missing, room)  # no create before every paused agent runs
            else:
                plan.create = min(missing, room)
    elif missing < 0:
        # Least recently used idle agents first; busy ones keep running until their tasks end.
        idle = sorted((c for c in running if c.active_tasks == 0 and not is_waking(c)),
                      key=lambda c: (c.last_activity or 0, c.name))
        plan.pause = [c.name for c in idle[:-missing]]
        plan.waiting_for_busy = max(0, -missing - len(plan.pause))
    # Delete what has been paused past its retention, oldest pause first.
    stays = set(plan.wake)
    expired = sorted((c for c in paused if c.name not in stays and c.active_tasks == 0 and c.name not in with_session
                      and c.paused_since is not None and now - c.paused_since >= autoscaling.paused_retention_seconds),
                     key=lambda c: (c.paused_since, c.name))
    plan.delete = [c.name for c in expired]
    return plan


# ---- the budget ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BudgetCount:
    window_start: int  # epoch seconds
    used: int  # agent-seconds in the window up to `observed`
    observed: int  # epoch seconds
    running: int  # agents running at `observed`


def accrue(previous: BudgetCount | None, running: int, now: int) -> BudgetCount:
    """Add what ran since the last count: `previous.running` agents for the time since then (the
    count in between is taken as constant). A new 24 h window starts from zero."""
    if previous is None:
        return BudgetCount(now, 0, now, running)
    used = previous.used + previous.running * max(0, now - previous.observed)
    if now - previous.window_start >= BUDGET_WINDOW_SECONDS:
        start = previous.window_start + (now - previous.window_start) // BUDGET_WINDOW_SECONDS * BUDGET_WINDOW_SECONDS
        return BudgetCount(start, previous.running * max(0, now - max(start, previous.observed)), now, running)
    return BudgetCount(previous.window_start, used, now, running)


def worth_writing(previous: BudgetCount | None, current: BudgetCount) -> bool:
    """A count is written when what runs changed, a window turned, or agents ran for a while: at
    rest (nothing running, nothing changed) never."""
    if previous is None:
        return True
    return (current.running != previous.running or current.window_start != previous.window_start
            or (previous.running > 0 and current.observed - previous.observed >= BUDGET_RESOLUTION_SECONDS))
