"""Giving each sandbox its own /home/user and /tmp.

Preferred: every command runs in the sandbox's private mount namespace, where its directories
are bind-mounted over /home and /tmp, so `echo hi > /home/user/x` writes into that sandbox only
and no sandbox sees another's files. The namespace is set up once per sandbox and kept open by
the server as a file descriptor, which every command inherits and enters (setting it up for every
command cost four more processes each: a task's run is a handful of processes). Because each
command holds the namespace itself from its spawn on, it never depends on the server staying up
while it enters. When the machine does not
allow mount namespaces, the fallback maps paths instead: the files API rewrites them and
commands get HOME and cwd inside the sandbox directory (absolute /home/user paths inside a
command line then point at the host's, which is documented in docs/e2b-local.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOME = "/home/user"
# Sandbox paths that live in the sandbox's own directory; everything else is the host's.
PRIVATE_ROOTS = (HOME, "/tmp")

# Runs as root in the new mount namespace: mounts the sandbox's directories, says so, and stays
# until the server has opened the namespace (it closes our stdin; so does its death). $1 = sandbox dir.
_SETUP_SCRIPT = """
set -e
mount --bind "$1/home" /home
mount --bind "$1/tmp" /tmp
echo ready
read -r _ || true
"""
_NAMESPACE_TOOLS = ("unshare", "nsenter")  # util-linux
# Joining the cgroup and entering the namespace without the helper: a shell, then nsenter.
_JOIN_CGROUP = 'echo $$ > "$0" && exec "$@"'
EXEC_HELPER_SOURCE = Path(__file__).with_name("sandbox_exec.c")


def build_exec_helper(directory: Path) -> Path | None:
    """Compile sandbox_exec.c (once per version of it) into `directory`: the one small exec that
    puts a command into its sandbox. None when there is no C compiler or it fails: commands then
    go through a shell and nsenter, two execs more."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = EXEC_HELPER_SOURCE.read_bytes()
    helper = directory / f"sandbox-exec-{hashlib.sha256(source).hexdigest()[:12]}"
    if helper.exists():
        return helper
    building = directory / f"{helper.name}.{os.getpid()}.partial"
    built = subprocess.run([compiler, "-O2", "-static", "-o", str(building), str(EXEC_HELPER_SOURCE)],
                           capture_output=True, timeout=120)
    if built.returncode != 0:
        building.unlink(missing_ok=True)
        return None
    building.rename(helper)
    return helper


def mount_namespaces_available() -> bool:
    if not all(shutil.which(tool) for tool in _NAMESPACE_TOOLS) or not Path("/home").is_dir():
        return False
    probe = subprocess.run(
        [shutil.which("unshare"), "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs probe /home"],
        capture_output=True, timeout=10,
    )
    return probe.returncode == 0


class SandboxFiles:
    """The on-disk root of one sandbox and the mapping from its paths to host paths."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self) -> None:
        for sub in PRIVATE_ROOTS:
            (self.root / sub.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").chmod(0o1777)

    def destroy(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def to_host(self, path: str) -> Path:
        """A sandbox path (relative ones are relative to /home/user, as in envd) on the host."""
        full = posixpath.normpath(posixpath.join(HOME, path))
        for private in PRIVATE_ROOTS:
            if full == private or full.startswith(private + "/"):
                return self.root / full.lstrip("/")
        return Path(full)

    def to_sandbox(self, host: Path) -> str:
        try:
            return "/" + host.relative_to(self.root).as_posix()
        except ValueError:
            return host.as_posix()


class MountNamespace:
    """One sandbox's mount namespace, held open as a file descriptor from its first command until
    the sandbox is gone (a namespace lives while a process or a descriptor refers to it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fd: int | None = None
        self._opening = asyncio.Lock()  # two first commands at once set up one namespace

    async def fd(self) -> int:
        async with self._opening:
            if self._fd is None:
                self._fd = await self._set_up()
            return self._fd

    async def _set_up(self) -> int:
        setup = subprocess.Popen(
            [shutil.which("unshare"), "--mount", "--propagation", "private", "sh", "-c", _SETUP_SCRIPT,
             "e2b-sandbox-ns", str(self.root)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with setup.stdin, setup.stdout, setup.stderr:
                if await asyncio.to_thread(setup.stdout.readline) == b"ready\n":
                    return os.open(f"/proc/{setup.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
                problem = (await asyncio.to_thread(setup.stderr.read)).decode(errors="replace").strip()
        finally:
            await asyncio.to_thread(setup.wait)
        raise OSError(f"cannot set up the sandbox's mount namespace: {problem or setup.returncode}")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class Wrapped:
    """A command as it is spawned on the host."""

    argv: list[str]
    cwd: str
    home: str
    pass_fds: tuple[int, ...]


class CommandWrapper:
    """Turns a command's argv/cwd/HOME into what runs on the host for one isolation mode."""

    def __init__(self, namespaces: bool, exec_helper: Path | None = None) -> None:
        self.namespaces = namespaces
        self.exec_helper = exec_helper  # see build_exec_helper
        self.nsenter = shutil.which("nsenter")
        self._namespaces: dict[Path, MountNamespace] = {}  # sandbox root -> its namespace

    @property
    def mode(self) -> str:
        return "mount-namespace" if self.namespaces else "path-mapping"

    async def wrap(self, files: SandboxFiles, argv: list[str], cwd: str | None,
                   cgroup_procs: str | None) -> Wrapped:
        """What to spawn for the command. `cgroup_procs`: the cgroup the command joins before it
        execs, so that nothing it forks escapes the freezer (without a helper process, Python
        would have to fork this whole server for every command)."""
        cwd = posixpath.normpath(posixpath.join(HOME, cwd or HOME))
        if not self.namespaces:
            cwd = str(files.to_host(cwd))
            return self._wrapped(argv, cwd, cgroup_procs, namespace_fd=None, spawn_cwd=cwd,
                                 home=str(files.to_host(HOME)))
        namespace = self._namespaces.get(files.root)
        if namespace is None:
            namespace = self._namespaces[files.root] = MountNamespace(files.root)
        return self._wrapped(argv, cwd, cgroup_procs, namespace_fd=await namespace.fd(), spawn_cwd=str(files.root),
                             home=HOME)

    def _wrapped(self, argv: list[str], cwd: str, cgroup_procs: str | None, namespace_fd: int | None,
                 spawn_cwd: str, home: str) -> Wrapped:
        # The namespace's descriptor is passed to the process (same number): it enters from it.
        pass_fds = () if namespace_fd is None else (namespace_fd,)
        if self.exec_helper:
            namespace = "" if namespace_fd is None else str(namespace_fd)
            return Wrapped([str(self.exec_helper), cgroup_procs or "", namespace, cwd, *argv], spawn_cwd, home,
                           pass_fds)
        if namespace_fd is not None:
            # --wdns: the working directory as seen inside. The descriptor stays open in the
            # command here (nsenter does not close it); it lets it into no namespace but its own.
            argv = [self.nsenter, f"--mount=/proc/self/fd/{namespace_fd}", f"--wdns={cwd}", *argv]
        if cgroup_procs:
            argv = ["/bin/sh", "-c", _JOIN_CGROUP, cgroup_procs, *argv]
        return Wrapped(argv, spawn_cwd, home, pass_fds)

    def release(self, files: SandboxFiles) -> None:
        """The sandbox is gone (or the server stops): its namespace goes too."""
        namespace = self._namespaces.pop(files.root, None)
        if namespace is not None:
            namespace.close()
