"""Secrets: the Kubernetes Secrets the operator and the sample agents read, from secret stack
config, plus the GitHub webhook secret, generated once and kept in the stack state."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from remote_agents.deploy import names
from remote_agents_infra.config import InfraConfig


class Secrets(pulumi.ComponentResource):
    names: dict[str, str]  # role -> Secret name; what the stack exports instead of any value
    webhook_secret: pulumi.Output[str]

    def __init__(self, name: str, *, config: InfraConfig, namespace: pulumi.Input[str], provider: k8s.Provider,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("remote-agents:infra:Secrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        password = random.RandomPassword(f"{name}-webhook", length=48, special=False,
                                         opts=pulumi.ResourceOptions(parent=self))
        # Explicit: the same value goes to GitHub and to the receiver, and must never print in a diff.
        self.webhook_secret = pulumi.Output.secret(password.result)

        data = {
            names.E2B_SECRET: {names.E2B_SECRET_KEY: config.e2b_api_key},
            names.WEBHOOK_SECRET: {names.WEBHOOK_SECRET_KEY: self.webhook_secret},
        }
        agent_keys = {key: value for key, value in (("OPENAI_API_KEY", config.openai_api_key),
                                                    ("FINANCIAL_DATASETS_API_KEY", config.financial_datasets_api_key))
                      if value is not None}
        if agent_keys:
            data[names.AGENT_KEYS_SECRET] = agent_keys
        for secret_name, string_data in data.items():
            k8s.core.v1.Secret(f"{name}-{secret_name}", metadata={"name": secret_name, "namespace": namespace},
                               type="Opaque", string_data=string_data, opts=child)
        self.names = {"e2b": names.E2B_SECRET, "webhook": names.WEBHOOK_SECRET}
        if agent_keys:
            self.names["agentKeys"] = names.AGENT_KEYS_SECRET
        self.register_outputs({"names": self.names})
