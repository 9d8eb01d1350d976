"""`remote-agents operator`: run the Kopf operator in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import sys

import kopf
import kubernetes

from remote_agents.controller import runtime
from remote_agents.controller.kube import load_config
from remote_agents.controller.settings import OperatorSettings


class _QuietBookkeeping(logging.Filter):
    """Drop Kopf's per-event success line of the tracking handler: it fires on every watch event."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "'track_agent' succeeded" not in record.getMessage()


def _configure_logging(verbose: bool, log_format: str) -> None:
    # Kopf's formatter puts the object's namespace/name on every per-object line: as a prefix in
    # text, as an "object" field in JSON.
    kopf.configure(verbose=verbose, log_prefix=True, log_refkey="object",
                   log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL)
    logging.getLogger("kopf.objects").addFilter(_QuietBookkeeping())
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per E2B request otherwise


def _webhook_secret(args: argparse.Namespace) -> bytes:
    if args.webhook_secret_from:
        namespace, name, *key = args.webhook_secret_from.split("/")
        load_config()
        secret = kubernetes.client.CoreV1Api().read_namespaced_secret(name, namespace)
        encoded = (secret.data or {}).get(key[0] if key else "secret", "")
        return base64.b64decode(encoded)
    return os.environ.get("GITHUB_WEBHOOK_SECRET", "").encode()


def run(args: argparse.Namespace) -> int:
    _configure_logging(args.verbose, args.log_format)
    secret = _webhook_secret(args) if args.webhook_port is not None else b""
    if args.webhook_port is not None and not secret:
        print("refusing to serve webhooks without a secret: set GITHUB_WEBHOOK_SECRET or --webhook-secret-from",
              file=sys.stderr)
        return 2
    settings = OperatorSettings.from_env(cluster_id=args.cluster_id, health_interval_seconds=args.health_interval,
                                         ref_poll_interval_seconds=args.ref_poll_interval,
                                         orphan_grace_seconds=args.orphan_grace, metrics_port=args.metrics_port,
                                         webhook_port=args.webhook_port, webhook_secret=secret,
                                         namespaces=tuple(args.namespace))
    runtime.install(runtime.Runtime(settings))
    from remote_agents.controller import handlers  # noqa: F401  (registers the handlers with Kopf)

    asyncio.run(kopf.operator(clusterwide=not args.namespace, namespaces=args.namespace,
                              standalone=True))
    return 0
