"""Operator settings, with their defaults (spelled here only): flags of `remote-agents operator`
(options.py), each with an environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from remote_agents.api.names import LEADER_LEASE


@dataclass(frozen=True)
class GatewaySettings:
    max_concurrency: int = 8  # E2B API calls at once
    # In-sandbox calls (commands, files) at once. Each goes to its sandbox's own envd, not to E2B's
    # API, and a setup command may run for minutes: under the API's bound, eight long setups would
    # stall every other agent's checkout.
    sandbox_concurrency: int = 64
    calls_per_second: float = 10.0
    creates_per_second: float = 1.0  # E2B Hobby: 1 create/s
    call_timeout_seconds: float = 60.0
    max_attempts: int = 4
    backoff_base_seconds: float = 1.0
    list_page_size: int = 100


@dataclass(frozen=True)
class LeaderElectionSettings:
    """One active replica: only the holder of the Lease acts (docs/architecture.md, "Leader election").
    Lease and renew deadline are client-go's defaults; the retry period is half of client-go's:
    a standby notices a released Lease at its next attempt, so it bounds a graceful handover.
    The library requires lease > renew deadline > 1.2 x retry period, each at least 1 s."""
    enabled: bool = False  # on in the shipped Deployment; a local `remote-agents up` runs one operator
    lease_name: str = LEADER_LEASE
    lease_namespace: str | None = None  # None: the pod's own namespace
    # Whole seconds (a Lease field): a standby takes over this long after the last renewal it saw.
    lease_duration_seconds: int = 15
    renew_deadline_seconds: float = 10.0  # a leader not renewed for this long stops acting
    retry_period_seconds: float = 1.0  # between attempts, to acquire or to renew


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
    github_api_hosts: tuple[str, ...] = ()  # GitHub API hosts tasks may publish to, besides api.github.com
    progress_interval_seconds: float = 5.0  # a running task's status.progress is refreshed at most this often
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)

    @classmethod
    def from_env(cls, **overrides) -> OperatorSettings:
        """The defaults above, then the environment (.env.example lists it), then `overrides` (flags;
        a repeatable flag not given, an empty tuple, leaves the environment's list)."""
        gateway = replace(GatewaySettings(), **_fields_from_environment(GatewaySettings(), GATEWAY_ENVIRONMENT))
        values = _fields_from_environment(cls(), OPERATOR_ENVIRONMENT)
        values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
        return cls(gateway=gateway, **values)


# Field -> environment variable.
GATEWAY_ENVIRONMENT = {
    "max_concurrency": "REMOTE_AGENTS_E2B_MAX_CONCURRENCY",
    "sandbox_concurrency": "REMOTE_AGENTS_E2B_SANDBOX_CONCURRENCY",
    "calls_per_second": "REMOTE_AGENTS_E2B_CALLS_PER_SECOND",
    "creates_per_second": "REMOTE_AGENTS_E2B_CREATES_PER_SECOND",
    "call_timeout_seconds": "REMOTE_AGENTS_E2B_CALL_TIMEOUT",
    "list_page_size": "REMOTE_AGENTS_E2B_LIST_PAGE_SIZE",
    "max_attempts": "REMOTE_AGENTS_E2B_MAX_ATTEMPTS",
}
OPERATOR_ENVIRONMENT = {
    "cluster_id": "REMOTE_AGENTS_CLUSTER_ID",
    "health_interval_seconds": "REMOTE_AGENTS_HEALTH_INTERVAL",
    "ref_poll_interval_seconds": "REMOTE_AGENTS_REF_POLL_INTERVAL",
    "orphan_grace_seconds": "REMOTE_AGENTS_ORPHAN_GRACE",
    "setup_timeout_seconds": "REMOTE_AGENTS_SETUP_TIMEOUT",
    "github_api_hosts": "REMOTE_AGENTS_GITHUB_API_HOSTS",  # comma-separated
    "progress_interval_seconds": "REMOTE_AGENTS_PROGRESS_INTERVAL",
}


def _fields_from_environment(defaults: object, environment: dict[str, str]) -> dict[str, object]:
    """The fields named in `environment` that its variables set, converted to the default's type."""
    found: dict[str, object] = {}
    for name, variable in environment.items():
        text = os.environ.get(variable)
        if not text:
            continue
        default = getattr(defaults, name)
        if isinstance(default, tuple):
            found[name] = tuple(item.strip() for item in text.split(",") if item.strip())
        else:
            found[name] = text if default is None or isinstance(default, str) else type(default)(float(text))
    return found
