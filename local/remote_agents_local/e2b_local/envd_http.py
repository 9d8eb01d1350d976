"""envd's plain HTTP API: GET/POST /files and GET /health.

Nothing is held in memory whole: an upload is parsed (multipart or raw, optionally gzip) as it
arrives and streamed into anonymous spool files in the state dir, capped in size after
decompression (a gzip bomb stops at the cap, 413), then copied into the sandbox as the calling
user. A download streams a regular file only, up to the size it had when opened; a directory,
/dev/zero, a FIFO or a socket is refused with 400 before a byte is read."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from remote_agents_local.e2b_local.envd_process import SANDBOX_HEADER
from remote_agents_local.e2b_local.isolation import BoundaryError, resolve_user, sandbox_path
from remote_agents_local.e2b_local.processes import SANDBOX_GONE
from remote_agents_local.e2b_local.sandbox_fs import Identity, NotRegularFile, RootedFs, run_as
from remote_agents_local.e2b_local.sandboxes import SandboxManager

READ_CHUNK = 256 * 1024
MAX_PARTS = 1000
MAX_PART_HEADERS = 16 * 1024
# Decompressed output per step of the inflater: what one compressed chunk may expand to at once.
INFLATE_STEP = 1 << 20
METADATA_HEADER = "x-metadata-"  # X-Metadata-KEY: VALUE, applied to every file of an upload
_METADATA_KEY = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_METADATA_VALUE = re.compile(r"[\x20-\x7e]*")


class UploadError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def _os_error(error: OSError, path: str) -> JSONResponse:
    if isinstance(error, NotRegularFile):
        return _error(400, f"path '{path}' is not a regular file")
    if error.errno == errno.ENOENT:
        return _error(404, f"path '{path}' does not exist")
    if error.errno == errno.EISDIR:
        return _error(400, f"path '{path}' is a directory")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return _error(403, f"permission denied for '{path}': {error.strerror}")
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return _error(507, f"not enough space for '{path}'")
    return _error(400, f"'{path}': {error.strerror}")


class Spool:
    """Anonymous, size-capped files in the state dir for the parts of one upload."""

    def __init__(self, directory: Path, cap: int) -> None:
        self.directory = directory
        self.cap = cap
        self.total = 0
        self.fds: list[int] = []

    def new(self) -> int:
        fd = os.open(self.directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        self.fds.append(fd)
        return fd

    def write(self, fd: int, data: bytes) -> None:
        self.total += len(data)
        if self.total > self.cap:
            raise UploadError(413, f"upload larger than {self.cap} bytes")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


async def _inflated(chunks: AsyncIterator[bytes], gzip: bool) -> AsyncIterator[bytes]:
    if not gzip:
        async for chunk in chunks:
            if chunk:
                yield chunk
        return
    inflater = zlib.decompressobj(wbits=31)
    try:
        async for chunk in chunks:
            data = chunk
            while data:
                # Bounded output per call: unconsumed input waits in unconsumed_tail.
                out = inflater.decompress(data, INFLATE_STEP)
                data = inflater.unconsumed_tail
                if out:
                    yield out
                if inflater.eof:
                    return
        if not inflater.eof:
            raise UploadError(400, "truncated gzip body")
    except zlib.error as error:
        raise UploadError(400, f"invalid gzip body: {error}") from None


def _filename(headers: bytes) -> str | None:
    for line in headers.decode("utf-8", errors="replace").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-disposition":
            found = re.search(r'filename="((?:[^"\\]|\\.)*)"', value) or re.search(r"filename=([^;\s]+)", value)
            if found:
                return found.group(1).replace('\\"', '"')
    return None


async def _multipart(stream: AsyncIterator[bytes], boundary: bytes, spool: Spool) -> list[tuple[str | None, int]]:
    """(filename, spool fd) of each part of a multipart/form-data body, streamed."""
    delimiter = b"--" + boundary
    buffer = bytearray()
    parts: list[tuple[str | None, int]] = []
    chunks = stream.__aiter__()

    async def more() -> bool:
        try:
            buffer.extend(await chunks.__anext__())
            return True
        except StopAsyncIteration:
            return False

    # Preamble up to the first delimiter line.
    while (start := buffer.find(delimiter)) < 0:
        if len(buffer) > MAX_PART_HEADERS or not await more():
            raise UploadError(400, "multipart body without its boundary")
    del buffer[:start + len(delimiter)]
    while True:
        while len(buffer) < 2:
            if not await more():
                raise UploadError(400, "truncated multipart body")
        if buffer[:2] == b"--":
            return parts
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > MAX_PART_HEADERS or not await more():
                raise UploadError(400, "multipart part headers missing or too long")
        if len(parts) >= MAX_PARTS:
            raise UploadError(400, f"more than {MAX_PARTS} files in one upload")
        fd = spool.new()
        parts.append((_filename(bytes(buffer[2:end])), fd))
        del buffer[:end + 4]
        closing = b"\r\n" + delimiter
        while (found := buffer.find(closing)) < 0:
            # Keep what could be the start of the delimiter; spool the rest.
            keep = len(closing) - 1
            if len(buffer) > keep:
                await asyncio.to_thread(spool.write, fd, bytes(buffer[:-keep]))
                del buffer[:-keep]
            if not await more():
                raise UploadError(400, "truncated multipart body")
        await asyncio.to_thread(spool.write, fd, bytes(buffer[:found]))
        del buffer[:found + len(closing)]


async def _raw(stream: AsyncIterator[bytes], spool: Spool) -> int:
    fd = spool.new()
    pending = bytearray()
    async for chunk in stream:
        pending.extend(chunk)
        if len(pending) >= READ_CHUNK:
            await asyncio.to_thread(spool.write, fd, bytes(pending))
            pending.clear()
    if pending:
        await asyncio.to_thread(spool.write, fd, bytes(pending))
    return fd


class EnvdHttp:
    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager
        self.spool_dir = manager.settings.state_dir / "uploads"
        self.spool_dir.mkdir(exist_ok=True, mode=0o700)

    async def _sandbox(self, request: Request) -> tuple[RootedFs, Identity, str] | JSONResponse:
        """The sandbox's filesystem, the calling user (`username` query parameter, as the SDK
        sends it) and that user's home."""
        try:
            _, uid, home = resolve_user(self.manager.user_of(request.headers[SANDBOX_HEADER],
                                                             request.query_params.get("username")))
        except KeyError:
            return _error(400, f"user '{request.query_params.get('username')}' does not exist in the sandbox")
        runtime = self.manager.runtime(request.headers[SANDBOX_HEADER])
        try:
            await runtime.init.ensure()
        except BoundaryError as error:
            return JSONResponse({"sandboxId": request.headers[SANDBOX_HEADER], "code": 502,
                                 "message": f"{SANDBOX_GONE}: {error}"}, status_code=502)
        host_id = self.manager.boundary.host_uid(uid)
        return RootedFs(runtime.init.root_fd), Identity(host_id, host_id), home

    async def health(self, request: Request) -> Response:
        return Response(status_code=204)

    async def read(self, request: Request) -> Response:
        path = request.query_params.get("path")
        if not path:
            return _error(400, "path is required")
        sandbox = await self._sandbox(request)
        if isinstance(sandbox, Response):
            return sandbox
        fs, identity, home = sandbox
        try:
            fd, size = await run_as(identity, fs.open_regular, sandbox_path(path, home))
        except OSError as error:
            return _os_error(error, path)

        async def body() -> AsyncIterator[bytes]:
            try:
                offset = 0
                while offset < size:
                    chunk = await asyncio.to_thread(os.pread, fd, min(READ_CHUNK, size - offset), offset)
                    if not chunk:
                        return
                    offset += len(chunk)
                    yield chunk
            finally:
                os.close(fd)

        return StreamingResponse(body(), media_type="application/octet-stream",
                                 headers={"content-length": str(size)})

    async def write(self, request: Request) -> Response:
        sandbox = await self._sandbox(request)
        if isinstance(sandbox, Response):
            return sandbox
        fs, identity, home = sandbox
        content_type = request.headers.get("content-type", "")
        query_path = request.query_params.get("path")
        declared = request.headers.get("content-length")
        cap = self.manager.settings.max_upload_bytes
        gzip = request.headers.get("content-encoding", "").lower() == "gzip"
        raw = not content_type.startswith("multipart/form-data")
        if raw and not gzip and declared and declared.isdigit() and int(declared) > cap:
            return _error(413, f"upload larger than {cap} bytes")  # refused before reading it
        metadata = {name[len(METADATA_HEADER):].lower(): value for name, value in request.headers.items()
                    if name.lower().startswith(METADATA_HEADER)}
        for key, value in metadata.items():
            if not _METADATA_KEY.fullmatch(key) or not _METADATA_VALUE.fullmatch(value):
                return _error(400, f"invalid metadata {key!r}")
        spool = Spool(self.spool_dir, cap)
        try:
            stream = _inflated(request.stream(), gzip)
            if not raw:
                found = re.search(r'boundary="?([^";]+)"?', content_type)
                if not found:
                    return _error(400, "multipart/form-data without a boundary")
                uploads = await _multipart(stream, found.group(1).encode(), spool)
                if len(uploads) == 1 and query_path:
                    uploads = [(query_path, uploads[0][1])]
            else:
                uploads = [(query_path, await _raw(stream, spool))]
            written = []
            for path, fd in uploads:
                if not path:
                    return _error(400, "every file needs a path")
                target = sandbox_path(path, home)
                try:
                    await run_as(identity, fs.write_from, target, fd, metadata)
                except OSError as error:
                    return _os_error(error, path)
                info = {"name": target.rsplit("/", 1)[-1], "type": "file", "path": target}
                if metadata:
                    info["metadata"] = metadata
                written.append(info)
            return JSONResponse(written)
        except UploadError as failure:
            return _error(failure.status, failure.message)
        except ClientDisconnect:
            return _error(400, "the client went away during the upload")
        finally:
            spool.close()

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/health", self.health, methods=["GET"]),
            Route("/files", self.read, methods=["GET"]),
            Route("/files", self.write, methods=["POST"]),
        ])
