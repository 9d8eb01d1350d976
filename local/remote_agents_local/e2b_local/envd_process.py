"""envd's Process service, on the SDK's own generated Connect server stub."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import Oneof

from e2b.envd.process import process_pb as pb
from e2b.envd.process.process_connect import Process
from remote_agents_local.e2b_local.isolation import resolve_user
from remote_agents_local.e2b_local.processes import ProcessTable
from remote_agents_local.e2b_local.sandboxes import SandboxManager

SANDBOX_HEADER = "e2b-sandbox-id"
KEEPALIVE_HEADER = "keepalive-ping-interval"


def user_from_basic(header: str | None) -> str | None:
    """The user of an envd call: `Authorization: Basic base64("name:")`, as the SDK sends it."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True).decode().partition(":")[0] or None
    except (binascii.Error, UnicodeDecodeError):
        return None


def call_user(name: str | None) -> tuple[str, int, str]:
    try:
        return resolve_user(name)
    except KeyError:
        raise ConnectError(Code.INVALID_ARGUMENT, f"user '{name}' does not exist in the sandbox") from None


def _keepalive_seconds(ctx: RequestContext) -> float | None:
    value = ctx.request_headers.get(KEEPALIVE_HEADER, "")
    return float(value) if value.replace(".", "", 1).isdigit() and float(value) > 0 else None


class ProcessService(Process):
    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager

    def _table(self, ctx: RequestContext) -> ProcessTable:
        return self.manager.runtime(ctx.request_headers[SANDBOX_HEADER]).processes

    async def list(self, request: pb.ListRequest, ctx: RequestContext) -> pb.ListResponse:
        return pb.ListResponse(processes=[p.info() for p in self._table(ctx).running.values()])

    async def start(self, request: pb.StartRequest, ctx: RequestContext) -> AsyncIterator[pb.StartResponse]:
        if request.has_field("pty"):
            raise ConnectError(Code.UNIMPLEMENTED, "PTY sessions are not supported by e2b-local")
        if request.process is None or not request.process.cmd:
            raise ConnectError(Code.INVALID_ARGUMENT, "process.cmd is required")
        timeout_ms = ctx.timeout_ms
        user, uid, home = call_user(self.manager.user_of(ctx.request_headers[SANDBOX_HEADER],
                                                         user_from_basic(ctx.request_headers.get("authorization"))))
        managed = await self._table(ctx).start(
            request.process,
            tag=request.tag if request.has_field("tag") else None,
            # Unset means true: older SDKs always had stdin.
            stdin=request.stdin if request.has_field("stdin") else True,
            deadline_seconds=timeout_ms / 1000 if timeout_ms else None,
            uid=uid, home=home, user=user,
        )
        async for event in managed.events(_keepalive_seconds(ctx), started_here=True):
            yield pb.StartResponse(event=event)

    async def connect(self, request: pb.ConnectRequest, ctx: RequestContext) -> AsyncIterator[pb.ConnectResponse]:
        managed = self._table(ctx).find(request.process)
        async for event in managed.events(_keepalive_seconds(ctx)):
            yield pb.ConnectResponse(event=event)

    async def send_signal(self, request: pb.SendSignalRequest, ctx: RequestContext) -> pb.SendSignalResponse:
        if request.signal not in (pb.Signal.SIGKILL, pb.Signal.SIGTERM):
            raise ConnectError(Code.INVALID_ARGUMENT, f"unsupported signal {request.signal}")
        await self._table(ctx).send_signal(request.process, request.signal.value)
        return pb.SendSignalResponse()

    async def send_input(self, request: pb.SendInputRequest, ctx: RequestContext) -> pb.SendInputResponse:
        match request.input.input if request.input is not None else None:
            case Oneof(field="stdin", value=data):
                await self._table(ctx).send_stdin(request.process, data)
            case _:
                raise ConnectError(Code.INVALID_ARGUMENT, "only stdin input is supported")
        return pb.SendInputResponse()

    async def stream_input(self, request: AsyncIterator[pb.StreamInputRequest], ctx: RequestContext) -> pb.StreamInputResponse:
        table = self._table(ctx)
        selector = None
        async for message in request:
            match message.event:
                case Oneof(field="start", value=start):
                    selector = start.process
                    table.find(selector)
                case Oneof(field="data", value=data) if selector is not None:
                    match data.input.input if data.input is not None else None:
                        case Oneof(field="stdin", value=chunk):
                            await table.send_stdin(selector, chunk)
        return pb.StreamInputResponse()

    async def close_stdin(self, request: pb.CloseStdinRequest, ctx: RequestContext) -> pb.CloseStdinResponse:
        self._table(ctx).close_stdin(request.process)
        return pb.CloseStdinResponse()
