"""The files API's access to a sandbox's filesystem, as the sandbox's own user would have it.

Every path is resolved inside the sandbox: from a descriptor of its root (its init's /proc/PID/root)
with openat2(RESOLVE_IN_ROOT), so `..` stops at the sandbox's / and a symlink the sandbox planted
(`/home/user/x -> /etc/shadow`, `-> /proc/1/root/...`) means what it means inside, never a host
path. Every operation runs on a worker thread whose filesystem uid/gid are the calling sandbox
user's host ids (setfsuid is per thread) with no supplementary groups, so the kernel checks
permissions exactly as for a command of that user: `user` cannot write /etc, and files it writes
are its own. Only the final component is ever acted on through a parent directory descriptor.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import posixpath
import shutil
import stat as st
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_OPENAT2 = 437  # the same on x86_64 and aarch64
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159}[os.uname().machine]
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
COPY_CHUNK = 1 << 20
# File metadata (the SDK's `metadata=`) lives in user xattrs under this prefix, as in envd.
XATTR_PREFIX = "user.e2b."


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(root_fd: int, path: str, flags: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, root_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


_worker = threading.local()


def _init_worker() -> None:
    # A raw syscall changes this thread's groups only (glibc's setgroups would change every thread).
    if _libc.syscall(_SYS_SETGROUPS, 0, None) != 0:
        raise OSError(ctypes.get_errno(), "setgroups")
    _worker.ready = True


# File operations of all sandboxes; a few threads, each switching fsuid per operation.
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sandbox-fs", initializer=_init_worker)


@dataclass(frozen=True)
class Identity:
    host_uid: int
    host_gid: int


def _run_as(identity: Identity, function, *args):
    previous_uid = _libc.setfsuid(identity.host_uid)
    previous_gid = _libc.setfsgid(identity.host_gid)
    try:
        if _libc.setfsuid(-1 & 0xFFFFFFFF) != identity.host_uid:
            raise PermissionError(errno.EPERM, "cannot switch to the sandbox user")
        return function(*args)
    finally:
        _libc.setfsgid(previous_gid)
        _libc.setfsuid(previous_uid)


async def run_as(identity: Identity, function, *args):
    return await asyncio.get_running_loop().run_in_executor(_pool, _run_as, identity, function, *args)


def split(path: str) -> tuple[str, str]:
    """An absolute, normalised sandbox path as (parent, name); name is '' for '/'."""
    parent, name = posixpath.split(path)
    return parent or "/", name


class RootedFs:
    """Blocking operations on absolute sandbox paths; call them through run_as."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd

    def open(self, path: str, flags: int, mode: int = 0) -> int:
        return openat2(self.root_fd, path, flags, mode)

    def parent(self, path: str) -> tuple[int, str]:
        """(descriptor of the parent directory, final name); the caller closes the descriptor."""
        parent, name = split(path)
        if not name:
            raise OSError(errno.EINVAL, "the sandbox's root itself", path)
        return self.open(parent, os.O_PATH | os.O_DIRECTORY), name

    def lstat(self, path: str) -> os.stat_result:
        parent, name = split(path)
        if not name:
            return os.fstat(self.root_fd)
        fd, name = self.parent(path)
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)

    def stat(self, path: str) -> os.stat_result:
        fd = self.open(path, os.O_PATH)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def readlink(self, path: str) -> str:
        fd, name = self.parent(path)
        try:
            return os.readlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    def makedirs(self, path: str) -> bool:
        """mkdir -p inside the sandbox; False when the directory existed already."""
        parts = [p for p in path.split("/") if p]
        created = False
        for depth in range(1, len(parts) + 1):
            prefix = "/" + "/".join(parts[:depth])
            try:
                os.close(self.open(prefix, os.O_PATH | os.O_DIRECTORY))
                continue
            except FileNotFoundError:
                pass
            fd, name = self.parent(prefix)
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
                created = True
            except FileExistsError:
                if depth == len(parts) and not created:
                    raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", prefix) from None
            finally:
                os.close(fd)
        return created

    def open_regular(self, path: str) -> tuple[int, int]:
        """(descriptor, size) of a regular file to read; anything else (a directory, /dev/zero, a
        FIFO, a socket) is refused before a byte is read. O_NONBLOCK: opening a FIFO never waits."""
        fd = self.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        info = os.fstat(fd)
        if not st.S_ISREG(info.st_mode):
            os.close(fd)
            if st.S_ISDIR(info.st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            raise NotRegularFile(path)
        return fd, info.st_size

    def metadata(self, path: str) -> dict[str, str]:
        """The user.e2b.* xattrs of a regular file or directory (others: none; unreadable: none)."""
        try:
            fd = self.open(path, os.O_PATH)
            try:
                kind = os.fstat(fd).st_mode
            finally:
                os.close(fd)
            if not (st.S_ISREG(kind) or st.S_ISDIR(kind)):
                return {}
            fd = self.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError:
            return {}
        try:
            return {name[len(XATTR_PREFIX):]: os.getxattr(fd, name).decode(errors="replace")
                    for name in os.listxattr(fd) if name.startswith(XATTR_PREFIX)}
        except OSError:
            return {}
        finally:
            os.close(fd)

    def write_from(self, path: str, source_fd: int, metadata: dict[str, str] | None = None) -> None:
        """Create or replace the file at `path` with the content of `source_fd`, creating its parents;
        its metadata becomes `metadata` (an overwrite without any clears the old)."""
        parent, _ = split(path)
        self.makedirs(parent)
        flags = os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK
        try:
            fd = self.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            created = True
        except FileExistsError:
            fd = self.open(path, flags | os.O_TRUNC)
            created = False
        try:
            if not st.S_ISREG(os.fstat(fd).st_mode):
                raise NotRegularFile(path)
            if created:
                # envd sets a new file's mode explicitly: watchers see create, chmod, write.
                os.fchmod(fd, 0o644)
            os.lseek(source_fd, 0, os.SEEK_SET)
            while os.sendfile(fd, source_fd, None, COPY_CHUNK):
                pass
            for name in os.listxattr(fd):
                if name.startswith(XATTR_PREFIX):
                    os.removexattr(fd, name)
            for key, value in (metadata or {}).items():
                os.setxattr(fd, XATTR_PREFIX + key, value.encode())
        finally:
            os.close(fd)

    def scandir(self, path: str) -> list[str]:
        fd = self.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def remove(self, path: str) -> None:
        fd, name = self.parent(path)
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if st.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=fd)  # descriptor-based: never follows a symlink out
            else:
                os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    def rename(self, source: str, destination: str) -> None:
        self.makedirs(split(destination)[0])
        source_fd, source_name = self.parent(source)
        try:
            destination_fd, destination_name = self.parent(destination)
            try:
                os.rename(source_name, destination_name, src_dir_fd=source_fd, dst_dir_fd=destination_fd)
            finally:
                os.close(destination_fd)
        finally:
            os.close(source_fd)


class NotRegularFile(OSError):
    def __init__(self, path: str) -> None:
        super().__init__(errno.EINVAL, "not a regular file", path)
