"""What an agent's work needs from Kubernetes Secrets: its environment, its git token (a Secret's or
a GitHub App installation's) and the E2B account its sandboxes live in. Read where the work happens (a reconcile, a task's launch, a poll),
never cached across them: a rotated Secret takes effect at the next piece of work."""

from __future__ import annotations

from dataclasses import dataclass

from remote_agents.api.models import RemoteAgentSpec, Source
from remote_agents.controller.clients.github_app import AppTokenError, InstallationTokens
from remote_agents.controller.clients.kube import Kube, SecretMissing
from remote_agents.controller.redaction import Redactor
from remote_agents.controller.sandboxes import OPERATOR_ACCOUNT, E2BAccount, SandboxAddress
from remote_agents.controller.sources.git import GitUnavailable


@dataclass
class ResolvedInputs:
    env: dict[str, str]
    account: E2BAccount


class AgentInputs:
    def __init__(self, kube: Kube, app_tokens: InstallationTokens | None = None,
                 github_api_hosts: tuple[str, ...] = ()):
        self.kube = kube
        self.app_tokens = app_tokens or InstallationTokens()
        self.github_api_hosts = github_api_hosts  # where an App's JWT may go, besides api.github.com

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
        account = await self.account(namespace, spec)
        redact.add(account.api_key)
        return ResolvedInputs(env=env, account=account)

    async def git_token(self, namespace: str, source: Source, redact: Redactor) -> str | None:
        """The token for ls-remote and the in-sandbox clone (None: a public repository). An App's
        that cannot be made is GitUnavailable (retried), its missing key SecretMissing."""
        if source.github_app:
            app = source.github_app
            try:
                return await self.app_tokens.token_of(self.kube, namespace, app, app.api_url,
                                                       self.github_api_hosts, redact)
            except AppTokenError as error:
                raise GitUnavailable(str(error)) from None
        if not source.credentials_secret_ref:
            return None
        ref = source.credentials_secret_ref
        token = await self.kube.secret_value(namespace, ref.name, ref.key, ref.optional)
        redact.add(token)
        return token

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
