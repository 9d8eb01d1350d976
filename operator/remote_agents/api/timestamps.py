"""Kubernetes timestamps (RFC 3339, UTC), written and read in one place."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def rfc3339(seconds: float) -> str:
    """A Kubernetes timestamp (whole seconds, UTC) of seconds since the epoch."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    return rfc3339(time.time())


def epoch(timestamp: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp (fractional seconds and offsets too), None for none."""
    if not timestamp:
        return None
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
