"""Bun for the agents of Dexter's shape, from the npm registry (package `bun`, whose binary comes from
npm's @oven/bun-* packages), cached per user like the control plane:

    python -m remote_agents_local.bun install    # CI (.ci/run) and first-time set-up; a no-op when cached

The tests that run the agents need it and FAIL (never skip) when it is missing, naming that command.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from remote_agents_local.cache import cache_root

BUN_VERSION = "1.4.5"
INSTALL_COMMAND = "python -m remote_agents_local.bun install"


class BunMissing(RuntimeError):
    pass


def cache_dir() -> Path:
    return cache_root() / "bun" / BUN_VERSION


def binary() -> Path:
    return cache_dir() / "node_modules" / ".bin" / "bun"


def install() -> Path:
    path = binary()
    if path.is_file():
        print(f"[bun install] cached: {path}")
        return path
    npm = shutil.which("npm")
    if not npm:
        raise BunMissing("npm is needed to install bun (the npm registry's package `bun`)")
    cache_dir().mkdir(parents=True, exist_ok=True)
    print(f"[bun install] npm install bun@{BUN_VERSION} into {cache_dir()}", flush=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache_dir()), f"bun@{BUN_VERSION}"],
                   check=True)
    if not path.is_file():
        raise BunMissing(f"npm installed bun@{BUN_VERSION} but {path} is missing")
    return path


def require() -> Path:
    """The cached bun, or BunMissing saying how to install it."""
    path = binary()
    if not path.is_file():
        raise BunMissing(f"bun {BUN_VERSION} is not installed at {path}: run `{INSTALL_COMMAND}` (needs npm)")
    return path


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit(f"usage: {INSTALL_COMMAND}")
    print(install())
