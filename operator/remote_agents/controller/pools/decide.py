"""What an AgentPool should do to its RemoteAgents, like a ReplicaSet with a rollout. Pure.

Children are counted from a fresh API list each time (never a cache), names are deterministic
(`<pool>-<index>`, lowest free index first) so a repeated create is an AlreadyExists, not a twin.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from remote_agents.api.models import AgentPoolSpec
from remote_agents.api.names import POOL_LABEL


@dataclass(frozen=True)
class Child:
    name: str
    template_hash: str
    ref: str
    paused: bool
    ready: bool
    deleting: bool
    active_tasks: int
    created: str  # RFC 3339; sorts chronologically
    sessions: int = 0  # sessions it holds (their latest task ran on it)
    active_sessions: tuple[str, ...] = ()  # those with a task queued or running: drained before removal
    idle_paused: bool = False  # paused by the operator (idleness or the autoscaler): a task or the pool wakes it
    phase: str | None = None
    last_activity: float | None = None  # epoch of its last task start or end, or wake
    paused_since: float | None = None  # epoch of its last idle pause

    @property
    def busy(self) -> bool:
        """Running a task, or holding a session whose next task waits for it."""
        return self.active_tasks > 0 or bool(self.active_sessions)


@dataclass
class MemberPlan:
    """What an autoscaled pool does with its members (pools/autoscale.py plan_members)."""
    wake: list[str] = field(default_factory=list)
    pause: list[str] = field(default_factory=list)
    create: int = 0  # new agents (named by plan_pool)
    delete: list[str] = field(default_factory=list)
    waiting_for_busy: int = 0  # running agents kept beyond replicas because they have tasks
    waiting_for_wakes: int = 0  # creates held back until the woken agents run


@dataclass
class PoolPlan:
    create: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    patch: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> merge patch of its spec
    waiting_for_busy: int = 0  # extra agents kept because they are running tasks or hold active sessions
    lost_sessions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # deleted anyway -> its active sessions
    wake: list[str] = field(default_factory=list)  # idle-paused members to resume (autoscaling)
    pause: list[str] = field(default_factory=list)  # idle members to pause (autoscaling)
    waiting_for_wakes: int = 0


# Optional agent fields newer than the first release (as paths into the agent's spec), left out
# of the hash while unset.
FIELDS_ADDED_LATER = (("templateRef",), ("server",), ("source", "githubApp"))


def template_hash(spec: AgentPoolSpec, template_content: str | None = None) -> str:
    """Identity of the agents' shape. Leaves out what each agent applies in place: the code ref
    and pausing (the pool's `paused` or the template's). `template_content`: the contentHash of
    the Ready build of the E2BTemplate the agents name (spec.templateRef), so a rebuild rolls them."""
    agent = spec.template.spec.model_dump(by_alias=True, mode="json")
    agent["source"].pop("ref")
    agent.pop("paused")
    for *parents, added in FIELDS_ADDED_LATER:
        holder = agent
        for parent in parents:
            holder = holder[parent]
        if holder[added] is None:
            del holder[added]  # hashed as before the field existed: pools without it do not roll on upgrade
    labels = spec.template.metadata.model_dump(mode="json")
    shape = [agent, labels] + ([template_content] if template_content else [])
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:10]


def desired_paused(spec: AgentPoolSpec) -> bool:
    return spec.paused or spec.template.spec.paused


def max_unavailable(spec: AgentPoolSpec) -> int:
    value = spec.update_strategy.max_unavailable
    if isinstance(value, str) and value.endswith("%"):
        value = math.floor(spec.replicas * int(value[:-1]) / 100)
    # At least one, or a rollout with no surge could never make progress.
    return max(1, int(value))


def _index(pool: str, name: str) -> int | None:
    suffix = name.removeprefix(f"{pool}-")
    return int(suffix) if suffix != name and suffix.isdigit() else None


def _free_names(pool: str, taken: list[str], count: int) -> list[str]:
    used = {_index(pool, name) for name in taken}
    names, index = [], 0
    while len(names) < count:
        if index not in used:
            names.append(f"{pool}-{index}")
        index += 1
    return names


def _removal_order(children: list[Child]) -> list[Child]:
    """Scale-down order: not Ready first, then idle before busy, then those holding no session,
    then the newest first."""
    by_newest = sorted(children, key=lambda c: c.created, reverse=True)
    return sorted(by_newest, key=lambda c: (c.ready, c.busy, c.sessions > 0))


def plan_pool(pool: str, spec: AgentPoolSpec, children: list[Child], template_content: str | None = None,
              members: MemberPlan | None = None) -> PoolPlan:
    """`template_content`: see template_hash; while an E2BTemplate the agents name has no Ready
    build, nothing is rolled out (its agents could not be replaced). `members`: an autoscaled
    pool's plan for its members, which replaces counting them against spec.replicas (there
    replicas are the running ones; paused members stay)."""
    plan = PoolPlan()
    current_hash = template_hash(spec, template_content)
    holding = spec.template.spec.template_ref is not None and template_content is None
    live = [c for c in children if not c.deleting]
    if members is not None:
        plan.delete, plan.wake, plan.pause = list(members.delete), list(members.wake), list(members.pause)
        plan.waiting_for_busy, plan.waiting_for_wakes = members.waiting_for_busy, members.waiting_for_wakes
    # Scale down.
    excess = len(live) - spec.replicas if members is None else 0
    if excess > 0:
        for child in _removal_order(live):
            if excess == 0:
                break
            if child.busy and spec.replicas > 0:
                continue  # never interrupt a task or a session unless the pool goes to zero
            plan.delete.append(child.name)
            excess -= 1
        plan.waiting_for_busy = excess
    kept = [c for c in live if c.name not in plan.delete]

    # Roll out a new template: replace outdated agents within the unavailability budget.
    outdated = [] if holding else [c for c in kept if c.template_hash != current_hash]
    if spec.update_strategy.type == "Recreate":
        replace = outdated
    else:
        ready = sum(1 for c in kept if c.ready)
        budget = max_unavailable(spec) - max(0, spec.replicas - ready)
        replace = sorted(outdated, key=lambda c: (c.ready, c.busy, c.created))[:max(0, budget)]  # idle ones first
    replaced = [c.name for c in replace if not c.busy or spec.update_strategy.type == "Recreate"]
    plan.delete += replaced
    kept = [c for c in kept if c.name not in plan.delete]
    plan.lost_sessions = {c.name: c.active_sessions for c in live if c.name in plan.delete and c.active_sessions}

    # Scale up (also refills what the rollout removed). Names still held by deleting agents stay taken.
    missing = spec.replicas - len(kept) if members is None else members.create + len(replaced)
    if missing > 0:
        plan.create = _free_names(pool, [c.name for c in children], missing)

    # In place: the code ref and pausing.
    paused = desired_paused(spec)
    for child in kept:
        patch: dict[str, Any] = {}
        if child.ref != spec.template.spec.source.ref:
            patch["source"] = {"ref": spec.template.spec.source.ref}
        if child.paused != paused:
            patch["paused"] = paused
        if patch:
            plan.patch[child.name] = patch
    return plan


def pool_status(pool: str, spec: AgentPoolSpec, children: list[Child],
                template_content: str | None = None) -> dict[str, Any]:
    live = [c for c in children if not c.deleting]
    current_hash = template_hash(spec, template_content)
    return {
        "replicas": len(live),
        "readyReplicas": sum(1 for c in live if c.ready),
        "updatedReplicas": sum(1 for c in live if c.template_hash == current_hash),
        "pausedReplicas": sum(1 for c in live if c.paused or c.idle_paused),
        "selector": f"{POOL_LABEL}={pool}",
    }
