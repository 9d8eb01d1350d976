"""Constants and polling shared by the e2b_local tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

# Small enough that the limit test is cheap, large enough for the rest of the suite.
MAX_RUNNING = 12
MAX_TIMEOUT = 600
# Per-sandbox limits of the suite's server: small enough to hit cheaply, ample for the rest.
PIDS_MAX = 256
MEMORY_MB = 256
MAX_UPLOAD_MB = 8


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


def held_namespaces(pid: int) -> set[str]:
    """The mount namespaces process `pid` holds open as descriptors ("mnt:[inode]")."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("mnt:"):
            held.add(target)
    return held
