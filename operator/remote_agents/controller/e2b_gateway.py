"""The one place that talks to E2B.

Every call goes through a concurrency bound, a rate limit (creates have their own, tighter one,
as E2B meters them separately) and a per-call timeout. Transient failures (429, 5xx, timeouts)
are retried with exponential backoff on top of the SDK's own Retry-After-honouring retries;
what is left is translated into three errors the reconciler understands.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from e2b import AsyncSandbox, SandboxQuery, SandboxState
from e2b import exceptions as e2b_errors

from remote_agents.controller.ratelimit import TokenBucket

log = logging.getLogger(__name__)
T = TypeVar("T")

HANDLE_TTL_SECONDS = 120
UID_KEY = "remoteagents.io/uid"
CLUSTER_KEY = "remoteagents.io/cluster"
NAMESPACE_KEY = "remoteagents.io/namespace"
NAME_KEY = "remoteagents.io/name"
CONFIG_KEY = "remoteagents.io/config-hash"


class E2BError(Exception):
    """Base of what the gateway raises; `reason` is a stable word for conditions and Events."""

    reason = "E2BError"


class E2BUnavailable(E2BError):
    """Transient: rate limited, busy, 5xx or timed out after all retries. Try again later."""

    reason = "E2BUnavailable"


class E2BAuthFailed(E2BError):
    reason = "E2BAuthFailed"


class E2BRejected(E2BError):
    """E2B refused the request itself (unknown template, invalid argument): retrying won't help."""

    reason = "E2BRejected"


class SandboxGone(E2BError):
    """The sandbox does not exist any more (killed, expired, or lost by E2B)."""

    reason = "SandboxGone"


@dataclass(frozen=True)
class ObservedSandbox:
    sandbox_id: str
    state: str  # "running" | "paused"
    metadata: dict[str, str]
    started_at: datetime
    end_at: datetime

    @property
    def uid(self) -> str | None:
        return self.metadata.get(UID_KEY)


@dataclass(frozen=True)
class CommandOutcome:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class GatewaySettings:
    api_key: str | None = None  # None: the SDK reads E2B_API_KEY
    max_concurrency: int = 8  # E2B API calls at once
    # In-sandbox calls (commands, files) at once. Each goes to its sandbox's own envd, not to E2B's
    # API, and a setup command may run for minutes: under the API's bound, eight long setups would
    # stall every other agent's checkout.
    sandbox_concurrency: int = 64
    calls_per_second: float = 10.0
    creates_per_second: float = 1.0  # E2B Hobby: 1 create/s
    call_timeout_seconds: float = 60.0
    max_attempts: int = 4
    backoff_base_seconds: float = 1.0
    list_page_size: int = 100


class SandboxGateway:
    def __init__(self, settings: GatewaySettings, observe: Callable[[str, str, float], None] | None = None):
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._sandbox_slots = asyncio.Semaphore(settings.sandbox_concurrency)
        self.calls_bucket = TokenBucket(settings.calls_per_second, burst=max(1, int(settings.calls_per_second)))
        self.creates_bucket = TokenBucket(settings.creates_per_second, burst=1)
        self._observe = observe or (lambda operation, outcome, seconds: None)
        self._handles: dict[str, tuple[float, AsyncSandbox]] = {}

    def _opts(self, api_key: str | None) -> dict:
        key = api_key or self.settings.api_key
        return {"api_key": key} if key else {}

    async def _call(self, operation: str, make_call: Callable[[], Awaitable[T]]) -> T:
        bucket = self.creates_bucket if operation == "create" else self.calls_bucket
        for attempt in range(1, self.settings.max_attempts + 1):
            await bucket.take()
            started = time.monotonic()
            try:
                async with self._slots:
                    result = await asyncio.wait_for(make_call(), self.settings.call_timeout_seconds)
            except (e2b_errors.RateLimitException, e2b_errors.ServiceBusyException, asyncio.TimeoutError,
                    e2b_errors.TimeoutException) as error:
                if isinstance(error, e2b_errors.SandboxNotRunningException):
                    self._observe(operation, "gone", time.monotonic() - started)
                    raise SandboxGone(str(error)) from error
                failure: Exception = error
            except e2b_errors.AuthenticationException as error:
                self._observe(operation, "auth_failed", time.monotonic() - started)
                raise E2BAuthFailed("E2B rejected the API key") from error
            except e2b_errors.NotFoundException as error:
                self._observe(operation, "not_found", time.monotonic() - started)
                raise SandboxGone(str(error)) from error
            except e2b_errors.SandboxException as error:
                status = getattr(error, "status_code", None)
                if status is not None and 400 <= status < 500:
                    self._observe(operation, "rejected", time.monotonic() - started)
                    raise E2BRejected(f"{operation}: {error}") from error
                failure = error
            except OSError as error:  # connection refused/reset: the service is unreachable
                failure = error
            else:
                self._observe(operation, "ok", time.monotonic() - started)
                return result
            self._observe(operation, "retry", time.monotonic() - started)
            if attempt == self.settings.max_attempts:
                raise E2BUnavailable(f"{operation} failed after {attempt} attempts: "
                                     f"{type(failure).__name__}: {failure}") from failure
            delay = self.settings.backoff_base_seconds * 2 ** (attempt - 1) * (0.5 + random.random())
            log.info("E2B %s failed (%s), retrying in %.1fs", operation, type(failure).__name__, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def list(self, metadata: dict[str, str], api_key: str | None = None) -> list[ObservedSandbox]:
        """All running and paused sandboxes whose metadata includes `metadata`, every page."""
        paginator = AsyncSandbox.list(
            query=SandboxQuery(metadata=metadata, state=[SandboxState.RUNNING, SandboxState.PAUSED]),
            limit=self.settings.list_page_size, **self._opts(api_key))
        found: list[ObservedSandbox] = []
        while paginator.has_next:
            page = await self._call("list", paginator.next_items)
            found.extend(ObservedSandbox(sandbox_id=info.sandbox_id, state=str(info.state.value),
                                         metadata=dict(info.metadata or {}), started_at=info.started_at,
                                         end_at=info.end_at) for info in page)
        return found

    async def create(self, *, template: str, timeout_seconds: int, metadata: dict[str, str],
                     idempotency_key: str, api_key: str | None = None) -> str:
        async def create() -> str:
            # Pause rather than die at timeout: if the operator is away, the agent keeps memory and disk.
            sandbox = await AsyncSandbox.create(template=template, timeout=timeout_seconds, metadata=metadata,
                                                idempotency_key=idempotency_key, lifecycle={"on_timeout": "pause"},
                                                **self._opts(api_key))
            return sandbox.sandbox_id
        return await self._call("create", create)

    async def _connect(self, sandbox_id: str, timeout_seconds: int | None, api_key: str | None) -> AsyncSandbox:
        return await self._call("connect", lambda: AsyncSandbox.connect(
            sandbox_id, timeout=timeout_seconds, **self._opts(api_key)))

    async def resume(self, sandbox_id: str, timeout_seconds: int, api_key: str | None = None) -> None:
        await self._connect(sandbox_id, timeout_seconds, api_key)

    async def pause(self, sandbox_id: str, api_key: str | None = None) -> None:
        self._handles.pop(sandbox_id, None)
        await self._call("pause", lambda: AsyncSandbox.pause(sandbox_id, **self._opts(api_key)))

    async def kill(self, sandbox_id: str, api_key: str | None = None) -> bool:
        self._handles.pop(sandbox_id, None)
        return await self._call("kill", lambda: AsyncSandbox.kill(sandbox_id, **self._opts(api_key)))

    async def set_timeout(self, sandbox_id: str, timeout_seconds: int, api_key: str | None = None) -> None:
        await self._call("timeout", lambda: AsyncSandbox.set_timeout(sandbox_id, timeout_seconds,
                                                                     **self._opts(api_key)))

    async def _sandbox(self, sandbox_id: str, api_key: str | None) -> AsyncSandbox:
        """A connected handle, reused for a while: polling a task must not cost a connect call each time."""
        cached = self._handles.get(sandbox_id)
        if cached and time.monotonic() - cached[0] < HANDLE_TTL_SECONDS:
            return cached[1]
        sandbox = await self._connect(sandbox_id, None, api_key)
        self._handles[sandbox_id] = (time.monotonic(), sandbox)
        return sandbox

    async def _envd(self, sandbox_id: str, what: str, call: Callable[[AsyncSandbox], Awaitable[T]],
                    api_key: str | None, timeout_seconds: float | None = None) -> T:
        """One in-sandbox call (files, commands): bounded, not retried, lost sandboxes reported as such."""
        sandbox = await self._sandbox(sandbox_id, api_key)
        started = time.monotonic()
        try:
            async with self._sandbox_slots:
                result = await asyncio.wait_for(call(sandbox), timeout_seconds or self.settings.call_timeout_seconds)
        except e2b_errors.SandboxNotRunningException as error:
            self._handles.pop(sandbox_id, None)
            self._observe(what, "gone", time.monotonic() - started)
            raise SandboxGone(str(error)) from error
        except (asyncio.TimeoutError, e2b_errors.TimeoutException, OSError) as error:
            self._handles.pop(sandbox_id, None)
            self._observe(what, "retry", time.monotonic() - started)
            raise E2BUnavailable(f"{what} in sandbox {sandbox_id} failed: {type(error).__name__}") from error
        self._observe(what, "ok", time.monotonic() - started)
        return result

    async def read_file(self, sandbox_id: str, path: str, api_key: str | None = None) -> str | None:
        """The file's text, or None when it does not exist (yet)."""
        async def read(sandbox: AsyncSandbox) -> str | None:
            try:
                return await sandbox.files.read(path)
            except e2b_errors.FileNotFoundException:
                return None
        return await self._envd(sandbox_id, "files", read, api_key)

    async def start_background(self, sandbox_id: str, command: str, *, envs: dict[str, str],
                               api_key: str | None = None):
        """Start a detached command (no deadline: `timeout=0`); returns the SDK's handle (`.pid`, `.wait()`)."""
        async def start(sandbox: AsyncSandbox):
            return await sandbox.commands.run(command, envs=envs, background=True, timeout=0)
        return await self._envd(sandbox_id, "command", start, api_key)

    async def run(self, sandbox_id: str, command: str, *, envs: dict[str, str], cwd: str | None,
                  timeout_seconds: float, api_key: str | None = None) -> CommandOutcome:
        """Run a command to completion in a running sandbox; a non-zero exit is an outcome, not an error."""
        sandbox = await self._sandbox(sandbox_id, api_key)

        async def run() -> CommandOutcome:
            try:
                result = await sandbox.commands.run(command, envs=envs, cwd=cwd, timeout=timeout_seconds,
                                                    request_timeout=timeout_seconds + 30)
            except e2b_errors.CommandExitException as failed:
                return CommandOutcome(failed.exit_code, failed.stdout, failed.stderr)
            return CommandOutcome(result.exit_code, result.stdout, result.stderr)

        # Commands are not retried: setup steps need not be idempotent. Their own timeout bounds them.
        started = time.monotonic()
        try:
            async with self._sandbox_slots:
                outcome = await asyncio.wait_for(run(), timeout_seconds + 60)
        except e2b_errors.SandboxNotRunningException as error:
            self._handles.pop(sandbox_id, None)
            raise SandboxGone(str(error)) from error
        except (asyncio.TimeoutError, e2b_errors.TimeoutException) as error:
            self._handles.pop(sandbox_id, None)
            raise E2BUnavailable(f"command did not finish within {timeout_seconds}s") from error
        self._observe("command", "ok", time.monotonic() - started)
        return outcome
