"""Constants and polling shared by the e2b_local tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

# Small enough that the limit test is cheap, large enough for the rest of the suite.
MAX_RUNNING = 12
MAX_TIMEOUT = 600


def wait_for(predicate: Callable[[], object], timeout: float = 10, interval: float = 0.1) -> object:
    """Poll until predicate() is truthy; fail (never hang) after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


def namespace_holders(sandbox_id: str) -> list[int]:
    """The sleeping processes that keep a mount namespace with this sandbox's /home mounted."""
    holders = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes() == b"sleep\0infinity\0" \
                    and sandbox_id in (proc / "mountinfo").read_text():
                holders.append(int(proc.name))
        except OSError:
            continue  # it exited meanwhile
    return holders

