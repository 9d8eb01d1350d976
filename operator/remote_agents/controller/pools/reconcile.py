"""Carry out an AgentPool's plan on its RemoteAgents and report counts and conditions.

Only Kubernetes objects change here: each agent's own reconciler talks to E2B. Children are
always listed fresh from the API by label, so a restart or a stale watch cannot double-create.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from remote_agents.api.conditions import condition
from remote_agents.api.models import AgentPoolSpec
from remote_agents.api.names import AGENTS, API_VERSION, POOL_LABEL, POOLS, TEMPLATE_HASH_LABEL, TEMPLATES
from remote_agents.api.timestamps import epoch, rfc3339
from remote_agents.controller import metrics
from remote_agents.controller.clients.events import EventSink
from remote_agents.controller.clients.kube import Kube
from remote_agents.controller.pools import autoscale, decide
from remote_agents.controller.retry import RetryLater
from remote_agents.controller.status import Outcome, status_update
from remote_agents.controller.templates.users import TemplateUsers

log = logging.getLogger(__name__)
AUTOSCALE_SECONDS = 1.0  # how often autoscaled pools' queues are looked at (in memory)
AUTOSCALE_RESYNC_SECONDS = 10.0  # an autoscaled pool is reconciled at least this often


def _ready(agent: Mapping[str, Any]) -> bool:
    ready = condition(agent, "Ready")
    return ready.get("status") == "True" and ready.get("observedGeneration") == agent["metadata"].get("generation")


def child_view(agent: Mapping[str, Any], running: int = 0, held: int = 0,
               active_sessions: tuple[str, ...] = ()) -> decide.Child:
    """`running`: tasks the operator knows run on it now (its status mirrors that count only every
    few seconds); the larger of the two counts, so a busy agent is never taken for idle. `held`,
    `active_sessions`: the sessions it holds, and those with a task queued or running."""
    meta, spec, status = agent["metadata"], agent.get("spec") or {}, agent.get("status") or {}
    return decide.Child(
        name=meta["name"], template_hash=(meta.get("labels") or {}).get(TEMPLATE_HASH_LABEL, ""),
        ref=(spec.get("source") or {}).get("ref", "main"), paused=bool(spec.get("paused")), ready=_ready(agent),
        deleting=bool(meta.get("deletionTimestamp")), active_tasks=max(running, int(status.get("activeTasks") or 0)),
        created=meta.get("creationTimestamp", ""), sessions=held, active_sessions=active_sessions,
        idle_paused=bool(status.get("idlePaused")),
        phase=status.get("phase"), last_activity=epoch(status.get("lastActivityTime")),
        paused_since=epoch(status.get("idlePausedSince")),
    )


def _costs(child: decide.Child) -> bool:
    """Its sandbox runs (what the budget counts): created and not paused."""
    return child.phase not in (None, "Pending", "Paused", "Failed")


def _budget_count(status: Mapping[str, Any] | None) -> autoscale.BudgetCount | None:
    if not status:
        return None
    return autoscale.BudgetCount(int(epoch(status["windowStart"])), int(status.get("usedAgentSeconds") or 0),
                                 int(epoch(status["observedTime"])), int(status.get("runningAgents") or 0))


def _budget_status(count: autoscale.BudgetCount) -> dict[str, Any]:
    return {"windowStart": rfc3339(count.window_start), "usedAgentSeconds": count.used,
            "observedTime": rfc3339(count.observed), "runningAgents": count.running}


@dataclass
class Autoscaled:
    """One round's autoscaling: what it decided, for the status."""
    decision: autoscale.Decision
    queued: int
    budget: dict[str, Any] | None  # status.budget to write (the previous one when not worth a write)
    exhausted: bool


def child_manifest(pool: Mapping[str, Any], spec: AgentPoolSpec, name: str,
                   template_content: str | None = None) -> dict[str, Any]:
    meta = pool["metadata"]
    template = spec.template
    agent_spec = template.spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    agent_spec["paused"] = decide.desired_paused(spec)
    return {
        "apiVersion": API_VERSION, "kind": "RemoteAgent",
        "metadata": {
            "name": name, "namespace": meta["namespace"],
            "labels": {**template.metadata.labels, POOL_LABEL: meta["name"],
                       TEMPLATE_HASH_LABEL: decide.template_hash(spec, template_content)},
            "annotations": dict(template.metadata.annotations),
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "AgentPool", "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": agent_spec,
    }


class Coalescer:
    """Runs `work(key)` shortly after a poke; pokes during the delay fold into that one run."""

    def __init__(self, work: Callable[[tuple[str, str]], Awaitable[None]], delay: float = 0.2):
        self.work = work
        self.delay = delay
        self._scheduled: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task] = set()

    def poke(self, key: tuple[str, str]) -> None:
        if key in self._scheduled:
            return
        self._scheduled.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: tuple[str, str]) -> None:
        await asyncio.sleep(self.delay)
        self._scheduled.discard(key)  # pokes from now on schedule another run
        try:
            await self.work(key)
        except RetryLater as retry:
            log.info("pool %s/%s: %s; retrying in %.0fs", *key, retry, retry.delay)
            await asyncio.sleep(retry.delay)
            self.poke(key)
        except Exception:  # one failed round must not kill the coalescer; it is logged with its trace
            log.exception("reconcile of pool %s/%s failed", *key)


class Members(Protocol):
    """What an autoscaled pool does to its members' sandboxes (agents/idle.py AgentActivity)."""

    async def pause(self, namespace: str, name: str) -> None: ...

    async def resume(self, namespace: str, name: str) -> None: ...


class PoolReconciler:
    def __init__(self, kube: Kube, emit: EventSink, running_counts: Callable[[], Counter],
                 tasks_listed: asyncio.Event, template_users: TemplateUsers | None = None,
                 template_of: Callable[[str, str], Awaitable[dict | None]] | None = None,
                 session_holdings: Callable[[], Mapping[tuple[str, str], Any]] = dict,
                 queued: Callable[[str, str], int] = lambda namespace, pool: 0, members: Members | None = None):
        """`session_holdings()`: by (namespace, agent), the sessions it holds (.held) and those with a
        task queued or running (.active); `queued(namespace, pool)`: tasks waiting for the pool;
        `members`: pauses and wakes agents (both needed for autoscaling)."""
        self.kube = kube
        self.template_of = template_of or (lambda namespace, template: kube.get(TEMPLATES, namespace, template))
        self.template_users = template_users or TemplateUsers()  # told which E2BTemplate each pool names
        self.emit = emit
        self.running_counts = running_counts  # tasks running now, by (namespace, agent)
        self.session_holdings = session_holdings  # by (namespace, agent): .held and .active session names
        self.tasks_listed = tasks_listed  # set once running_counts has seen every task
        self.queued = queued
        self.members = members
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.coalescer = Coalescer(lambda key: self.reconcile(*key))
        self._history: dict[tuple[str, str], list[autoscale.Recommendation]] = {}  # autoscaled pools' recommendations
        # Autoscaled pools -> (queued, when) at their last poke by the autoscale loop.
        self._looked: dict[tuple[str, str], tuple[int, float]] = {}

    def poke(self, namespace: str, name: str) -> None:
        self.coalescer.poke((namespace, name))

    async def autoscale(self) -> None:
        """Pokes each autoscaled pool when its queue changed, and every AUTOSCALE_RESYNC_SECONDS
        anyway (stabilization windows, retention, budget): the queue is in memory, so looking
        costs nothing; the reconcile it pokes reads the pool and lists its agents."""
        await self.tasks_listed.wait()
        while True:
            await asyncio.sleep(AUTOSCALE_SECONDS)
            now = time.monotonic()
            for key, (queued, when) in list(self._looked.items()):
                depth = self.queued(*key)
                if depth != queued or now - when >= AUTOSCALE_RESYNC_SECONDS:
                    self._looked[key] = (depth, now)
                    self.poke(*key)

    async def reconcile(self, namespace: str, name: str) -> None:
        # Which agents are busy (kept at scale-down and rollout) comes from the tasks: a task the
        # operator has not listed yet must not leave its agent looking idle.
        await self.tasks_listed.wait()
        async with self._locks.setdefault((namespace, name), asyncio.Lock()):
            pool = await self.kube.get(POOLS, namespace, name)
            if pool is None or pool["metadata"].get("deletionTimestamp"):
                self.template_users.pool_seen(namespace, name, None)
                metrics.forget_pool(namespace, name)
                self._history.pop((namespace, name), None)
                self._looked.pop((namespace, name), None)
                return  # the garbage collector removes the agents; their finalizers kill the sandboxes
            await self._reconcile(pool)

    async def _reconcile(self, pool: Mapping[str, Any]) -> None:
        meta = pool["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = AgentPoolSpec.model_validate(pool["spec"])
        template_content = await self._template_content(namespace, name, spec)
        agents = await self.kube.list(AGENTS, namespace, f"{POOL_LABEL}={name}")
        owned = [a for a in agents if any(ref.get("uid") == meta["uid"]
                                          for ref in a["metadata"].get("ownerReferences") or [])]
        running = self.running_counts()
        holdings = self.session_holdings()
        children = []
        for agent in owned:
            key = (namespace, agent["metadata"]["name"])
            holding = holdings.get(key)
            children.append(child_view(agent, running.get(key, 0), len(holding.held) if holding else 0,
                                       tuple(sorted(holding.active)) if holding else ()))
        scaled, members = None, None
        if spec.autoscaling is not None and self.members is not None and decide.desired_paused(spec):
            members = decide.MemberPlan()  # paused: neither grows nor shrinks, every member just pauses
        elif spec.autoscaling is not None and self.members is not None:
            self._looked.setdefault((namespace, name), (-1, 0.0))  # the autoscale loop looks after it from now on
            scaled = await self._autoscale(pool, spec, children)
            spec = spec.model_copy(update={"replicas": scaled.decision.replicas})
            live = [c for c in children if not c.deleting]
            members = autoscale.plan_members(spec.autoscaling, spec.replicas, live, time.time(),
                                             {agent for (ns, agent), holding in holdings.items() if ns == namespace and holding.held}, scaled.exhausted)
        else:
            self._looked.pop((namespace, name), None)
            self._history.pop((namespace, name), None)
        plan = decide.plan_pool(name, spec, children, template_content, members)
        try:
            for child in plan.delete:
                await self.kube.delete(AGENTS, namespace, child)
                why = f" (paused longer than {spec.autoscaling.paused_retention_seconds}s)" \
                    if members and child in members.delete else ""
                self.emit(pool, "Normal", "AgentDeleted", f"deleted agent {child}{why}")
                if plan.lost_sessions.get(child):
                    self.emit(pool, "Warning", "SessionLost", f"deleting agent {child} loses sessions "
                                                              f"{', '.join(plan.lost_sessions[child])}: their "
                                                              f"next tasks fail (SessionAgentGone)")
            for child in plan.create:
                if await self.kube.create(AGENTS, namespace, child_manifest(pool, spec, child, template_content)):
                    self.emit(pool, "Normal", "AgentCreated", f"created agent {child}")
            for child, patch in plan.patch.items():
                await self.kube.patch(AGENTS, namespace, child, {"spec": patch})
            await self._wake_and_pause(pool, plan, scaled)
        except ApiException as error:
            if error.status in (400, 422):
                await self._write_status(pool, spec, children, plan, template_content, scaled,
                                         stalled=f"agents rejected: {error.reason}")
                raise RetryLater(f"agent manifest rejected: {error.reason}", 300) from None
            raise
        await self._write_status(pool, spec, children, plan, template_content, scaled)

    async def _template_content(self, namespace: str, name: str, spec: AgentPoolSpec) -> str | None:
        """The contentHash of the Ready build of the E2BTemplate the agents name, if they name one."""
        ref = spec.template.spec.template_ref
        self.template_users.pool_seen(namespace, name, ref.name if ref else None)
        if ref is None:
            return None
        template = await self.template_of(namespace, ref.name)
        return ((template or {}).get("status") or {}).get("readyContentHash")

    async def _autoscale(self, pool: Mapping[str, Any], spec: AgentPoolSpec,
                         children: list[decide.Child]) -> Autoscaled:
        """Decide the replicas from the queue (and the budget) and write them through /scale."""
        meta = pool["metadata"]
        key = (meta["namespace"], meta["name"])
        autoscaling = spec.autoscaling
        now = time.time()
        live = [c for c in children if not c.deleting]
        budget, exhausted = None, False
        if autoscaling.budget is not None:
            previous = _budget_count((pool.get("status") or {}).get("budget"))
            count = autoscale.accrue(previous, sum(_costs(c) for c in live), int(now))
            limit = autoscaling.budget.agent_seconds_per_day
            exhausted = count.used >= limit
            crossed = previous is not None and (previous.used >= limit) != exhausted  # shown as it happens
            budget = _budget_status(count if crossed or autoscale.worth_writing(previous, count) else previous)
        queued = self.queued(*key)
        # A pool seen for the first time (or by a restarted operator) starts from its replicas, so
        # that it shrinks only after a whole window of lower demand.
        history = self._history.get(key) or [(now - 1e-3, spec.replicas)]
        decision = autoscale.decide_replicas(autoscaling, spec.replicas, queued, sum(c.active_tasks for c in live),
                                             history, now, exhausted)
        self._history[key] = autoscale.prune([*history, (now, decision.wanted)], now, autoscaling)
        if decision.replicas != spec.replicas:
            log.info("pool %s/%s: %s", *key, decision.message)
            await self.kube.scale(POOLS, *key, decision.replicas)
            self.emit(pool, "Normal", decision.reason, decision.message)
        if exhausted and condition(pool, "BudgetExhausted").get("status") != "True":
            self.emit(pool, "Warning", "BudgetExhausted", f"used {budget['usedAgentSeconds']} of {limit} "
                      "agent-seconds today: not growing, pausing idle agents")
        return Autoscaled(decision, queued, budget, exhausted)

    async def _wake_and_pause(self, pool: Mapping[str, Any], plan: decide.PoolPlan, scaled: Autoscaled | None) -> None:
        namespace = pool["metadata"]["namespace"]
        running = self.running_counts()  # again: a task may have been handed to one while this round read the API
        idle = [name for name in plan.pause if not running.get((namespace, name))]
        for names, act, reason, verb in ((plan.wake, self.members.resume, "AgentsWoken", "woke paused"),
                                         (idle, self.members.pause, "AgentsPaused", "paused idle")):
            if not names:
                continue
            # All at once: one after the other, a burst waits on 2 API calls per agent before it runs.
            await asyncio.gather(*(act(namespace, name) for name in names))
            why = "the daily budget is used up" if scaled.exhausted and reason == "AgentsPaused" \
                else scaled.decision.message
            self.emit(pool, "Normal", reason, f"{verb} {len(names)} agents ({', '.join(names)}): {why}")

    async def _write_status(self, pool: Mapping[str, Any], spec: AgentPoolSpec, children: list[decide.Child],
                            plan: decide.PoolPlan, template_content: str | None, scaled: Autoscaled | None,
                            stalled: str | None = None) -> None:
        meta = pool["metadata"]
        generation = meta.get("generation", 0)
        current = dict(pool.get("status") or {})
        counts = decide.pool_status(meta["name"], spec, children, template_content)
        metrics.set_pool(meta["namespace"], meta["name"], desired=spec.replicas, ready=counts["readyReplicas"],
                         current=counts["replicas"], paused=counts["pausedReplicas"])
        acting = bool(plan.create or plan.delete or plan.patch or plan.wake or plan.pause or plan.waiting_for_wakes)
        if scaled is None:
            running, running_ready = counts["replicas"], counts["readyReplicas"]
        else:  # replicas are the running agents; paused ones stay members
            live = [c for c in children if not c.deleting]
            running = sum(not autoscale.is_paused(c) for c in live)
            running_ready = sum(c.ready and not autoscale.is_paused(c) and not autoscale.is_waking(c) for c in live)
        settled = (running == running_ready == spec.replicas and counts["updatedReplicas"] == counts["replicas"]
                   and not acting)
        rolling = counts["updatedReplicas"] < counts["replicas"]
        paused_note = f", {counts['pausedReplicas']} paused" if scaled else ""
        if stalled:
            outcome = Outcome(False, "AgentsRejected", stalled, stalled=True)
        elif settled:
            outcome = Outcome(True, "AllAgentsReady", f"{spec.replicas} agents ready{paused_note}")
        else:
            why = "RollingUpdate" if rolling else "Scaling"
            extra = f", keeping {plan.waiting_for_busy} busy agents until their tasks end" if plan.waiting_for_busy else ""
            if plan.waiting_for_wakes:
                extra += f", {plan.waiting_for_wakes} to create once the woken agents run"
            outcome = Outcome(False, why, f"{running_ready}/{spec.replicas} ready, "
                                          f"{counts['updatedReplicas']} updated{paused_note}{extra}", reconciling=True)
        progressing_reason = "RolloutComplete" if settled else ("RollingUpdate" if rolling else "Scaling")
        extra_conditions: tuple[tuple, ...] = (("Progressing", not stalled, progressing_reason),)
        fields: dict[str, Any] = dict(counts)
        if scaled is not None:
            decision = scaled.decision
            extra_conditions += (("ScalingActive", True, decision.reason, decision.message),)
            if spec.autoscaling.budget is not None:
                extra_conditions += (("BudgetExhausted", scaled.exhausted,
                                      "BudgetExhausted" if scaled.exhausted else "WithinBudget",
                                      f"{scaled.budget['usedAgentSeconds']} of "
                                      f"{spec.autoscaling.budget.agent_seconds_per_day} agent-seconds used since "
                                      f"{scaled.budget['windowStart']}"),)
                fields["budget"] = scaled.budget
            fields["queuedTasks"] = scaled.queued
        desired = status_update(current, outcome, generation, extra_conditions, **fields)
        if desired is not None:
            await self.kube.patch_status(POOLS, meta["namespace"], meta["name"], desired)
