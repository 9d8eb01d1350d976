"""Which AgentTasks wait, per target and in FIFO order, and which run.

Kept up to date as each task's status changes, so that a dispatch round looks at the heads of
the queues and a poll round at the running tasks, instead of every task the operator knows
(finished ones stay until their TTL, a day by default)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import Any

Target = tuple[str, str, str]  # (namespace, "agent" | "pool", name): what a task asked to run on
_Place = tuple[str, str, str]  # (creationTimestamp, name, uid): FIFO order, ties broken by name

WAITING_PHASES = (None, "Pending")


class TaskIndex:
    def __init__(self) -> None:
        self._queues: dict[Target, list[_Place]] = {}  # each sorted: bisect keeps it so
        self._places: dict[str, tuple[Target, _Place]] = {}  # uid of a waiting task -> where it waits
        self._explained: dict[Target, set[str]] = {}  # waiting tasks whose status shows why they wait
        self.running: set[str] = set()

    def update(self, uid: str, target: Target, task: Mapping[str, Any] | None) -> None:
        """Record the task's current state (None: it is gone)."""
        status = (task or {}).get("status") or {}
        phase = status.get("phase")
        if task is not None and phase == "Running":
            self.running.add(uid)
        else:
            self.running.discard(uid)
        waiting = task is not None and phase in WAITING_PHASES
        if waiting and uid not in self._places:
            place = (task["metadata"].get("creationTimestamp") or "", task["metadata"]["name"], uid)
            bisect.insort(self._queues.setdefault(target, []), place)
            self._places[uid] = (target, place)
        elif not waiting and uid in self._places:
            queue = self._queues[target]
            del queue[bisect.bisect_left(queue, self._places.pop(uid)[1])]
            if not queue:
                del self._queues[target]
        if waiting and status.get("conditions"):
            self._explained.setdefault(target, set()).add(uid)
        elif uid in self._explained.get(target, ()):
            self._explained[target].discard(uid)
            if not self._explained[target]:
                del self._explained[target]

    def targets(self) -> list[Target]:
        """The targets that have waiting tasks, the one whose first task came first first."""
        return sorted(self._queues, key=lambda target: self._queues[target][0])

    def waiting(self, target: Target) -> Iterator[str]:
        """The target's waiting tasks (uids), first come first. Lazy: a round reads only as far as
        it gets, so the index must not change while it reads (updates come from events and ended
        operations, never from the round itself)."""
        return (uid for _, _, uid in self._queues.get(target, ()))

    def queue_size(self) -> tuple[int, str | None]:
        """How many tasks wait, and the creationTimestamp of the one that came first."""
        heads = [queue[0][0] for queue in self._queues.values()]
        return len(self._places), min(heads) if heads else None

    def explained(self, target: Target) -> list[str]:
        """The target's waiting tasks whose status already shows a reason."""
        return list(self._explained.get(target, ()))
