"""Server settings, parsed from the `remote-agents e2b-local` command line."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from remote_agents_local.processes import state_root

DEFAULT_API_KEY = "e2b_local_dev_key"
# Operations that accept --latency / --error-rate.
OPERATIONS = ("create", "connect", "pause", "kill", "list", "info", "timeout", "envd")
# The envd version reported to clients: the SDK gates features on it (0.6.x passes all gates).
ENVD_VERSION = "0.6.8"
DEFAULT_SANDBOX_TIMEOUT = 300


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    api_key: str
    state_dir: Path
    max_running: int
    max_timeout: int
    latency: dict[str, float] = field(default_factory=dict)
    error_rate: dict[str, float] = field(default_factory=dict)
    # None -> an unseeded RNG; set E2B_LOCAL_SEED to make injected faults reproducible.
    seed: int | None = None


def _parse_pairs(values: list[str], what: str) -> dict[str, float]:
    pairs: dict[str, float] = {}
    for item in values or []:
        op, sep, number = item.partition("=")
        if not sep or op not in OPERATIONS:
            raise ConfigError(f"--{what} expects OP=NUMBER with OP in {', '.join(OPERATIONS)}; got {item!r}")
        try:
            pairs[op] = float(number)
        except ValueError:
            raise ConfigError(f"--{what} {item!r}: {number!r} is not a number") from None
        if pairs[op] < 0 or (what == "error-rate" and pairs[op] > 1):
            raise ConfigError(f"--{what} {item!r} is out of range")
    return pairs


def from_args(args: argparse.Namespace) -> Settings:
    seed = os.environ.get("E2B_LOCAL_SEED")
    return Settings(
        host=args.host,
        port=args.port,
        api_key=args.api_key or DEFAULT_API_KEY,
        state_dir=Path(args.state_dir).expanduser().resolve() if args.state_dir else state_root() / "e2b-local",
        max_running=args.max_running,
        max_timeout=args.max_timeout,
        latency=_parse_pairs(args.latency, "latency"),
        error_rate=_parse_pairs(args.error_rate, "error-rate"),
        seed=int(seed) if seed else None,
    )
