"""envd's Filesystem service (Stat, MakeDir, Move, ListDir, Remove, and directory watchers) on
the SDK's server stub. Every operation runs inside the sandbox's filesystem as the calling user
(see sandbox_fs); watchers are inotify instances on directories opened that way (see watchers)."""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import stat as st
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf.wkt import Timestamp

from e2b.envd.filesystem import filesystem_pb as pb
from e2b.envd.filesystem.filesystem_connect import Filesystem
from remote_agents_local.e2b_local.envd_process import SANDBOX_HEADER, _keepalive_seconds, call_user, user_from_basic
from remote_agents_local.e2b_local.isolation import BoundaryConfig, BoundaryError, sandbox_path
from remote_agents_local.e2b_local.processes import SANDBOX_GONE
from remote_agents_local.e2b_local.sandbox_fs import Identity, RootedFs, run_as
from remote_agents_local.e2b_local.sandboxes import SandboxManager
from remote_agents_local.e2b_local.watchers import Watcher

from protobuf import Oneof

_NAMES = {0: "root", 1000: "user"}


def owner_name(config: BoundaryConfig, host_id: int) -> str:
    inside = config.sandbox_uid(host_id)
    return "nobody" if inside is None else _NAMES.get(inside, str(inside))


def entry_info(fs: RootedFs, config: BoundaryConfig, path: str) -> pb.EntryInfo:
    info = fs.lstat(path)
    is_link = st.S_ISLNK(info.st_mode)
    target = info
    link = None
    if is_link:
        link = fs.readlink(path)
        try:
            target = fs.stat(path)
        except OSError:
            pass
    return pb.EntryInfo(
        name=path.rsplit("/", 1)[-1] or "/",
        type=pb.FileType.DIRECTORY if st.S_ISDIR(target.st_mode) else pb.FileType.FILE,
        path=path,
        size=target.st_size,
        mode=st.S_IMODE(target.st_mode),
        permissions=st.filemode(target.st_mode),
        owner=owner_name(config, info.st_uid),
        group=owner_name(config, info.st_gid),
        modified_time=Timestamp.from_nanos(target.st_mtime_ns),
        symlink_target=link,
        is_symlink=is_link,
        metadata=fs.metadata(path) or None,
    )


def connect_error(error: OSError, path: str) -> ConnectError:
    if error.errno == errno.ENOENT:
        return ConnectError(Code.NOT_FOUND, f"path not found: {path}")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConnectError(Code.PERMISSION_DENIED, f"permission denied: {path}: {error.strerror}")
    if error.errno == errno.EEXIST:
        return ConnectError(Code.ALREADY_EXISTS, f"already exists: {path}")
    if error.errno == errno.ENOSPC:
        return ConnectError(Code.RESOURCE_EXHAUSTED, f"no space left: {path}")
    return ConnectError(Code.INVALID_ARGUMENT, f"{path}: {error.strerror}")


@dataclass
class _Watch:
    sandbox_id: str
    watcher: Watcher
    include_entry: bool
    fs: RootedFs
    identity: Identity


class FilesystemService(Filesystem):
    def __init__(self, manager: SandboxManager) -> None:
        self.manager = manager
        self.watches: dict[str, _Watch] = {}  # CreateWatcher's, by watcher id

    async def _call(self, ctx: RequestContext, function: Callable, *paths: str):
        """function(fs, config, *absolute paths) as the call's user, inside the call's sandbox."""
        _, uid, home = call_user(self.manager.user_of(ctx.request_headers[SANDBOX_HEADER],
                                                      user_from_basic(ctx.request_headers.get("authorization"))))
        runtime = self.manager.runtime(ctx.request_headers[SANDBOX_HEADER])
        try:
            await runtime.init.ensure()
        except BoundaryError as error:
            raise ConnectError(Code.UNAVAILABLE, f"{SANDBOX_GONE}: {error}") from None
        fs, config = RootedFs(runtime.init.root_fd), self.manager.boundary
        absolute = [sandbox_path(p, home) for p in paths]
        host_id = config.host_uid(uid)
        try:
            return await run_as(Identity(host_id, host_id), function, fs, config, *absolute)
        except OSError as error:
            raise connect_error(error, paths[0] if len(paths) == 1 else " -> ".join(paths)) from None

    async def _watch(self, ctx: RequestContext, path: str, recursive: bool, include_entry: bool) -> _Watch:
        """A started watcher on `path` (and its subdirectories when recursive), as the call's user."""
        _, uid, home = call_user(self.manager.user_of(ctx.request_headers[SANDBOX_HEADER],
                                                      user_from_basic(ctx.request_headers.get("authorization"))))
        sandbox_id = ctx.request_headers[SANDBOX_HEADER]
        runtime = self.manager.runtime(sandbox_id)
        try:
            await runtime.init.ensure()
        except BoundaryError as error:
            raise ConnectError(Code.UNAVAILABLE, f"{SANDBOX_GONE}: {error}") from None
        fs, host_id = RootedFs(runtime.init.root_fd), self.manager.boundary.host_uid(uid)
        identity = Identity(host_id, host_id)
        root = sandbox_path(path, home)

        def open_tree(fs: RootedFs, relative: str) -> list[tuple[int, str]]:
            top = f"{root}/{relative}" if relative else root
            opened = [(fs.open(top, os.O_RDONLY | os.O_DIRECTORY), relative)]
            if recursive:
                for name in fs.scandir(top):
                    child = f"{relative}/{name}" if relative else name
                    if st.S_ISDIR(fs.lstat(f"{root}/{child}").st_mode):
                        opened += open_tree(fs, child)
            return opened

        watcher = Watcher(root, recursive)

        async def add(relative: str) -> None:
            try:
                opened = await run_as(identity, open_tree, fs, relative)
            except OSError:
                return  # gone again, or not the user's to watch
            for fd, rel in opened:
                try:
                    watcher.add(fd, rel)
                finally:
                    os.close(fd)

        try:
            for fd, rel in await run_as(identity, open_tree, fs, ""):
                try:
                    watcher.add(fd, rel)
                finally:
                    os.close(fd)
        except OSError as error:
            watcher.close()
            raise connect_error(error, path) from None
        watcher.start(add)
        return _Watch(sandbox_id, watcher, include_entry, fs, identity)

    async def _event(self, watch: _Watch, relative: str, kind: pb.EventType) -> pb.FilesystemEvent:
        entry = None
        if watch.include_entry:
            try:
                entry = await run_as(watch.identity, entry_info, watch.fs, self.manager.boundary,
                                     f"{watch.watcher.root.rstrip('/')}/{relative}")
            except OSError:
                pass  # removed meanwhile: the entry is best-effort, as in envd
        return pb.FilesystemEvent(name=relative, type=kind, entry=entry)

    async def watch_dir(self, request: pb.WatchDirRequest, ctx: RequestContext) -> AsyncIterator[pb.WatchDirResponse]:
        watch = await self._watch(ctx, request.path, request.recursive, request.include_entry)
        keepalive = _keepalive_seconds(ctx)
        try:
            yield pb.WatchDirResponse(event=Oneof("start", pb.WatchDirResponse.StartEvent()))
            while True:
                try:
                    relative, kind, _ = await asyncio.wait_for(watch.watcher.queue.get(), keepalive)
                except TimeoutError:
                    yield pb.WatchDirResponse(event=Oneof("keepalive", pb.WatchDirResponse.KeepAlive()))
                    continue
                yield pb.WatchDirResponse(event=Oneof("filesystem", await self._event(watch, relative, kind)))
        finally:
            watch.watcher.close()

    async def create_watcher(self, request: pb.CreateWatcherRequest, ctx: RequestContext) -> pb.CreateWatcherResponse:
        watch = await self._watch(ctx, request.path, request.recursive, request.include_entry)
        watcher_id = secrets.token_hex(8)
        self.watches[watcher_id] = watch
        return pb.CreateWatcherResponse(watcher_id=watcher_id)

    def _owned(self, ctx: RequestContext, watcher_id: str) -> _Watch:
        watch = self.watches.get(watcher_id)
        if watch is None or watch.sandbox_id != ctx.request_headers[SANDBOX_HEADER]:
            raise ConnectError(Code.NOT_FOUND, f"watcher {watcher_id} not found")
        return watch

    async def get_watcher_events(self, request: pb.GetWatcherEventsRequest,
                                 ctx: RequestContext) -> pb.GetWatcherEventsResponse:
        watch = self._owned(ctx, request.watcher_id)
        await asyncio.sleep(0.05)  # let events of a change made just before this call arrive
        events = [await self._event(watch, relative, kind) for relative, kind, _ in watch.watcher.drain()]
        return pb.GetWatcherEventsResponse(events=events)

    async def remove_watcher(self, request: pb.RemoveWatcherRequest, ctx: RequestContext) -> pb.RemoveWatcherResponse:
        self._owned(ctx, request.watcher_id).watcher.close()
        del self.watches[request.watcher_id]
        return pb.RemoveWatcherResponse()

    def close_watchers(self, sandbox_id: str) -> None:
        for watcher_id in [w for w, watch in self.watches.items() if watch.sandbox_id == sandbox_id]:
            self.watches.pop(watcher_id).watcher.close()

    async def stat(self, request: pb.StatRequest, ctx: RequestContext) -> pb.StatResponse:
        entry = await self._call(ctx, entry_info, request.path)
        return pb.StatResponse(entry=entry)

    async def make_dir(self, request: pb.MakeDirRequest, ctx: RequestContext) -> pb.MakeDirResponse:
        def make(fs: RootedFs, config: BoundaryConfig, path: str) -> pb.EntryInfo:
            if not fs.makedirs(path):
                raise FileExistsError(errno.EEXIST, "directory already exists", path)
            return entry_info(fs, config, path)
        return pb.MakeDirResponse(entry=await self._call(ctx, make, request.path))

    async def move(self, request: pb.MoveRequest, ctx: RequestContext) -> pb.MoveResponse:
        def move(fs: RootedFs, config: BoundaryConfig, source: str, destination: str) -> pb.EntryInfo:
            fs.rename(source, destination)
            return entry_info(fs, config, destination)
        return pb.MoveResponse(entry=await self._call(ctx, move, request.source, request.destination))

    async def list_dir(self, request: pb.ListDirRequest, ctx: RequestContext) -> pb.ListDirResponse:
        depth = max(request.depth, 1)

        def listing(fs: RootedFs, config: BoundaryConfig, root: str) -> list[pb.EntryInfo]:
            if not st.S_ISDIR(fs.stat(root).st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "path is not a directory", root)
            entries: list[pb.EntryInfo] = []

            def walk(directory: str, level: int) -> None:
                for name in fs.scandir(directory):
                    child = f"{directory.rstrip('/')}/{name}"
                    entry = entry_info(fs, config, child)
                    entries.append(entry)
                    if level < depth and entry.type == pb.FileType.DIRECTORY and not entry.is_symlink:
                        walk(child, level + 1)

            walk(root, 1)
            return entries
        try:
            return pb.ListDirResponse(entries=await self._call(ctx, listing, request.path))
        except ConnectError as error:
            if "not a directory" in error.message:
                raise ConnectError(Code.INVALID_ARGUMENT, f"path is not a directory: {request.path}") from None
            raise

    async def remove(self, request: pb.RemoveRequest, ctx: RequestContext) -> pb.RemoveResponse:
        def remove(fs: RootedFs, config: BoundaryConfig, path: str) -> None:
            try:
                fs.remove(path)
            except FileNotFoundError:
                pass  # as envd: removing what is not there succeeds (E2B's SDK tests rely on it)
        await self._call(ctx, remove, request.path)
        return pb.RemoveResponse()
