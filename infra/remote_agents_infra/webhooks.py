"""Webhooks: one GitHub push webhook per configured repository, to the operator's receiver, signed
with the shared secret the receiver verifies."""

from __future__ import annotations

import pulumi
import pulumi_github as github

from remote_agents_infra.config import Repository


class Webhooks(pulumi.ComponentResource):
    def __init__(self, name: str, *, repositories: tuple[Repository, ...], url: str, secret: pulumi.Output[str],
                 token: pulumi.Output[str] | None, opts: pulumi.ResourceOptions | None = None):
        super().__init__("remote-agents:infra:Webhooks", name, None, opts)
        # A GitHub provider is scoped to one owner; one per owner lets repositories span organisations.
        providers: dict[str, github.Provider] = {}
        for repository in repositories:
            if repository.owner not in providers:
                providers[repository.owner] = github.Provider(f"{name}-{repository.owner}", owner=repository.owner,
                                                              token=token, opts=pulumi.ResourceOptions(parent=self))
            github.RepositoryWebhook(
                f"{name}-{repository.owner}-{repository.name}",
                repository=repository.name,
                active=True,
                events=["push", "ping"],
                configuration=github.RepositoryWebhookConfigurationArgs(
                    url=url, content_type="json", secret=secret, insecure_ssl=False),
                opts=pulumi.ResourceOptions(parent=self, provider=providers[repository.owner]))
        self.register_outputs({})
