"""The control-plane REST API (X-API-KEY auth), shaped like the SDK's generated client expects."""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import parse_qsl, unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from remote_agents_local.e2b_local.config import ENVD_VERSION
from remote_agents_local.e2b_local.faults import RETRY_AFTER_SECONDS, Faults
from remote_agents_local.e2b_local.sandboxes import ApiError, SandboxManager
from remote_agents_local.e2b_local.store import PAUSED, RUNNING, SandboxRecord, iso
from remote_agents_local.e2b_local.template_api import TemplateApi
from remote_agents_local.e2b_local.template_build import start_and_wait
from remote_agents_local.e2b_local.templates import TemplateRegistry

CLIENT_ID = "e2b-local"
DEFAULT_PAGE = 100
MAX_BODY = 1 << 20  # control-plane bodies are small JSON objects (metadata, envVars)
# What every sandbox reports besides its memory limit (--memory-mb or its template's, enforced);
# CPU (unless its template says) and disk are not limited, the SDK just requires the fields.
CPU_COUNT, DISK_MB = 2, 10240
# A sandbox's create answers once its template's ready check passed (within the SDK's 60 s default).
CREATE_READY_TIMEOUT_SECONDS = 50

Handler = Callable[[Request], Awaitable[Response]]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status, headers=headers)


def sandbox_json(record: SandboxRecord) -> dict:
    return {
        "templateID": record.template_id,
        "alias": record.template_alias or record.template_id,
        "sandboxID": record.sandbox_id,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": record.access_token,
        "domain": None,
    }


def listed_json(record: SandboxRecord, memory_mb: int) -> dict:
    return {
        "templateID": record.template_id,
        "alias": record.template_alias or record.template_id,
        "sandboxID": record.sandbox_id,
        "clientID": CLIENT_ID,
        "startedAt": iso(record.started_at),
        "endAt": iso(record.end_at),
        "cpuCount": record.cpu_count or CPU_COUNT,
        "memoryMB": record.memory_mb or memory_mb,
        "diskSizeMB": DISK_MB,
        "state": record.state,
        "envdVersion": ENVD_VERSION,
        "metadata": record.metadata,
    }


def detail_json(record: SandboxRecord, memory_mb: int) -> dict:
    return {
        **listed_json(record, memory_mb),
        "envdAccessToken": record.access_token,
        "domain": None,
        "lifecycle": {"autoResume": False, "onTimeout": "pause" if record.auto_pause else "kill"},
    }


async def _json_body(request: Request) -> dict:
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > MAX_BODY:
            raise ApiError(413, f"request body larger than {MAX_BODY} bytes")
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _page_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "offset" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise ApiError(400, "invalid nextToken")


class ControlApi:
    def __init__(self, manager: SandboxManager, api_key: str, faults: Faults) -> None:
        if not api_key:
            raise ValueError("the control API needs a key")
        self.manager = manager
        self.api_key = api_key
        self.faults = faults
        self.templates = TemplateApi(manager, TemplateRegistry(manager.settings.state_dir), api_key)
        manager.on_kill.append(self.templates.sandbox_gone)

    def _endpoint(self, op: str, handler: Handler) -> Handler:
        """Auth, injected faults and ApiError rendering around one operation."""
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            if not hmac.compare_digest(request.headers.get("x-api-key", "").encode(), self.api_key.encode()):
                return error(401, "Invalid API key, it must start with 'e2b_' prefix and be valid")
            await self.faults.delay(op)
            status = self.faults.injected_status(op)
            if status is not None:
                return error(status, f"injected {op} failure", {"Retry-After": RETRY_AFTER_SECONDS})
            try:
                return await handler(request)
            except ApiError as failure:
                return error(failure.status, failure.message)
        return endpoint

    async def create(self, request: Request) -> Response:
        body = await _json_body(request)
        key = request.headers.get("idempotency-key")
        repeated = key is not None and self.manager.store.idempotency.get(key) in self.manager.store.sandboxes
        template = body.get("templateID")
        launch = self.templates.launch(template) if isinstance(template, str) and not repeated else None
        if launch is None:
            return JSONResponse(sandbox_json(self.manager.create(body, key)), status_code=201)
        fields, built, build = launch
        record = self.manager.create(body, key, fields)
        self.templates.registry.spawned(built)
        # The template's start command and ready check run for every new sandbox, as on E2B (the
        # sandbox's own env already holds the template's).
        table = self.manager.runtime(record.sandbox_id).processes
        if not await start_and_wait(table, build, {}, CREATE_READY_TIMEOUT_SECONDS):
            await self.manager.kill(record.sandbox_id)
            raise ApiError(500, f"the template's ready check ({build.ready_cmd}) did not pass within "
                                f"{CREATE_READY_TIMEOUT_SECONDS} s of its start command")
        return JSONResponse(sandbox_json(record), status_code=201)

    async def connect(self, request: Request) -> Response:
        body = await _json_body(request)
        record, resumed = self.manager.connect(request.path_params["sandbox_id"], body.get("timeout"))
        return JSONResponse(sandbox_json(record), status_code=201 if resumed else 200)

    async def resume(self, request: Request) -> Response:
        """The legacy resume call: 409 when the sandbox is already running."""
        body = await _json_body(request)
        sandbox_id = request.path_params["sandbox_id"]
        if self.manager.get(sandbox_id).state == RUNNING:
            raise ApiError(409, f"Sandbox {sandbox_id} is already running")
        record, _ = self.manager.connect(sandbox_id, body.get("timeout"))
        if "autoPause" in body:
            record.auto_pause = bool(body["autoPause"])
            self.manager.store.save()
        return JSONResponse(sandbox_json(record), status_code=201)

    async def pause(self, request: Request) -> Response:
        body = await _json_body(request)
        # `memory: false` (the SDK's mode="filesystem" / keep_memory=False): filesystem-only.
        await self.manager.pause(request.path_params["sandbox_id"], keep_memory=body.get("memory", True) is not False)
        return Response(status_code=204)

    async def kill(self, request: Request) -> Response:
        await self.manager.kill(request.path_params["sandbox_id"])
        return Response(status_code=204)

    async def info(self, request: Request) -> Response:
        return JSONResponse(detail_json(self.manager.get(request.path_params["sandbox_id"]),
                                        self.manager.settings.memory_mb))

    async def timeout(self, request: Request) -> Response:
        body = await _json_body(request)
        if "timeout" not in body:
            raise ApiError(400, "timeout is required")
        self.manager.set_timeout(request.path_params["sandbox_id"], body["timeout"])
        return Response(status_code=204)

    async def list_v2(self, request: Request) -> Response:
        query = request.query_params
        states = {s for value in query.getlist("state") for s in value.split(",") if s} or {RUNNING, PAUSED}
        if not states <= {RUNNING, PAUSED}:
            raise ApiError(400, f"invalid state filter {sorted(states)}")
        return self._list(request, states)

    async def list_v1(self, request: Request) -> Response:
        return self._list(request, {RUNNING})

    def _list(self, request: Request, states: set[str]) -> Response:
        query = request.query_params
        # The SDK quotes each key and value, url-encodes the `k=v&k=v` string, and the HTTP
        # client encodes that as a query value: three layers, undone by query decoding,
        # parse_qsl and unquote.
        metadata = {unquote(k): unquote(v)
                    for k, v in parse_qsl(query.get("metadata", ""), keep_blank_values=True)}
        try:
            limit = int(query.get("limit", DEFAULT_PAGE))
        except ValueError:
            raise ApiError(400, "limit must be an integer") from None
        if not 1 <= limit <= 100:
            raise ApiError(400, "limit must be between 1 and 100")
        order = query.get("order", "desc")  # newest first, as E2B lists (its SDK tests page on it)
        records = self.manager.list(states, metadata, query.get("template"), order)
        if query.get("startedAfter"):
            try:
                after = datetime.fromisoformat(query["startedAfter"].replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise ApiError(400, "startedAfter must be an ISO 8601 time") from None
            # Whole microseconds, as reported: a sandbox started at exactly that time is included.
            records = [r for r in records if round(r.started_at, 6) >= after]
        offset = _page_offset(query.get("nextToken"))
        page = records[offset:offset + limit]
        headers = {"X-Next-Token": _page_token(offset + limit)} if offset + limit < len(records) else {}
        return JSONResponse([listed_json(r, self.manager.settings.memory_mb) for r in page], headers=headers)

    def app(self) -> Starlette:
        def route(path: str, op: str, handler: Handler, method: str) -> Route:
            return Route(path, self._endpoint(op, handler), methods=[method])

        def with_body(handler):
            async def read(request: Request) -> Response:
                return await handler(request, await _json_body(request))
            return read

        return Starlette(routes=[
            *self.templates.routes(self._endpoint, with_body),
            route("/sandboxes", "create", self.create, "POST"),
            route("/v2/sandboxes", "create", self.create, "POST"),
            route("/sandboxes", "list", self.list_v1, "GET"),
            route("/v2/sandboxes", "list", self.list_v2, "GET"),
            route("/sandboxes/{sandbox_id}", "info", self.info, "GET"),
            route("/sandboxes/{sandbox_id}", "kill", self.kill, "DELETE"),
            route("/sandboxes/{sandbox_id}/pause", "pause", self.pause, "POST"),
            route("/sandboxes/{sandbox_id}/resume", "connect", self.resume, "POST"),
            route("/sandboxes/{sandbox_id}/connect", "connect", self.connect, "POST"),
            route("/v2/sandboxes/{sandbox_id}/connect", "connect", self.connect, "POST"),
            route("/sandboxes/{sandbox_id}/timeout", "timeout", self.timeout, "POST"),
        ])
