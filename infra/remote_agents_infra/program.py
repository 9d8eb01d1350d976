"""The whole stack: cluster access, operator, secrets, webhooks; exports names, never values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import yaml

from remote_agents_infra import config as stack_config
from remote_agents_infra.cluster import ClusterAccess
from remote_agents_infra.operator import Operator
from remote_agents_infra.secrets import Secrets
from remote_agents_infra.webhooks import Webhooks

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"


def load_crds(directory: Path = CRD_DIR) -> list[dict[str, Any]]:
    """The committed CRDs (kept equal to the models by `remote-agents crds --check`)."""
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise FileNotFoundError(f"no CRDs in {directory}; run `remote-agents crds`")
    return [yaml.safe_load(path.read_text()) for path in paths]


def run() -> None:
    config = stack_config.load()
    access = ClusterAccess("cluster", config)
    operator = Operator("operator", namespace=config.namespace, watch_namespaces=config.watch_namespaces,
                        image=config.operator_image, crds=load_crds(), protect_crds=config.protect_crds,
                        provider=access.provider)
    secrets = Secrets("secrets", config=config, namespace=operator.namespace, provider=access.provider)
    if config.repositories:
        Webhooks("webhooks", repositories=config.repositories, url=config.webhook_url, secret=secrets.webhook_secret,
                 token=config.github_token)
    pulumi.export("namespace", operator.namespace)
    pulumi.export("webhookUrl", config.webhook_url)
    pulumi.export("secretNames", secrets.names)
