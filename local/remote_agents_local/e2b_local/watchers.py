"""Directory watchers (envd's WatchDir stream and CreateWatcher/GetWatcherEvents/RemoveWatcher)
on inotify. The watched directory is opened inside the sandbox as the calling user (so its path
and permissions mean what they mean there) and the watch is added through that descriptor;
events name paths relative to the watched directory, as envd's do."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import struct

from e2b.envd.filesystem import filesystem_pb as pb

_libc = ctypes.CDLL(None, use_errno=True)
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
IN_MODIFY, IN_ATTRIB, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x4, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_ISDIR, IN_Q_OVERFLOW, IN_IGNORED = 0x100, 0x200, 0x40000000, 0x4000, 0x8000
MASK = IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
_HEADER = struct.Struct("iIII")
MAX_QUEUED = 10000  # events a polled watcher keeps between two GetWatcherEvents


def event_type(mask: int) -> pb.EventType | None:
    if mask & (IN_CREATE | IN_MOVED_TO):
        return pb.EventType.CREATE
    if mask & IN_MODIFY:
        return pb.EventType.WRITE
    if mask & IN_DELETE:
        return pb.EventType.REMOVE
    if mask & IN_MOVED_FROM:
        return pb.EventType.RENAME
    if mask & IN_ATTRIB:
        return pb.EventType.CHMOD
    return None


class Watcher:
    """One inotify instance on a sandbox directory (and its subdirectories when recursive)."""

    def __init__(self, root: str, recursive: bool) -> None:
        self.root = root.rstrip("/") or "/"
        self.recursive = recursive
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.dirs: dict[int, str] = {}  # watch descriptor -> directory relative to root ('' = root)
        self.queue: asyncio.Queue[tuple[str, pb.EventType, int]] = asyncio.Queue(MAX_QUEUED)
        self._reading = False

    def add(self, directory_fd: int, relative: str) -> None:
        """Watch the directory open on `directory_fd` (opened in the sandbox by the caller)."""
        wd = _libc.inotify_add_watch(self.fd, f"/proc/self/fd/{directory_fd}".encode(), MASK)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), relative)
        self.dirs[wd] = relative

    def start(self, on_new_dir) -> None:
        """Begin delivering events; `on_new_dir(relative)` is called for directories created
        under a recursive watch, to watch them too."""
        self._on_new_dir = on_new_dir
        asyncio.get_running_loop().add_reader(self.fd, self._readable)
        self._reading = True

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            name = data[offset + _HEADER.size:offset + _HEADER.size + length].split(b"\0", 1)[0].decode(
                errors="replace")
            offset += _HEADER.size + length
            if mask & IN_IGNORED:
                self.dirs.pop(wd, None)
                continue
            base = self.dirs.get(wd)
            kind = event_type(mask)
            if base is None or kind is None or not name:
                continue
            relative = f"{base}/{name}" if base else name
            if not self.queue.full():
                self.queue.put_nowait((relative, kind, mask))
            if self.recursive and mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                asyncio.get_running_loop().create_task(self._on_new_dir(relative))

    def drain(self) -> list[tuple[str, pb.EventType, int]]:
        events = []
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        return events

    def close(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self.fd)
            self._reading = False
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def not_a_directory(path: str) -> OSError:
    return NotADirectoryError(errno.ENOTDIR, "path is not a directory", path)
