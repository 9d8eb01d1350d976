"""`remote-agents operator`: run the Kopf operator in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from remote_agents.controller import runtime
from remote_agents.controller.settings import OperatorSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="watch only these namespaces (repeatable); default: all namespaces")
    parser.add_argument("--cluster-id", help="tag for this cluster's sandboxes (default: uid of kube-system)")
    parser.add_argument("--health-interval", type=float, help="seconds between fleet-wide E2B checks (30)")
    parser.add_argument("--ref-poll-interval", type=float, help="seconds between branch checks (60)")
    parser.add_argument("--orphan-grace", type=float, help="seconds before an untracked sandbox is killed (300)")
    parser.add_argument("--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = OperatorSettings.from_env(cluster_id=args.cluster_id, health_interval_seconds=args.health_interval,
                                         ref_poll_interval_seconds=args.ref_poll_interval,
                                         orphan_grace_seconds=args.orphan_grace)
    runtime.install(runtime.Runtime(settings))
    from remote_agents.controller import handlers  # noqa: F401  (registers the handlers with Kopf)

    asyncio.run(kopf.operator(clusterwide=not args.namespace, namespaces=args.namespace or None,
                              standalone=True))
    return 0
