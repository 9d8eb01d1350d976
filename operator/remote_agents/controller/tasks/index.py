"""Which AgentTasks wait, per target in priority order (tasks/priority.py), which run, and which
are marked for deletion while their run is live or our legacy finalizer holds them.

Kept up to date as each task's status changes, so that a dispatch round looks at the heads of
the queues and a poll round at the running tasks, instead of every task the operator knows
(finished ones stay until their TTL, a day by default)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import Any

from remote_agents.api.names import LEGACY_RUN_FINALIZER
from remote_agents.controller.tasks.priority import Place, place

Target = tuple[str, str, str]  # (namespace, "agent" | "pool", name): what a task asked to run on

WAITING_PHASES = (None, "Pending")


class TaskIndex:
    def __init__(self) -> None:
        self._queues: dict[Target, list[Place]] = {}  # each sorted: bisect keeps it so
        self._places: dict[str, tuple[Target, Place]] = {}  # uid of a waiting task -> where it waits
        self._explained: dict[Target, set[str]] = {}  # waiting tasks whose status shows why they wait
        self.running: set[str] = set()
        # Marked for deletion with a live run (another finalizer keeps them) or the legacy finalizer.
        self.cancelling: set[str] = set()

    def update(self, uid: str, target: Target, task: Mapping[str, Any] | None, priority: int = 0) -> None:
        """Record the task's current state (None: it is gone)."""
        status = (task or {}).get("status") or {}
        phase = status.get("phase")
        if task is not None and phase == "Running":
            self.running.add(uid)
        else:
            self.running.discard(uid)
        meta = (task or {}).get("metadata") or {}
        legacy = LEGACY_RUN_FINALIZER in (meta.get("finalizers") or ())
        if meta.get("deletionTimestamp") and (phase == "Running" or legacy):
            self.cancelling.add(uid)
        else:
            self.cancelling.discard(uid)
        waiting = task is not None and phase in WAITING_PHASES and not meta.get("deletionTimestamp")
        if waiting and uid not in self._places:
            where = place(task, priority)
            bisect.insort(self._queues.setdefault(target, []), where)
            self._places[uid] = (target, where)
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
        """The targets that have waiting tasks, the one whose head goes first (priority, then age) first."""
        return sorted(self._queues, key=lambda target: self._queues[target][0])

    def waiting(self, target: Target) -> Iterator[str]:
        """The target's waiting tasks (uids), in dispatch order. Lazy: a round reads only as far as
        it gets, so the index must not change while it reads (updates come from events and ended
        operations, never from the round itself)."""
        return (where[-1] for where in self._queues.get(target, ()))

    def queue_size(self) -> tuple[int, str | None]:
        """How many tasks wait, and the creationTimestamp of the one that came first."""
        created = [min(where[1] for where in queue) for queue in self._queues.values()]
        return len(self._places), min(created) if created else None

    def explained(self, target: Target) -> list[str]:
        """The target's waiting tasks whose status already shows a reason."""
        return list(self._explained.get(target, ()))
