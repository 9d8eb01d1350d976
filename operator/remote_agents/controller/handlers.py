"""Kopf handlers: they only translate events into calls of the reconcilers.

Imported by `remote-agents operator`, which sets `runtime.context` before Kopf starts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from remote_agents.api.models import GROUP, VERSION
from remote_agents.controller.agent_reconciler import RetryLater
from remote_agents.controller.runtime import runtime

FINALIZER = f"{GROUP}/finalizer"
AGENTS = (GROUP, VERSION, "remoteagents")


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
    await runtime().start(emit=_emit)
    memo["fleet_task"] = asyncio.create_task(runtime().fleet.run(), name="fleet-checks")


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("fleet_task")
    if task:
        task.cancel()


def _emit(body: Any, kind: str, reason: str, message: str) -> None:
    kopf.event(body, type=kind, reason=reason, message=message)


async def _run(step) -> None:
    try:
        await step
    except RetryLater as retry:
        raise kopf.TemporaryError(str(retry), delay=retry.delay) from None


@kopf.on.event(*AGENTS)
def track_agent(type: str | None, body: kopf.Body, **_: Any) -> None:
    runtime().fleet.observe(type, body)


@kopf.on.resume(*AGENTS)
@kopf.on.create(*AGENTS)
@kopf.on.update(*AGENTS)
async def reconcile_agent(body: kopf.Body, **_: Any) -> None:
    await _run(runtime().agents.reconcile(body))


@kopf.on.delete(*AGENTS)
async def delete_agent(body: kopf.Body, **_: Any) -> None:
    await _run(runtime().agents.delete(body))
