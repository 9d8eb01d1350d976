"""A token bucket for asyncio: at most `rate` operations per second, bursts up to `burst`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, burst: int = 1, on_wait: Callable[[float], None] | None = None):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()
        self._on_wait = on_wait or (lambda seconds: None)  # told each wait: exported as a metric

    async def take(self) -> None:
        # The lock makes waiters queue in order, so a burst of callers is spread at `rate`.
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens < 1:
                wait = (1 - self._tokens) / self.rate
                self._on_wait(wait)
                await asyncio.sleep(wait)
                self._tokens = 1.0
                self._updated = time.monotonic()
            self._tokens -= 1
