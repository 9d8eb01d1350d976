"""Prometheus metrics (prefix `remote_agents_`, low-cardinality labels) and the operator's
small HTTP endpoint: `/metrics`, `/healthz`, `/readyz` and `/leader`."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from remote_agents.api.timestamps import epoch

registry = CollectorRegistry()

E2B_CALLS = Counter("remote_agents_e2b_calls_total", "E2B calls by operation and outcome",
                    ["operation", "outcome"], registry=registry)
E2B_LATENCY = Histogram("remote_agents_e2b_call_duration_seconds", "E2B call latency", ["operation"],
                        registry=registry, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
RATE_LIMIT_WAIT = Counter("remote_agents_e2b_rate_limit_wait_seconds", "Time calls waited for the rate limit",
                        ["bucket"], registry=registry)
RECONCILE_DURATION = Histogram("remote_agents_reconcile_duration_seconds", "Reconcile duration", ["kind"],
                               registry=registry, buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300))
AGENTS = Gauge("remote_agents_agents", "RemoteAgents by phase", ["phase"], registry=registry)
POOL_REPLICAS = Gauge("remote_agents_pool_replicas", "AgentPool replicas by kind (desired, ready, current, paused)",
                      ["namespace", "pool", "kind"], registry=registry)
POOL_QUEUED_TASKS = Gauge("remote_agents_pool_queued_tasks", "AgentTasks waiting for an agent of a pool (pools with "
                          "none waiting have no series)", ["namespace", "pool"], registry=registry)
ORPHANS_KILLED = Counter("remote_agents_orphan_sandboxes_killed_total", "Untracked sandboxes of ours killed",
                         registry=registry)
TIME_TO_READY = Histogram("remote_agents_agent_time_to_ready_seconds", "From a RemoteAgent's creation to Ready",
                          registry=registry, buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600))
TASKS = Counter("remote_agents_tasks_total", "Finished AgentTasks by outcome", ["outcome"], registry=registry)
TASK_DURATION = Histogram("remote_agents_task_duration_seconds", "AgentTask run time", registry=registry,
                          buckets=(0.5, 1, 5, 10, 30, 60, 300, 900, 3600))
RECONCILE_FAILURES = Counter("remote_agents_reconcile_failures_total",
                             "Reconciles that ended early: retry (a known condition, retried later) or error (a bug)",
                             ["kind", "outcome"], registry=registry)
AGENTS_STALLED = Gauge("remote_agents_agents_stalled", "RemoteAgents whose Stalled condition is True",
                       registry=registry)
TASKS_WAITING = Gauge("remote_agents_tasks_waiting", "AgentTasks waiting for an agent (phase Pending)",
                      registry=registry)
OLDEST_WAITING_TASK = Gauge("remote_agents_task_oldest_waiting_seconds",
                            "How long the longest-waiting Pending AgentTask has waited (0: none waits)",
                            registry=registry)
LEADER = Gauge("remote_agents_leader", "1 while this replica acts (holds the Lease, or runs without election)",
               registry=registry)
TASK_AGENT_SECONDS = Counter("remote_agents_task_agent_seconds_total",
                             "Agent-seconds used by AgentTasks' runs (run seconds / the agent's maxConcurrentTasks)",
                             ["namespace", "pool"], registry=registry)
AGENT_SANDBOX_SECONDS = Gauge("remote_agents_agent_sandbox_seconds",
                              "Sandbox-seconds of the agents that exist, from their status.usage (the cost ledger)",
                              ["namespace", "pool", "state"], registry=registry)
WEBHOOK_DELIVERIES = Counter("remote_agents_webhook_deliveries_total", "GitHub deliveries by event and outcome",
                             ["event", "outcome"], registry=registry)


def observe_e2b(operation: str, outcome: str, seconds: float) -> None:
    E2B_CALLS.labels(operation, outcome).inc()
    E2B_LATENCY.labels(operation).observe(seconds)


def observe_rate_limit_wait(bucket: str, seconds: float) -> None:
    RATE_LIMIT_WAIT.labels(bucket).inc(seconds)


def observe_time_to_ready(created: str | None) -> None:
    created_at = epoch(created)
    if created_at is not None:
        TIME_TO_READY.observe(max(0.0, time.time() - created_at))


POOL_REPLICA_KINDS = ("desired", "ready", "current", "paused")


def set_pool(namespace: str, pool: str, desired: int, ready: int, current: int = 0, paused: int = 0) -> None:
    """`current`: members that exist (running or paused)."""
    for kind, value in zip(POOL_REPLICA_KINDS, (desired, ready, current, paused)):
        POOL_REPLICAS.labels(namespace, pool, kind).set(value)


def forget_pool(namespace: str, pool: str) -> None:
    """A deleted pool leaves no stale series behind."""
    for kind in POOL_REPLICA_KINDS:
        try:
            POOL_REPLICAS.remove(namespace, pool, kind)
        except KeyError:
            pass


def set_pool_queues(queued: dict[tuple[str, str], int]) -> None:
    """Tasks waiting per (namespace, pool), from the queue in memory at scrape time."""
    POOL_QUEUED_TASKS.clear()
    for (namespace, pool), count in queued.items():
        POOL_QUEUED_TASKS.labels(namespace, pool).set(count)


def set_task_queue(waiting: int, oldest_created: str | None) -> None:
    TASKS_WAITING.set(waiting)
    created_at = epoch(oldest_created)
    OLDEST_WAITING_TASK.set(max(0.0, time.time() - created_at) if created_at is not None else 0)


def set_agent_usage(usage: Tally) -> None:
    """`usage`: seconds by (namespace, pool or "", "running" | "paused")."""
    AGENT_SANDBOX_SECONDS.clear()
    for (namespace, pool, state), seconds in usage.items():
        AGENT_SANDBOX_SECONDS.labels(namespace, pool, state).set(seconds)


def set_agent_phases(phases: Tally) -> None:
    AGENTS.clear()
    for phase, count in phases.items():
        AGENTS.labels(phase or "Pending").set(count)


def app(healthy: Callable[[], bool], leading: Callable[[], bool], refresh: Callable[[], None]) -> web.Application:
    """`/healthz` (liveness) and `/readyz` (readiness) answer 200 for a healthy leader and a
    healthy standby alike, naming which: a standby must count as ready, or a rolling update with
    maxUnavailable 0 never proceeds and the PodDisruptionBudget never allows a drain.
    `/leader` is 200 on the leader only, for whoever needs to find it."""
    def role() -> str:
        return "leader" if leading() else "standby"

    async def metrics(_: web.Request) -> web.Response:
        refresh()
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text=f"ok: {role()}") if healthy() else web.Response(status=503, text="unhealthy")

    async def leader(_: web.Request) -> web.Response:
        return web.Response(text="leader") if leading() else web.Response(status=503, text="standby")

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/readyz", healthz)
    application.router.add_get("/leader", leader)
    return application


async def serve(application: web.Application, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
