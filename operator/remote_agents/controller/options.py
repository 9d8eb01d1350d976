"""Flags of `remote-agents operator`. Kept apart from the operator so that building the CLI's
parser does not import Kopf, the Kubernetes client or the E2B SDK (settings.py imports none)."""

from __future__ import annotations

import argparse

from remote_agents.controller.settings import LeaderElectionSettings, OperatorSettings

DEFAULTS = OperatorSettings()
ELECTION = LeaderElectionSettings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="watch only these namespaces (repeatable); default: all namespaces")
    parser.add_argument("--cluster-id", help="tag for this cluster's sandboxes (default: uid of kube-system)")
    parser.add_argument("--health-interval", type=float,
                        help=f"seconds between fleet-wide E2B checks ({DEFAULTS.health_interval_seconds:g})")
    parser.add_argument("--ref-poll-interval", type=float,
                        help=f"seconds between branch checks ({DEFAULTS.ref_poll_interval_seconds:g})")
    parser.add_argument("--orphan-grace", type=float,
                        help=f"seconds before an untracked sandbox is killed ({DEFAULTS.orphan_grace_seconds:g})")
    parser.add_argument("--github-api-host", action="append", default=[], metavar="HOST",
                        help="a GitHub API host (GitHub Enterprise) AgentTasks may publish to, besides "
                             "api.github.com (repeatable; or REMOTE_AGENTS_GITHUB_API_HOSTS, comma-separated)")
    parser.add_argument("--progress-interval", type=float,
                        help="seconds between refreshes of a running task's status.progress "
                             f"({DEFAULTS.progress_interval_seconds:g})")
    parser.add_argument("--metrics-port", type=int, help="serve /metrics and /healthz on this port")
    parser.add_argument("--webhook-port", type=int,
                        help="serve the GitHub push receiver (/webhooks/github) on this port; needs a secret: "
                             "GITHUB_WEBHOOK_SECRET or --webhook-secret-from")
    parser.add_argument("--webhook-secret-from", metavar="NAMESPACE/SECRET[/KEY]",
                        help="read the webhook secret from a Kubernetes Secret (key default: secret)")
    election = parser.add_argument_group("leader election (one active replica)")
    election.add_argument("--leader-election", action="store_true",
                          help="act only while holding the Lease; otherwise stand by (the shipped Deployment sets it)")
    election.add_argument("--lease-name", default=ELECTION.lease_name, help=f"the Lease ({ELECTION.lease_name})")
    election.add_argument("--lease-namespace",
                          help="the Lease's namespace (default: the pod's own namespace)")
    election.add_argument("--lease-duration", type=int, default=ELECTION.lease_duration_seconds,
                          help="seconds a standby waits after the last renewal it saw "
                               f"({ELECTION.lease_duration_seconds:g})")
    election.add_argument("--renew-deadline", type=float, default=ELECTION.renew_deadline_seconds,
                          help="seconds without a renewal after which the leader stops "
                               f"({ELECTION.renew_deadline_seconds:g})")
    election.add_argument("--retry-period", type=float, default=ELECTION.retry_period_seconds,
                          help=f"seconds between attempts to acquire or renew ({ELECTION.retry_period_seconds:g})")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--verbose", action="store_true")
