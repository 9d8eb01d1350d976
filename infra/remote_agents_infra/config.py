"""Typed stack configuration. Every problem is reported before any resource is declared."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from typing import Literal

import pulumi

from remote_agents.api.models import DNS_LABEL
from remote_agents.deploy import names

CLUSTER_KINDS = ("existing", "gke")
_REPOSITORY = re.compile(r"^[A-Za-z0-9-]+/[A-Za-z0-9_.-]+$")
_DNS_LABEL = re.compile(DNS_LABEL)


class ConfigError(ValueError):
    """The stack configuration cannot work; the message says which key to fix."""


@dataclass(frozen=True)
class Repository:
    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class InfraConfig:
    cluster: Literal["existing", "gke"]
    kubeconfig: pulumi.Output[str] | None  # existing: None means the ambient kubeconfig
    gke_location: str | None
    namespace: str
    watch_namespaces: tuple[str, ...]  # empty: the operator serves every namespace
    operator_image: str
    protect_crds: bool
    e2b_api_key: pulumi.Output[str]
    github_token: pulumi.Output[str] | None  # None: the GitHub provider reads GITHUB_TOKEN
    openai_api_key: pulumi.Output[str] | None
    financial_datasets_api_key: pulumi.Output[str] | None
    repositories: tuple[Repository, ...]
    webhook_url: str | None


def _repositories(values: list[str]) -> tuple[Repository, ...]:
    parsed = []
    for value in values:
        if not isinstance(value, str) or not _REPOSITORY.match(value):
            raise ConfigError(f"repositories: {value!r} is not owner/name")
        owner, name = value.split("/")
        parsed.append(Repository(owner, name))
    return tuple(parsed)


def _watch_namespaces(values: list[str]) -> tuple[str, ...]:
    for value in values:
        if not isinstance(value, str) or not _DNS_LABEL.match(value):
            raise ConfigError(f"watchNamespaces: {value!r} is not a namespace name")
    return tuple(values)


def gcp_installed() -> bool:
    return importlib.util.find_spec("pulumi_gcp") is not None


def _cluster_kind(config: pulumi.Config) -> Literal["existing", "gke"]:
    kind = config.get("cluster") or "existing"
    if kind not in CLUSTER_KINDS:
        raise ConfigError(f"cluster must be one of {', '.join(CLUSTER_KINDS)}, not {kind!r}")
    if kind == "gke" and not gcp_installed():
        raise ConfigError("cluster=gke needs the pulumi-gcp package (`pip install pulumi-gcp`), which "
                          "remote-agents does not depend on; install it or use cluster=existing")
    return kind  # type: ignore[return-value]


def load(config: pulumi.Config | None = None) -> InfraConfig:
    config = config or pulumi.Config()
    cluster = _cluster_kind(config)
    gke_location = config.get("gkeLocation")
    if cluster == "gke" and not gke_location:
        raise ConfigError("cluster=gke needs gkeLocation (a region such as europe-west1)")
    repositories = _repositories(config.get_object("repositories") or [])
    webhook_url = config.get("webhookUrl")
    if repositories and not (webhook_url and webhook_url.startswith(("https://", "http://"))):
        raise ConfigError("repositories are set, so webhookUrl must be the http(s) URL GitHub posts to")
    return InfraConfig(
        cluster=cluster,
        kubeconfig=config.get_secret("kubeconfig"),
        gke_location=gke_location,
        namespace=config.get("namespace") or names.NAMESPACE,
        watch_namespaces=_watch_namespaces(config.get_object("watchNamespaces") or []),
        operator_image=config.get("operatorImage") or names.IMAGE,
        protect_crds=config.get_bool("protectCrds", True),
        e2b_api_key=config.require_secret("e2bApiKey"),  # missing: Pulumi names the key and the command
        github_token=config.get_secret("githubToken"),
        openai_api_key=config.get_secret("openaiApiKey"),
        financial_datasets_api_key=config.get_secret("financialDatasetsApiKey"),
        repositories=repositories,
        webhook_url=webhook_url,
    )
