"""Injected latency and errors, per operation (see config.OPERATIONS)."""

from __future__ import annotations

import asyncio
import random

from remote_agents_local.e2b_local.config import Settings

# What E2B's edge answers when it sheds load; the SDK retries both, honouring Retry-After.
INJECTED_STATUSES = (503, 429)
RETRY_AFTER_SECONDS = "1"


class Faults:
    def __init__(self, settings: Settings) -> None:
        self.latency = settings.latency
        self.error_rate = settings.error_rate
        self.rng = random.Random(settings.seed)

    async def delay(self, op: str) -> None:
        seconds = self.latency.get(op, 0.0)
        if seconds:
            await asyncio.sleep(seconds)

    def injected_status(self, op: str) -> int | None:
        """The status of an error to answer instead of doing `op`, or None to go ahead."""
        rate = self.error_rate.get(op, 0.0)
        if rate and self.rng.random() < rate:
            return self.rng.choice(INJECTED_STATUSES)
        return None
