"""What the last fleet-wide E2B list showed, by agent uid.

A reconcile that only updates code or pauses/resumes may plan from this instead of its own list
call (webhook fan-out and restarts touch every agent at once; each list costs a rate-limit token).
Anything that creates or kills still looks fresh first: crash safety rests on that look.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator

from remote_agents.controller.sandboxes import ObservedSandbox


class Sightings:
    def __init__(self, max_age_seconds: float):
        self.max_age = max_age_seconds
        self._by_uid: dict[str, list[ObservedSandbox]] = {}
        self._taken_at = float("-inf")
        self._listing: asyncio.Future[None] | None = None  # done when the fleet-wide list under way ends

    @contextlib.asynccontextmanager
    async def listing(self) -> AsyncIterator[None]:
        """Bracket a fleet-wide list: reconciles that find nothing fresh wait for it meanwhile."""
        self._listing = asyncio.get_running_loop().create_future()
        try:
            yield
        finally:
            self._listing.set_result(None)

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

    async def look(self, uid: str) -> list[ObservedSandbox] | None:
        """`recent(uid)`, but when what is known is too old and a fleet-wide list is under way,
        after it (waiting at most max_age): a restarted operator resumes every agent at once, and
        a list call each would queue them all behind the rate limit."""
        stale = time.monotonic() - self._taken_at > self.max_age
        if stale and self._listing is not None and not self._listing.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._listing), self.max_age)
        return self.recent(uid)

    def forget(self, uid: str) -> None:
        self._by_uid.pop(uid, None)
