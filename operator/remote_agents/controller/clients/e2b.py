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
from typing import TypeVar

from e2b import AsyncSandbox, CommandExitException, SandboxQuery, SandboxState
from e2b import exceptions as e2b_errors

from remote_agents.controller import tracing
from remote_agents.controller.clients.ratelimit import TokenBucket
from remote_agents.controller.settings import GatewaySettings
from remote_agents.controller.sandboxes import CommandOutcome, E2BAccount, ObservedSandbox, SandboxAddress

log = logging.getLogger(__name__)
T = TypeVar("T")

HANDLE_TTL_SECONDS = 120


def api_options(account: E2BAccount) -> dict:
    """The SDK's options that direct a call to `account` (none: the SDK reads E2B_API_KEY)."""
    return {"api_key": account.api_key} if account.api_key else {}


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


class SandboxPaused(E2BError):
    """The sandbox exists but is not running (paused, say by a pause that crossed the call): E2B
    answers an in-sandbox call then as for a gone one. Not a loss: a connect resumes it."""

    reason = "SandboxPaused"


def _span_attributes(operation: str, sandbox_id: str | None) -> dict[str, str]:
    return {"e2b.operation": operation, **({"e2b.sandbox.id": sandbox_id} if sandbox_id else {})}


class SandboxGateway:
    def __init__(self, settings: GatewaySettings, observe: Callable[[str, str, float], None] | None = None,
                 observe_wait: Callable[[str, float], None] | None = None):
        """`observe(operation, outcome, seconds)` is told of every call, `observe_wait(bucket, seconds)`
        of every wait for a rate limit ("calls" or "creates")."""
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._sandbox_slots = asyncio.Semaphore(settings.sandbox_concurrency)
        waited = observe_wait or (lambda bucket, seconds: None)
        self.calls_bucket = TokenBucket(settings.calls_per_second, burst=max(1, int(settings.calls_per_second)),
                                        on_wait=lambda seconds: waited("calls", seconds))
        self.creates_bucket = TokenBucket(settings.creates_per_second, burst=1,
                                          on_wait=lambda seconds: waited("creates", seconds))
        self._observe = observe or (lambda operation, outcome, seconds: None)
        self._handles: dict[str, tuple[float, AsyncSandbox]] = {}

    _opts = staticmethod(api_options)

    async def _call(self, operation: str, make_call: Callable[[], Awaitable[T]], sandbox_id: str | None = None) -> T:
        """One span per call, its retries included (a child of the reconcile or run asking)."""
        with tracing.tracer.start_as_current_span(f"e2b {operation}", attributes=_span_attributes(operation, sandbox_id)):
            return await self._attempts(operation, make_call)

    async def _attempts(self, operation: str, make_call: Callable[[], Awaitable[T]]) -> T:
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

    async def call(self, operation: str, make_call: Callable[[], Awaitable[T]]) -> T:
        """One E2B API call under the gateway's bounds, retries and error translation, for the other
        E2B adapters here in clients/ (template builds)."""
        return await self._call(operation, make_call)

    async def list(self, metadata: dict[str, str], account: E2BAccount) -> list[ObservedSandbox]:
        """All running and paused sandboxes of `account` whose metadata includes `metadata`, every page,
        or an error: never a partial list (a page that fails after its retries fails the whole list,
        and a retried page is asked again with the same token). A sandbox shifted onto two pages by a
        change between them counts once."""
        paginator = AsyncSandbox.list(
            query=SandboxQuery(metadata=metadata, state=[SandboxState.RUNNING, SandboxState.PAUSED]),
            limit=self.settings.list_page_size, **self._opts(account))
        found: dict[str, ObservedSandbox] = {}
        while paginator.has_next:
            page = await self._call("list", paginator.next_items)
            for info in page:
                found[info.sandbox_id] = ObservedSandbox(
                    sandbox_id=info.sandbox_id, state=str(info.state.value), metadata=dict(info.metadata or {}),
                    started_at=info.started_at, end_at=info.end_at)
        return list(found.values())

    async def create(self, *, template: str, timeout_seconds: int, metadata: dict[str, str],
                     idempotency_key: str, account: E2BAccount) -> SandboxAddress:
        async def create() -> SandboxAddress:
            # Pause rather than die at timeout: if the operator is away, the agent keeps memory and disk.
            sandbox = await AsyncSandbox.create(template=template, timeout=timeout_seconds, metadata=metadata,
                                                idempotency_key=idempotency_key, lifecycle={"on_timeout": "pause"},
                                                **self._opts(account))
            return SandboxAddress(sandbox.sandbox_id, account)
        return await self._call("create", create)

    async def _connect(self, address: SandboxAddress, timeout_seconds: int | None) -> AsyncSandbox:
        return await self._call("connect", lambda: AsyncSandbox.connect(
            address.sandbox_id, timeout=timeout_seconds, **self._opts(address.account)), address.sandbox_id)

    async def resume(self, address: SandboxAddress, timeout_seconds: int) -> None:
        await self._connect(address, timeout_seconds)

    async def pause(self, address: SandboxAddress) -> None:
        self._handles.pop(address, None)
        await self._call("pause", lambda: AsyncSandbox.pause(address.sandbox_id, **self._opts(address.account)),
                         address.sandbox_id)

    async def kill(self, address: SandboxAddress) -> bool:
        self._handles.pop(address, None)
        return await self._call("kill", lambda: AsyncSandbox.kill(address.sandbox_id, **self._opts(address.account)),
                                address.sandbox_id)

    async def set_timeout(self, address: SandboxAddress, timeout_seconds: int) -> None:
        await self._call("timeout", lambda: AsyncSandbox.set_timeout(address.sandbox_id, timeout_seconds,
                                                                     **self._opts(address.account)),
                         address.sandbox_id)

    async def _sandbox(self, address: SandboxAddress) -> AsyncSandbox:
        """A connected handle, reused for a while: polling a task must not cost a connect call each time."""
        cached = self._handles.get(address)
        if cached and time.monotonic() - cached[0] < HANDLE_TTL_SECONDS:
            return cached[1]
        sandbox = await self._connect(address, None)
        self._handles[address] = (time.monotonic(), sandbox)
        return sandbox

    async def _envd(self, address: SandboxAddress, what: str, call: Callable[[AsyncSandbox], Awaitable[T]],
                    timeout_seconds: float | None = None) -> T:
        """One in-sandbox call (files, commands): bounded, not retried, lost sandboxes reported as such."""
        sandbox = await self._sandbox(address)
        started = time.monotonic()
        try:
            async with self._sandbox_slots:
                with tracing.tracer.start_as_current_span(f"e2b {what}",
                                                          attributes=_span_attributes(what, address.sandbox_id)):
                    result = await asyncio.wait_for(call(sandbox),
                                                    timeout_seconds or self.settings.call_timeout_seconds)
        except e2b_errors.SandboxNotRunningException as error:
            self._handles.pop(address, None)
            self._observe(what, "gone", time.monotonic() - started)
            # Paused and killed sandboxes answer alike here: only the control plane tells them apart
            # (an unknown sandbox makes this look raise SandboxGone).
            await self._call("info", lambda: AsyncSandbox.get_info(address.sandbox_id, **self._opts(address.account)),
                             address.sandbox_id)
            raise SandboxPaused(f"sandbox {address.sandbox_id} is not running: {error}") from error
        except (asyncio.TimeoutError, e2b_errors.TimeoutException, OSError) as error:
            self._handles.pop(address, None)
            self._observe(what, "retry", time.monotonic() - started)
            raise E2BUnavailable(f"{what} in sandbox {address.sandbox_id} failed: {type(error).__name__}") from error
        self._observe(what, "ok", time.monotonic() - started)
        return result

    async def read_file(self, address: SandboxAddress, path: str) -> str | None:
        """The file's text, or None when it does not exist (yet)."""
        async def read(sandbox: AsyncSandbox) -> str | None:
            try:
                return await sandbox.files.read(path)
            except e2b_errors.FileNotFoundException:
                return None
        return await self._envd(address, "files", read)

    async def start_background(self, address: SandboxAddress, command: str, *, envs: dict[str, str]):
        """Start a detached command (no deadline: `timeout=0`); returns the SDK's handle (`.pid`, `.wait()`)."""
        async def start(sandbox: AsyncSandbox):
            return await sandbox.commands.run(command, envs=envs, background=True, timeout=0)
        return await self._envd(address, "command", start)

    async def attach(self, address: SandboxAddress, pid: int):
        """A handle on a process started earlier (its `.wait()` ends with it), e.g. after a restart."""
        async def connect(sandbox: AsyncSandbox):
            return await sandbox.commands.connect(pid, timeout=0, retain_output=False)
        return await self._envd(address, "command", connect)

    async def wait_process(self, handle) -> int | None:
        """Wait for a started or attached process to end: its exit code, or None when the stream
        broke first (the sandbox paused, a lost connection) and the process may well live on."""
        try:
            return (await handle.wait()).exit_code
        except CommandExitException as ended:
            return ended.exit_code
        except Exception:  # the SDK's stream errors, whatever their type
            return None

    async def run(self, address: SandboxAddress, command: str, *, envs: dict[str, str], cwd: str | None,
                  timeout_seconds: float) -> CommandOutcome:
        """Run a command to completion in a running sandbox; a non-zero exit is an outcome, not an error.
        Not retried: setup steps need not be idempotent. Their own timeout bounds them."""
        async def run(sandbox: AsyncSandbox) -> CommandOutcome:
            try:
                result = await sandbox.commands.run(command, envs=envs, cwd=cwd, timeout=timeout_seconds,
                                                    request_timeout=timeout_seconds + 30)
            except CommandExitException as failed:
                return CommandOutcome(failed.exit_code, failed.stdout, failed.stderr)
            return CommandOutcome(result.exit_code, result.stdout, result.stderr)
        return await self._envd(address, "command", run, timeout_seconds + 60)
