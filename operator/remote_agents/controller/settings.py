"""Operator settings: flags of `remote-agents operator`, each with an environment default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from remote_agents.controller.e2b_gateway import GatewaySettings


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class OperatorSettings:
    cluster_id: str | None = None  # None: the uid of kube-system
    health_interval_seconds: float = 30.0  # one E2B list for all agents per interval
    ref_poll_interval_seconds: float = 60.0  # ls-remote of each tracked branch
    orphan_grace_seconds: float = 300.0  # an untracked sandbox of ours lives this long before it is killed
    setup_timeout_seconds: float = 900.0
    git_timeout_seconds: float = 120.0
    retry_delay_seconds: float = 10.0  # after a transient failure
    stalled_retry_delay_seconds: float = 300.0  # after a failure that needs a human (auth, bad template)
    metrics_port: int | None = None  # /metrics and /healthz; None: not served
    webhook_port: int | None = None  # GitHub push receiver at /webhooks/github; None: not served
    webhook_secret: bytes = field(default=b"", repr=False)  # never printed, never logged
    namespaces: tuple[str, ...] = ()  # the namespaces served; empty: all
    gateway: GatewaySettings = field(default_factory=GatewaySettings)

    @classmethod
    def from_env(cls, **overrides) -> OperatorSettings:
        gateway = GatewaySettings(
            max_concurrency=int(_env_float("REMOTE_AGENTS_E2B_MAX_CONCURRENCY", 8)),
            sandbox_concurrency=int(_env_float("REMOTE_AGENTS_E2B_SANDBOX_CONCURRENCY", 64)),
            calls_per_second=_env_float("REMOTE_AGENTS_E2B_CALLS_PER_SECOND", 10),
            creates_per_second=_env_float("REMOTE_AGENTS_E2B_CREATES_PER_SECOND", 1),
            call_timeout_seconds=_env_float("REMOTE_AGENTS_E2B_CALL_TIMEOUT", 60),
        )
        values = dict(
            cluster_id=os.environ.get("REMOTE_AGENTS_CLUSTER_ID") or None,
            health_interval_seconds=_env_float("REMOTE_AGENTS_HEALTH_INTERVAL", 30),
            ref_poll_interval_seconds=_env_float("REMOTE_AGENTS_REF_POLL_INTERVAL", 60),
            orphan_grace_seconds=_env_float("REMOTE_AGENTS_ORPHAN_GRACE", 300),
            setup_timeout_seconds=_env_float("REMOTE_AGENTS_SETUP_TIMEOUT", 900),
            gateway=gateway,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
