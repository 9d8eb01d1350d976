"""The cost ledger of one agent: sandbox-seconds running and paused, accumulated from the phases
the operator writes. Pure.

status.usage keeps the totals and the last observation (phase and time). Each write adds the
time since lastObservedTime to the phase observed then, and moves the observation to now, so an
interval is counted once whoever writes and however often the operator restarts: a write that is
lost (a crash before it) is simply made later from the same recorded observation. Times are kept
at whole seconds and the intervals are computed between the recorded times, so they tile exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from remote_agents.api.timestamps import epoch, rfc3339

RUNNING_PHASES = frozenset({"SettingUp", "Updating", "Ready"})  # the sandbox runs (and is billed so)
PAUSED_PHASES = frozenset({"Paused"})
REFRESH_SECONDS = 300  # an agent whose status is not written otherwise gets its usage written this often


def accrue(usage: Mapping[str, Any] | None, phase: str | None, now: float) -> dict[str, Any]:
    """The usage to write now that the agent is observed in `phase`."""
    usage = usage or {}
    at = float(math.floor(now))
    last = epoch(usage.get("lastObservedTime"))
    elapsed = max(0.0, at - last) if last is not None else 0.0
    prior = usage.get("lastObservedPhase")
    return {"runningSeconds": float(usage.get("runningSeconds") or 0) + (elapsed if prior in RUNNING_PHASES else 0),
            "pausedSeconds": float(usage.get("pausedSeconds") or 0) + (elapsed if prior in PAUSED_PHASES else 0),
            "since": usage.get("since") or rfc3339(at), "lastObservedPhase": phase, "lastObservedTime": rfc3339(at)}


def due(usage: Mapping[str, Any] | None, now: float) -> bool:
    """Whether the usage should be written although nothing else is."""
    last = epoch((usage or {}).get("lastObservedTime"))
    return last is None or now - last >= REFRESH_SECONDS


def totals(views: Iterable[Any], now: float) -> Counter:
    """Sandbox-seconds by (namespace, pool or "", "running" | "paused") of these agents (fleet
    views: namespace, pool, phase, usage), counted up to now from each one's last observation."""
    seconds: Counter = Counter()
    for view in views:
        if view.usage is not None:
            usage = accrue(view.usage, view.phase, now)
            seconds[(view.namespace, view.pool or "", "running")] += usage["runningSeconds"]
            seconds[(view.namespace, view.pool or "", "paused")] += usage["pausedSeconds"]
    return seconds
