"""Where the local tools keep what they build or download once per user (control-plane
binaries, helm, bun): outside any checkout, so fresh clones and CI runs reuse it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("REMOTE_AGENTS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "remote-agents")
    return Path(base)
