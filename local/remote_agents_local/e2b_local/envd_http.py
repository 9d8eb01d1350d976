"""envd's plain HTTP API: GET/POST /files and GET /health."""

from __future__ import annotations

import gzip
from email import policy
from email.parser import BytesParser
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from remote_agents_local.e2b_local.envd_process import SANDBOX_HEADER
from remote_agents_local.e2b_local.isolation import SandboxFiles
from remote_agents_local.e2b_local.sandboxes import SandboxManager


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def _multipart_files(content_type: str, body: bytes) -> list[tuple[str | None, bytes]]:
    """(filename, data) of every part; the stdlib email parser understands form-data."""
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    return [(part.get_filename(), part.get_payload(decode=True) or b"") for part in message.iter_parts()]


class EnvdHttp:
    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager

    def _files(self, request: Request) -> SandboxFiles:
        return self.manager.runtime(request.headers[SANDBOX_HEADER]).files

    async def health(self, request: Request) -> Response:
        return Response(status_code=204)

    async def read(self, request: Request) -> Response:
        path = request.query_params.get("path")
        if not path:
            return _error(400, "path is required")
        host = self._files(request).to_host(path)
        if not host.exists():
            return _error(404, f"path '{path}' does not exist")
        if host.is_dir():
            return _error(400, f"path '{path}' is a directory")
        return Response(host.read_bytes(), media_type="application/octet-stream")

    async def write(self, request: Request) -> Response:
        files = self._files(request)
        content_type = request.headers.get("content-type", "")
        body = await request.body()
        query_path = request.query_params.get("path")
        if content_type.startswith("multipart/form-data"):
            uploads = _multipart_files(content_type, body)
            if len(uploads) == 1 and query_path:
                uploads = [(query_path, uploads[0][1])]
        else:
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            uploads = [(query_path, body)]
        written = []
        for path, data in uploads:
            if not path:
                return _error(400, "every file needs a path")
            host = files.to_host(path)
            if host.is_dir():
                return _error(400, f"path '{path}' is a directory")
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_bytes(data)
            written.append({"name": Path(path).name, "type": "file", "path": files.to_sandbox(host)})
        return JSONResponse(written)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/health", self.health, methods=["GET"]),
            Route("/files", self.read, methods=["GET"]),
            Route("/files", self.write, methods=["POST"]),
        ])
