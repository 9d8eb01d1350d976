"""What the last fleet-wide E2B list showed, by agent uid.

A reconcile that only updates code or pauses/resumes may plan from this instead of its own list
call (webhook fan-out and restarts touch every agent at once; each list costs a rate-limit token).
Anything that creates or kills still looks fresh first: crash safety rests on that look.
"""

from __future__ import annotations

import time
from collections import defaultdict

from remote_agents.controller.e2b_gateway import ObservedSandbox


class Sightings:
    def __init__(self, max_age_seconds: float):
        self.max_age = max_age_seconds
        self._by_uid: dict[str, list[ObservedSandbox]] = {}
        self._taken_at = 0.0

    def record(self, sandboxes: list[ObservedSandbox]) -> dict[str, list[ObservedSandbox]]:
        """Remember a fresh fleet-wide list; returns it grouped by agent uid."""
        by_uid: dict[str, list[ObservedSandbox]] = defaultdict(list)
        for sandbox in sandboxes:
            if sandbox.uid:
                by_uid[sandbox.uid].append(sandbox)
        self._by_uid = dict(by_uid)
        self._taken_at = time.monotonic()
        return self._by_uid

    def recent(self, uid: str) -> list[ObservedSandbox] | None:
        """The agent's sandboxes as last seen, or None when that is unknown or too old. An agent
        absent from the list is unknown too (it may have been created since)."""
        if time.monotonic() - self._taken_at > self.max_age:
            return None
        return self._by_uid.get(uid)

    def forget(self, uid: str) -> None:
        self._by_uid.pop(uid, None)
