"""The order in which waiting AgentTasks get a slot. Pure.

Higher spec.priority first; within one priority, first come first (creationTimestamp, ties
broken by name). Every queue is per target (namespace, agent or pool), and a target belongs to
one namespace (agentRef and poolRef name objects of the task's own namespace): namespaces never
compete for one agent's slots, so a burst in one namespace cannot delay another's tasks. A round
serves the heads of all targets (tasks/dispatch.py); where two targets of one namespace share an
agent (an agentRef to a pool member, and poolRef tasks), the head with the higher priority,
then the older one, is served first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Place = tuple[int, str, str, str]  # (-priority, creationTimestamp, name, uid): sorted ascending


def place(task: Mapping[str, Any], priority: int) -> Place:
    """Where a waiting task stands in its target's queue."""
    meta = task["metadata"]
    return (-priority, meta.get("creationTimestamp") or "", meta["name"], meta["uid"])
