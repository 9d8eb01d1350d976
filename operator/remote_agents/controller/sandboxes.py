"""What the operator knows of E2B sandboxes, as plain data: the E2B client produces these and the
decision layer reads them, so neither needs the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from remote_agents.api.names import SANDBOX_UID_KEY


@dataclass(frozen=True)
class E2BAccount:
    """Whose E2B account a call goes to. `api_key` None: the operator's own (the SDK reads E2B_API_KEY)."""

    api_key: str | None = field(default=None, repr=False)  # never printed, never logged

    @property
    def is_own(self) -> bool:
        """True for an agent's own account (spec.e2bApiKeySecretRef), not the operator's."""
        return self.api_key is not None


OPERATOR_ACCOUNT = E2BAccount()


@dataclass(frozen=True)
class SandboxAddress:
    """A sandbox and the account it lives in: every call about one sandbox takes both at once, so
    none can reach it with the wrong key."""

    sandbox_id: str
    account: E2BAccount = OPERATOR_ACCOUNT


@dataclass(frozen=True)
class ObservedSandbox:
    sandbox_id: str
    state: str  # "running" | "paused"
    metadata: dict[str, str]
    started_at: datetime
    end_at: datetime

    @property
    def uid(self) -> str | None:
        return self.metadata.get(SANDBOX_UID_KEY)


@dataclass(frozen=True)
class CommandOutcome:
    exit_code: int
    stdout: str
    stderr: str
