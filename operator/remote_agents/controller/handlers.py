"""Kopf handlers: they only translate events into calls of the reconcilers.

Imported by `remote-agents operator`, which sets `runtime.context` before Kopf starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from remote_agents.api.models import GROUP, VERSION
from remote_agents.controller import metrics, webhook
from remote_agents.controller.agent_reconciler import RetryLater
from remote_agents.controller.pool_decisions import POOL_LABEL
from remote_agents.controller.kube import API_THREADS
from remote_agents.controller.runtime import runtime

FINALIZER = f"{GROUP}/finalizer"
AGENTS = (GROUP, VERSION, "remoteagents")
POOLS = (GROUP, VERSION, "agentpools")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Fixed on day one: changing these later would make every object look new to Kopf.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.INFO
    settings.networking.request_timeout = 60
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.peering.standalone = True
    # The Kubernetes client is synchronous and runs in threads: enough of them for pools and pushes.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=API_THREADS))
    await runtime().start()
    fleet_task = asyncio.create_task(runtime().fleet.run(), name="fleet-checks")
    runtime().task_watch.start(asyncio.get_running_loop())  # AgentTasks are streamed without Kopf
    memo["background"] = [fleet_task, asyncio.create_task(runtime().tasks.run(), name="tasks")]
    if runtime().settings.webhook_port is not None:
        memo["webhook_runner"] = await metrics.serve(
            webhook.webhook_app(runtime().settings.webhook_secret, runtime().fleet.on_push),
            runtime().settings.webhook_port)
    port = runtime().settings.metrics_port
    if port is not None:
        memo["metrics_runner"] = await metrics.serve(
            metrics.app(healthy=lambda: not any(t.done() for t in memo["background"]),
                        refresh=runtime().refresh_metrics), port)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    runtime().task_watch.stop()
    for task in memo.get("background", []):
        task.cancel()
    for key in ("metrics_runner", "webhook_runner"):
        if memo.get(key):
            await memo[key].cleanup()
    await runtime().kube.http.close()


async def _run(kind: str, step) -> None:
    started = time.monotonic()
    try:
        await step
    except RetryLater as retry:
        raise kopf.TemporaryError(str(retry), delay=retry.delay) from None
    finally:
        metrics.RECONCILE_DURATION.labels(kind).observe(time.monotonic() - started)


@kopf.on.event(*AGENTS)
async def track_agent(type: str | None, body: kopf.Body, labels: kopf.Labels, namespace: str, **_: Any) -> None:
    runtime().fleet.observe(type, body)
    runtime().tasks.agent_changed()
    pool = labels.get(POOL_LABEL)
    if pool:
        runtime().pools.poke(namespace, pool)  # a member changed: the pool recounts


@kopf.on.resume(*AGENTS)
@kopf.on.create(*AGENTS)
@kopf.on.update(*AGENTS)
async def reconcile_agent(body: kopf.Body, **_: Any) -> None:
    await _run("RemoteAgent", runtime().agents.reconcile(body))


@kopf.on.delete(*AGENTS)
async def delete_agent(body: kopf.Body, **_: Any) -> None:
    await _run("RemoteAgent", runtime().agents.delete(body))


@kopf.on.resume(*POOLS)
@kopf.on.create(*POOLS)
@kopf.on.update(*POOLS)
async def reconcile_pool(name: str, namespace: str, **_: Any) -> None:
    await _run("AgentPool", runtime().pools.reconcile(namespace, name))
