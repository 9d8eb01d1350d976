"""What an agent's work needs from Kubernetes Secrets: its environment, its git token and the E2B
account its sandboxes live in. Read where the work happens (a reconcile, a task's launch, a poll),
never cached across them: a rotated Secret takes effect at the next piece of work."""

from __future__ import annotations

from dataclasses import dataclass

from remote_agents.api.models import RemoteAgentSpec
from remote_agents.controller.clients.kube import Kube, SecretMissing
from remote_agents.controller.redaction import Redactor
from remote_agents.controller.sandboxes import OPERATOR_ACCOUNT, E2BAccount, SandboxAddress


@dataclass
class ResolvedInputs:
    env: dict[str, str]
    git_token: str | None
    account: E2BAccount


class AgentInputs:
    def __init__(self, kube: Kube):
        self.kube = kube

    async def resolve(self, namespace: str, spec: RemoteAgentSpec, redact: Redactor) -> ResolvedInputs:
        env: dict[str, str] = {}
        for variable in spec.env:
            if variable.value_from is None:
                env[variable.name] = variable.value or ""
                continue
            ref = variable.value_from.secret_key_ref
            value = await self.kube.secret_value(namespace, ref.name, ref.key, ref.optional)
            if value is not None:
                env[variable.name] = value
                redact.add(value)
        token = None
        if spec.source.credentials_secret_ref:
            ref = spec.source.credentials_secret_ref
            token = await self.kube.secret_value(namespace, ref.name, ref.key, ref.optional)
            redact.add(token)
        account = await self.account(namespace, spec)
        redact.add(account.api_key)
        return ResolvedInputs(env=env, git_token=token, account=account)

    async def account(self, namespace: str, spec: RemoteAgentSpec) -> E2BAccount:
        """The E2B account the agent's sandboxes live in: its own key's (spec.e2bApiKeySecretRef), read
        from its Secret, or the operator's. SecretMissing when its own cannot be read: never another."""
        ref = spec.e2b_api_key_secret_ref
        return await self.account_of(namespace, (ref.name, ref.key) if ref else None)

    async def account_of(self, namespace: str, key_ref: tuple[str, str] | None) -> E2BAccount:
        if key_ref is None:
            return OPERATOR_ACCOUNT
        name, key = key_ref
        if not name or not key:
            raise SecretMissing(f"spec.e2bApiKeySecretRef names no Secret and key: {name!r}/{key!r}")
        return E2BAccount(await self.kube.e2b_key(namespace, name, key))

    async def address(self, namespace: str, spec: RemoteAgentSpec, sandbox_id: str) -> SandboxAddress:
        """The agent's sandbox with the account it lives in (for work on it outside a reconcile)."""
        return SandboxAddress(sandbox_id, await self.account(namespace, spec))
