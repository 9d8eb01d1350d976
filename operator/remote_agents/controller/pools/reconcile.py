"""Carry out an AgentPool's plan on its RemoteAgents and report counts and conditions.

Only Kubernetes objects change here: each agent's own reconciler talks to E2B. Children are
always listed fresh from the API by label, so a restart or a stale watch cannot double-create.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from remote_agents.api.conditions import condition
from remote_agents.api.models import AgentPoolSpec
from remote_agents.api.names import AGENTS, API_VERSION, POOL_LABEL, POOLS, TEMPLATE_HASH_LABEL, TEMPLATES
from remote_agents.controller import metrics
from remote_agents.controller.clients.events import EventSink
from remote_agents.controller.clients.kube import Kube
from remote_agents.controller.pools import decide
from remote_agents.controller.retry import RetryLater
from remote_agents.controller.status import Outcome, status_update
from remote_agents.controller.templates.users import TemplateUsers

log = logging.getLogger(__name__)


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
    )


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


class PoolReconciler:
    def __init__(self, kube: Kube, emit: EventSink, running_counts: Callable[[], Counter],
                 tasks_listed: asyncio.Event, template_users: TemplateUsers | None = None,
                 template_of: Callable[[str, str], Awaitable[dict | None]] | None = None,
                 session_holdings: Callable[[], Mapping[tuple[str, str], Any]] = dict):
        self.kube = kube
        self.template_of = template_of or (lambda namespace, template: kube.get(TEMPLATES, namespace, template))
        self.template_users = template_users or TemplateUsers()  # told which E2BTemplate each pool names
        self.emit = emit
        self.running_counts = running_counts  # tasks running now, by (namespace, agent)
        self.session_holdings = session_holdings  # by (namespace, agent): .held and .active session names
        self.tasks_listed = tasks_listed  # set once running_counts has seen every task
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.coalescer = Coalescer(lambda key: self.reconcile(*key))

    def poke(self, namespace: str, name: str) -> None:
        self.coalescer.poke((namespace, name))

    async def reconcile(self, namespace: str, name: str) -> None:
        # Which agents are busy (kept at scale-down and rollout) comes from the tasks: a task the
        # operator has not listed yet must not leave its agent looking idle.
        await self.tasks_listed.wait()
        async with self._locks.setdefault((namespace, name), asyncio.Lock()):
            pool = await self.kube.get(POOLS, namespace, name)
            if pool is None or pool["metadata"].get("deletionTimestamp"):
                self.template_users.pool_seen(namespace, name, None)
                metrics.forget_pool(namespace, name)
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
        plan = decide.plan_pool(name, spec, children, template_content)
        try:
            for child in plan.delete:
                await self.kube.delete(AGENTS, namespace, child)
                self.emit(pool, "Normal", "AgentDeleted", f"deleted agent {child}")
                if plan.lost_sessions.get(child):
                    self.emit(pool, "Warning", "SessionLost", f"deleting agent {child} loses sessions "
                                                              f"{', '.join(plan.lost_sessions[child])}: their "
                                                              f"next tasks fail (SessionAgentGone)")
            for child in plan.create:
                if await self.kube.create(AGENTS, namespace, child_manifest(pool, spec, child, template_content)):
                    self.emit(pool, "Normal", "AgentCreated", f"created agent {child}")
            for child, patch in plan.patch.items():
                await self.kube.patch(AGENTS, namespace, child, {"spec": patch})
        except ApiException as error:
            if error.status in (400, 422):
                await self._write_status(pool, spec, children, plan, template_content,
                                         stalled=f"agents rejected: {error.reason}")
                raise RetryLater(f"agent manifest rejected: {error.reason}", 300) from None
            raise
        await self._write_status(pool, spec, children, plan, template_content)

    async def _template_content(self, namespace: str, name: str, spec: AgentPoolSpec) -> str | None:
        """The contentHash of the Ready build of the E2BTemplate the agents name, if they name one."""
        ref = spec.template.spec.template_ref
        self.template_users.pool_seen(namespace, name, ref.name if ref else None)
        if ref is None:
            return None
        template = await self.template_of(namespace, ref.name)
        return ((template or {}).get("status") or {}).get("readyContentHash")

    async def _write_status(self, pool: Mapping[str, Any], spec: AgentPoolSpec, children: list[decide.Child],
                            plan: decide.PoolPlan, template_content: str | None,
                            stalled: str | None = None) -> None:
        meta = pool["metadata"]
        generation = meta.get("generation", 0)
        current = dict(pool.get("status") or {})
        counts = decide.pool_status(meta["name"], spec, children, template_content)
        metrics.set_pool(meta["namespace"], meta["name"], desired=spec.replicas, ready=counts["readyReplicas"])
        acting = bool(plan.create or plan.delete or plan.patch)
        settled = (counts["replicas"] == spec.replicas and counts["readyReplicas"] == spec.replicas
                   and counts["updatedReplicas"] == spec.replicas and not acting)
        rolling = counts["updatedReplicas"] < counts["replicas"]
        if stalled:
            outcome = Outcome(False, "AgentsRejected", stalled, stalled=True)
        elif settled:
            outcome = Outcome(True, "AllAgentsReady", f"{spec.replicas} agents ready")
        else:
            why = "RollingUpdate" if rolling else "Scaling"
            extra = f", keeping {plan.waiting_for_busy} busy agents until their tasks end" if plan.waiting_for_busy else ""
            outcome = Outcome(False, why, f"{counts['readyReplicas']}/{spec.replicas} ready, "
                                          f"{counts['updatedReplicas']} updated{extra}", reconciling=True)
        progressing_reason = "RolloutComplete" if settled else ("RollingUpdate" if rolling else "Scaling")
        desired = status_update(current, outcome, generation, (("Progressing", not stalled, progressing_reason),),
                                **counts)
        if desired is not None:
            await self.kube.patch_status(POOLS, meta["namespace"], meta["name"], desired)
