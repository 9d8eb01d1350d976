"""Every Kopf registration, one delegate line each: events become calls of the reconcilers of the
`Operator` (main.py) that kopf.Memo carries. Nothing else happens here."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

import kopf

from remote_agents.api.names import AGENTS, GROUP, POOLS, TEMPLATES, VERSION
from remote_agents.controller import metrics, tracing
from remote_agents.controller.retry import RetryLater

TEMPLATE_RECHECK_SECONDS = 60.0


async def _run(kind: str, namespace: str, name: str, step: Awaitable[None]) -> None:
    started = time.monotonic()
    with tracing.tracer.start_as_current_span(f"reconcile {kind}", attributes={
            "k8s.namespace.name": namespace, "remoteagents.kind": kind, "remoteagents.name": name}):
        try:
            await step
        except RetryLater as retry:
            metrics.RECONCILE_FAILURES.labels(kind, "retry").inc()
            raise kopf.TemporaryError(str(retry), delay=retry.delay) from None
        except Exception:
            metrics.RECONCILE_FAILURES.labels(kind, "error").inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.labels(kind).observe(time.monotonic() - started)


@kopf.on.resume(GROUP, VERSION, AGENTS)
@kopf.on.create(GROUP, VERSION, AGENTS)
@kopf.on.update(GROUP, VERSION, AGENTS)
async def reconcile_agent(body: kopf.Body, name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    await _run("RemoteAgent", namespace, name, memo.operator.agents.reconcile(body))


@kopf.on.delete(GROUP, VERSION, AGENTS)
async def delete_agent(body: kopf.Body, name: str, namespace: str, memo: kopf.Memo, retry: int, **_: Any) -> None:
    await _run("RemoteAgent", namespace, name, memo.operator.agents.delete(body, retry))


@kopf.on.resume(GROUP, VERSION, POOLS)
@kopf.on.create(GROUP, VERSION, POOLS)
@kopf.on.update(GROUP, VERSION, POOLS)
async def reconcile_pool(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    await _run("AgentPool", namespace, name, memo.operator.pools.reconcile(namespace, name))


@kopf.on.resume(GROUP, VERSION, TEMPLATES)
@kopf.on.create(GROUP, VERSION, TEMPLATES)
@kopf.on.update(GROUP, VERSION, TEMPLATES)
# Again now and then: a moved branch of a git copy step is new content.
@kopf.timer(GROUP, VERSION, TEMPLATES, interval=TEMPLATE_RECHECK_SECONDS, initial_delay=TEMPLATE_RECHECK_SECONDS)
async def reconcile_template(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _run("E2BTemplate", body["metadata"]["namespace"], body["metadata"]["name"],
               memo.operator.templates.reconcile(body))


@kopf.on.delete(GROUP, VERSION, TEMPLATES)
async def delete_template(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    await _run("E2BTemplate", body["metadata"]["namespace"], body["metadata"]["name"],
               memo.operator.templates.delete(body, retry))


@kopf.on.cleanup()
async def stop_acting(memo: kopf.Memo, **_: Any) -> None:
    # Kopf is stopping (a signal): our loops stop with it, and so does Kopf's own wait for the stop
    # flag, or its wait for unfinished tasks would hold the Lease's release for 5 s.
    await memo.operator.stop()
