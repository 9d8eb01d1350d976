"""A token bucket for asyncio: at most `rate` operations per second, bursts up to `burst`."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate: float, burst: int = 1):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()
        self.waited_seconds = 0.0  # total time callers spent waiting: exported as a metric

    async def take(self) -> None:
        # The lock makes waiters queue in order, so a burst of callers is spread at `rate`.
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens < 1:
                wait = (1 - self._tokens) / self.rate
                self.waited_seconds += wait
                await asyncio.sleep(wait)
                self._tokens = 1.0
                self._updated = time.monotonic()
            self._tokens -= 1
