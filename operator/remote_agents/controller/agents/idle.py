"""Agents' activity and idleness: the task room tells when tasks start and end; this mirrors it
into the agents' status (activeTasks, lastActivityTime), pauses agents idle for longer than their
spec.idlePauseSeconds and wakes them for the next task. With the reconciler's StatusWriter, the
only writers of RemoteAgent status."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from remote_agents.api.names import AGENTS
from remote_agents.api.timestamps import epoch, now_rfc3339, rfc3339
from remote_agents.controller.agents import ledger
from remote_agents.controller.agents.decide import AgentView, should_idle_pause
from remote_agents.controller.agents.fleet import Fleet
from remote_agents.controller.clients.events import EventSink
from remote_agents.controller.clients.kube import Kube

ACTIVITY_RESOLUTION_SECONDS = 30  # an agent's status.lastActivityTime may lag its real activity by this much

AgentKey = tuple[str, str]  # (namespace, name)


class AgentActivity:
    def __init__(self, kube: Kube, fleet: Fleet, emit: EventSink):
        self.kube = kube
        self.fleet = fleet
        self.emit = emit
        self._activity: dict[AgentKey, float] = {}  # last task start or end
        self._mirrored: dict[AgentKey, tuple[int, float]] = {}  # what its status says: (running, activity)
        self._usage_written: dict[AgentKey, float] = {}  # when we last wrote an agent's ledger (the view lags)

    def note(self, namespace: str, agent: str) -> None:
        """A task started or ended on the agent: its idle clock restarts now, in memory. The status
        follows at the next `mirror`: two writes per task would double the API load of short tasks,
        and what reads the count in this process (scale-down, dispatch) asks the task room."""
        self._activity[(namespace, agent)] = time.time()

    async def mirror(self, load: Counter) -> None:
        """Bring agents' status.activeTasks / lastActivityTime up to date, writing only when the
        count changed or the activity moved on by more than the resolution."""
        for key, at in list(self._activity.items()):
            running = load.get(key, 0)
            written = self._mirrored.get(key)
            if written and written[0] == running and at - written[1] < ACTIVITY_RESOLUTION_SECONDS:
                continue
            if await self.kube.patch_status(AGENTS, *key, {"activeTasks": running,
                                                          "lastActivityTime": rfc3339(at)}) is None:
                self._activity.pop(key, None)  # the agent is gone
                self._mirrored.pop(key, None)
                continue
            self._mirrored[key] = (running, at)

    async def refresh_usage(self, now: float) -> None:
        """Write the ledger of agents whose status nothing else wrote for ledger.REFRESH_SECONDS
        (a long quiet Ready or Paused spell), so that status.usage is never far behind."""
        for view in list(self.fleet.agents.values()):
            key = (view.namespace, view.name)
            if view.deleting or not ledger.due(view.usage, now) or \
                    now - self._usage_written.get(key, 0) < ledger.REFRESH_SECONDS:
                continue
            self._usage_written[key] = now
            await self.kube.patch_status(AGENTS, *key, {"usage": ledger.accrue(view.usage, view.phase, now)})

    async def pause_idle(self, now: float, load: Counter) -> None:
        for view in list(self.fleet.agents.values()):
            if view.deleting or not view.spec or not view.ready or view.paused:
                continue
            recorded = epoch(view.last_activity_time) or epoch(view.ready_since)
            idle_since = max(filter(None, (recorded, self._activity.get((view.namespace, view.name)))), default=None)
            if should_idle_pause(view.spec.idle_pause_seconds, load.get((view.namespace, view.name), 0),
                                 idle_since, view.idle_paused, now):
                await self.pause(view.namespace, view.name)

    async def pause(self, namespace: str, name: str) -> None:
        """Idle-pause an agent (its reconcile does the pause); the next task, or its pool, wakes it."""
        await self.kube.patch_status(AGENTS, namespace, name, {"idlePaused": True, "idlePausedSince": now_rfc3339()})
        await self.kube.request_reconcile(AGENTS, namespace, name)

    async def resume(self, namespace: str, name: str) -> None:
        """Wake an idle-paused agent (its reconcile does the resume); its idle clock starts now."""
        await self.kube.patch_status(AGENTS, namespace, name,
                                     {"idlePaused": False, "idlePausedSince": None, "lastActivityTime": now_rfc3339()})
        await self.kube.request_reconcile(AGENTS, namespace, name)

    async def wake(self, view: AgentView, for_task: Mapping[str, Any]) -> None:
        """Resume an idle-paused agent for a task."""
        await self.resume(view.namespace, view.name)
        self.emit(for_task, "Normal", "WakingAgent", f"resuming idle agent {view.name} for this task")
