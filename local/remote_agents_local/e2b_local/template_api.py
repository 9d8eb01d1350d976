"""The template routes of the control API, as the SDK's Template / AsyncTemplate call them:
request a build (`POST /v3/templates`), a file-layer upload link per COPY step and the upload
itself (a signed `PUT`, like E2B's presigned storage URL), the build's start with its steps, its
status with paged logs, and the alias, tag, list, get and delete calls."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from remote_agents_local.e2b_local.config import ENVD_VERSION
from remote_agents_local.e2b_local.sandboxes import ApiError, SandboxManager
from remote_agents_local.e2b_local.template_build import BASE_TEMPLATES, Builder
from remote_agents_local.e2b_local.templates import (FILES_HASH, WAITING, BuildRecord, TemplateRecord,
                                                     TemplateRegistry, remove, split_name)
from remote_agents_local.e2b_local.store import iso

Handler = Callable[[Request], Awaitable[Response]]
LOG_LEVELS = ("debug", "info", "warn", "error")
DEFAULT_CPU_COUNT = 2
DISK_MB = 10240


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _int(value, name: str, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ApiError(400, f"{name} must be a non-negative integer")
    return value


class TemplateApi:
    def __init__(self, manager: SandboxManager, registry: TemplateRegistry, api_key: str) -> None:
        self.manager = manager
        self.registry = registry
        self.builder = Builder(manager, registry)
        remove(registry.collect(manager.store))  # what builds cut short by a restart left
        self._upload_key = hashlib.sha256(f"e2b-local upload:{api_key}".encode()).digest()

    # -- build -------------------------------------------------------------------------------

    async def request_build(self, request: Request, body: dict) -> Response:
        reference = body.get("name") or body.get("alias")
        if not isinstance(reference, str) or not reference:
            raise ApiError(400, "name is required")
        name, tag = split_name(reference)
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ApiError(400, "tags must be a list of strings")
        tags = list(dict.fromkeys([*([tag] if tag else []), *tags]))
        template, build = self.registry.request(
            name, tags, _int(body.get("cpuCount"), "cpuCount", DEFAULT_CPU_COUNT),
            _int(body.get("memoryMB"), "memoryMB", self.manager.settings.memory_mb))
        return JSONResponse({"templateID": template.template_id, "buildID": build.build_id, "public": False,
                             "names": template.names, "aliases": template.names,
                             "tags": build.tags or ["default"]}, status_code=202)

    def _signature(self, template_id: str, files_hash: str) -> str:
        return hmac.new(self._upload_key, f"{template_id}:{files_hash}".encode(), hashlib.sha256).hexdigest()

    async def upload_link(self, request: Request) -> Response:
        template = self.registry.get(request.path_params["template_id"])
        files_hash = request.path_params["files_hash"]
        if not FILES_HASH.fullmatch(files_hash):
            raise ApiError(400, "the files hash must be 64 lowercase hex digits")
        if self.registry.file_path(files_hash).is_file():
            return JSONResponse({"present": True}, status_code=201)
        url = (f"{str(request.base_url).rstrip('/')}/templates/{template.template_id}/files/{files_hash}/upload"
               f"?signature={self._signature(template.template_id, files_hash)}")
        return JSONResponse({"present": False, "url": url}, status_code=201)

    async def upload(self, request: Request) -> Response:
        """The signed PUT of a COPY step's tar: no API key (E2B's is a storage URL), the signature
        names the template and hash. Written to disk as it arrives, capped like every upload
        (--max-upload-mb: 413), and in place under its hash only once complete."""
        template_id, files_hash = request.path_params["template_id"], request.path_params["files_hash"]
        expected = self._signature(template_id, files_hash)
        if not hmac.compare_digest(request.query_params.get("signature", "").encode(), expected.encode()):
            return JSONResponse({"code": 401, "message": "invalid upload signature"}, status_code=401)
        cap = self.manager.settings.max_upload_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > cap:
            return JSONResponse({"code": 413, "message": f"upload larger than {cap} bytes"}, status_code=413)
        target = self.registry.file_path(files_hash)
        partial = target.with_name(f".{target.name}.{secrets.token_hex(8)}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            written = 0
            async for chunk in request.stream():
                written += len(chunk)
                if written > cap:
                    return JSONResponse({"code": 413, "message": f"upload larger than {cap} bytes"},
                                        status_code=413)
                await asyncio.to_thread(_write_all, fd, chunk)
            await asyncio.to_thread(os.fsync, fd)
            os.replace(partial, target)
        finally:
            os.close(fd)
            partial.unlink(missing_ok=True)
        return Response(status_code=200)

    async def start_build(self, request: Request, body: dict) -> Response:
        build = self.registry.build(request.path_params["template_id"], request.path_params["build_id"])
        if build.status != WAITING or build.build_id in self.builder.tasks:
            raise ApiError(400, f"build '{build.build_id}' was already started (status {build.status})")
        steps = body.get("steps") or []
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise ApiError(400, "steps must be a list of objects")
        if bool(body.get("fromImage")) == bool(body.get("fromTemplate")):
            raise ApiError(400, "exactly one of fromImage or fromTemplate must be given")
        self.builder.start(build, body)
        return Response(status_code=202)

    async def build_status(self, request: Request) -> Response:
        build = self.registry.build(request.path_params["template_id"], request.path_params["build_id"])
        query = request.query_params
        try:
            offset = int(query.get("logsOffset", 0))
            limit = int(query.get("limit", 100))
        except ValueError:
            raise ApiError(400, "logsOffset and limit must be integers") from None
        if offset < 0 or not 0 <= limit <= 100:
            raise ApiError(400, "logsOffset must be >= 0 and limit 0-100")
        entries = build.logs
        if query.get("level"):
            if query["level"] not in LOG_LEVELS:
                raise ApiError(400, f"level must be one of {', '.join(LOG_LEVELS)}")
            floor = LOG_LEVELS.index(query["level"])
            entries = [e for e in entries if LOG_LEVELS.index(e["level"]) >= floor]
        answer = {"templateID": build.template_id, "buildID": build.build_id, "status": build.status,
                  "logs": [], "logEntries": entries[offset:offset + limit]}
        if build.reason:
            answer["reason"] = build.reason
        return JSONResponse(answer)

    # -- names, tags, listing ------------------------------------------------------------------

    async def alias(self, request: Request) -> Response:
        name = request.path_params["alias"]
        template = self.registry.find(name)
        if template is not None and name in template.names:
            return JSONResponse({"templateID": template.template_id, "public": False})
        if name in BASE_TEMPLATES:  # E2B's public base template: the host system here
            return JSONResponse({"templateID": name, "public": True})
        raise ApiError(404, f"template alias '{name}' not found")

    async def assign_tags(self, request: Request, body: dict) -> Response:
        target, tags = body.get("target"), body.get("tags")
        if not isinstance(target, str) or not isinstance(tags, list) or not tags:
            raise ApiError(400, "target (name:tag) and tags are required")
        build = self.registry.assign_tags(target, [str(t) for t in tags])
        return JSONResponse({"tags": tags, "buildID": build.build_id}, status_code=201)

    async def remove_tags(self, request: Request, body: dict) -> Response:
        name, tags = body.get("name"), body.get("tags")
        if not isinstance(name, str) or not isinstance(tags, list):
            raise ApiError(400, "name and tags are required")
        self.registry.remove_tags(split_name(name)[0], [str(t) for t in tags])
        return Response(status_code=204)

    async def tags(self, request: Request) -> Response:
        template = self.registry.get(request.path_params["template_id"])
        return JSONResponse([{"tag": tag, "buildID": build_id, "createdAt": iso(template.tag_times.get(tag, 0))}
                             for tag, build_id in sorted(template.tags.items())])

    def _template_json(self, template: TemplateRecord) -> dict:
        current = self.registry.builds.get(template.tags.get("default", ""))
        latest = self.registry.builds.get(template.builds[-1]) if template.builds else None
        shown = current or latest
        return {
            "templateID": template.template_id, "buildID": shown.build_id if shown else "",
            "cpuCount": shown.cpu_count if shown else DEFAULT_CPU_COUNT,
            "memoryMB": shown.memory_mb if shown else self.manager.settings.memory_mb,
            "diskSizeMB": DISK_MB, "public": False, "aliases": template.names, "names": template.names,
            "createdAt": iso(template.created_at), "updatedAt": iso(template.updated_at), "createdBy": None,
            "lastSpawnedAt": iso(template.last_spawned_at) if template.last_spawned_at else None,
            "spawnCount": template.spawn_count, "buildCount": len(template.builds), "envdVersion": ENVD_VERSION,
            "buildStatus": latest.status if latest else WAITING,
        }

    @staticmethod
    def _build_json(build: BuildRecord) -> dict:
        answer = {"buildID": build.build_id, "status": build.status, "createdAt": iso(build.created_at),
                  "updatedAt": iso(build.updated_at), "cpuCount": build.cpu_count, "memoryMB": build.memory_mb,
                  "diskSizeMB": DISK_MB, "envdVersion": ENVD_VERSION}
        if build.finished_at:
            answer["finishedAt"] = iso(build.finished_at)
        return answer

    async def list(self, request: Request) -> Response:
        return JSONResponse([self._template_json(t) for t in self.registry.templates.values()])

    async def get(self, request: Request) -> Response:
        template = self.registry.get(request.path_params["template_id"])
        builds = [self.registry.builds[b] for b in reversed(template.builds) if b in self.registry.builds]
        return JSONResponse({**self._template_json(template), "builds": [self._build_json(b) for b in builds]})

    async def delete(self, request: Request) -> Response:
        build_ids = self.registry.delete(request.path_params["template_id"])
        self.builder.cancel(build_ids)
        await asyncio.to_thread(remove, self.registry.collect(self.manager.store))
        return Response(status_code=204)

    # -- sandboxes -------------------------------------------------------------------------------

    def launch(self, reference: str) -> tuple[dict, TemplateRecord, BuildRecord] | None:
        """The SandboxRecord fields of a sandbox of the built template `reference` names (None:
        no such template, the sandbox starts from the host system as before)."""
        found = self.registry.ready_build(reference)
        if found is None:
            return None
        template, build = found
        return {"template_id": template.template_id, "template_alias": template.names[0],
                "layer": str(self.registry.layer(build.build_id)), "template_env": dict(build.env),
                "workdir": build.workdir, "default_user": build.user, "cpu_count": build.cpu_count, "memory_mb": build.memory_mb}, template, build

    def sandbox_gone(self, _sandbox_id: str) -> None:
        """A killed sandbox may have been the last user of a layer."""
        freed = self.registry.collect(self.manager.store)
        if freed:
            asyncio.get_running_loop().run_in_executor(None, remove, freed)

    def routes(self, endpoint: Callable[[str, Handler], Handler], with_body) -> list[Route]:
        """`endpoint(op, handler)` adds auth and faults; `with_body(handler)` reads the JSON body."""
        def route(path: str, handler: Handler, method: str) -> Route:
            return Route(path, endpoint("templates", handler), methods=[method])

        return [
            route("/v3/templates", with_body(self.request_build), "POST"),
            route("/v2/templates/{template_id}/builds/{build_id}", with_body(self.start_build), "POST"),
            route("/templates/{template_id}/builds/{build_id}/status", self.build_status, "GET"),
            route("/templates/{template_id}/files/{files_hash}", self.upload_link, "GET"),
            Route("/templates/{template_id}/files/{files_hash}/upload", self.upload, methods=["PUT"]),
            route("/templates/aliases/{alias}", self.alias, "GET"),
            route("/templates/tags", with_body(self.assign_tags), "POST"),
            route("/templates/tags", with_body(self.remove_tags), "DELETE"),
            route("/templates/{template_id}/tags", self.tags, "GET"),
            route("/templates", self.list, "GET"),
            route("/templates/{template_id}", self.get, "GET"),
            route("/templates/{template_id}", self.delete, "DELETE"),
        ]
