"""envd's Filesystem service (Stat, MakeDir, Move, ListDir, Remove) on the SDK's server stub.
Watchers are not emulated and answer UNIMPLEMENTED (the stub's default)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat as st
from pathlib import Path

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf.wkt import Timestamp

from e2b.envd.filesystem import filesystem_pb as pb
from e2b.envd.filesystem.filesystem_connect import Filesystem
from remote_agents_local.e2b_local.envd_process import SANDBOX_HEADER
from remote_agents_local.e2b_local.isolation import SandboxFiles
from remote_agents_local.e2b_local.sandboxes import SandboxManager


def _name(lookup, ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def entry_info(files: SandboxFiles, host: Path) -> pb.EntryInfo:
    info = host.lstat()
    is_link = st.S_ISLNK(info.st_mode)
    target = info
    if is_link:
        try:
            target = host.stat()
        except OSError:
            pass
    return pb.EntryInfo(
        name=host.name,
        type=pb.FileType.DIRECTORY if st.S_ISDIR(target.st_mode) else pb.FileType.FILE,
        path=files.to_sandbox(host),
        size=target.st_size,
        mode=st.S_IMODE(target.st_mode),
        permissions=st.filemode(target.st_mode),
        owner=_name(pwd.getpwuid, info.st_uid),
        group=_name(grp.getgrgid, info.st_gid),
        modified_time=Timestamp.from_nanos(target.st_mtime_ns),
        symlink_target=os.readlink(host) if is_link else None,
        is_symlink=is_link,
    )


def _missing(path: str) -> ConnectError:
    return ConnectError(Code.NOT_FOUND, f"path not found: {path}")


class FilesystemService(Filesystem):
    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager

    def _files(self, ctx: RequestContext) -> SandboxFiles:
        return self.manager.runtime(ctx.request_headers[SANDBOX_HEADER]).files

    async def stat(self, request: pb.StatRequest, ctx: RequestContext) -> pb.StatResponse:
        files = self._files(ctx)
        host = files.to_host(request.path)
        if not host.exists() and not host.is_symlink():
            raise _missing(request.path)
        return pb.StatResponse(entry=entry_info(files, host))

    async def make_dir(self, request: pb.MakeDirRequest, ctx: RequestContext) -> pb.MakeDirResponse:
        files = self._files(ctx)
        host = files.to_host(request.path)
        if host.exists():
            raise ConnectError(Code.ALREADY_EXISTS, f"directory already exists: {request.path}")
        host.mkdir(parents=True)
        return pb.MakeDirResponse(entry=entry_info(files, host))

    async def move(self, request: pb.MoveRequest, ctx: RequestContext) -> pb.MoveResponse:
        files = self._files(ctx)
        source, destination = files.to_host(request.source), files.to_host(request.destination)
        if not source.exists():
            raise _missing(request.source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        source.rename(destination)
        return pb.MoveResponse(entry=entry_info(files, destination))

    async def list_dir(self, request: pb.ListDirRequest, ctx: RequestContext) -> pb.ListDirResponse:
        files = self._files(ctx)
        root = files.to_host(request.path)
        if not root.exists():
            raise _missing(request.path)
        if not root.is_dir():
            raise ConnectError(Code.INVALID_ARGUMENT, f"path is not a directory: {request.path}")
        depth = max(request.depth, 1)
        entries: list[pb.EntryInfo] = []

        def walk(directory: Path, level: int) -> None:
            for child in sorted(directory.iterdir()):
                entries.append(entry_info(files, child))
                if level < depth and child.is_dir() and not child.is_symlink():
                    walk(child, level + 1)

        walk(root, 1)
        return pb.ListDirResponse(entries=entries)

    async def remove(self, request: pb.RemoveRequest, ctx: RequestContext) -> pb.RemoveResponse:
        host = self._files(ctx).to_host(request.path)
        if host.is_dir() and not host.is_symlink():
            shutil.rmtree(host)
        elif host.exists() or host.is_symlink():
            host.unlink()
        else:
            raise _missing(request.path)
        return pb.RemoveResponse()
