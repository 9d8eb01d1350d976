"""Giving each sandbox its own /home/user and /tmp.

Preferred: every command runs in the sandbox's private mount namespace, where its directories
are bind-mounted over /home and /tmp, so `echo hi > /home/user/x` writes into that sandbox only
and no sandbox sees another's files. The namespace is set up once per sandbox and kept by a
sleeping holder process, which every command enters (setting it up for every command cost four
more processes each: a task's run is a handful of processes). When the machine does not
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
from pathlib import Path

HOME = "/home/user"
# Sandbox paths that live in the sandbox's own directory; everything else is the host's.
PRIVATE_ROOTS = (HOME, "/tmp")

# The holder: runs as root in the new mount namespace, mounts the sandbox's directories, says
# so, then sleeps for as long as the sandbox exists. $1 = sandbox dir.
_HOLDER_SCRIPT = """
set -e
mount --bind "$1/home" /home
mount --bind "$1/tmp" /tmp
echo ready
exec sleep infinity
"""
_NAMESPACE_TOOLS = ("unshare", "nsenter", "setpriv")  # util-linux, all three
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
    """One sandbox's mount namespace, kept by its holder process (started on first use, and
    again if it died). The holder dies with the server (parent-death signal) or its sandbox."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._holder: subprocess.Popen | None = None
        self._starting = asyncio.Lock()  # two first commands at once start one holder

    async def holder_pid(self) -> int:
        async with self._starting:
            # poll() reaps a dead holder: until then its pid cannot be reused, so nsenter can
            # fail on a dead one but never enter someone else's namespace.
            if self._holder is None or self._holder.poll() is not None:
                self._holder = await self._start_holder()
            return self._holder.pid

    async def _start_holder(self) -> subprocess.Popen:
        # Spawned from the event loop's thread, which lives as long as the server: the
        # parent-death signal follows the thread that forked.
        holder = subprocess.Popen(
            [shutil.which("setpriv"), "--pdeathsig", "KILL", shutil.which("unshare"), "--mount", "--propagation",
             "private", "sh", "-c", _HOLDER_SCRIPT, "e2b-sandbox-ns", str(self.root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with holder.stdout, holder.stderr:
            if await asyncio.to_thread(holder.stdout.readline) == b"ready\n":
                return holder
            problem = (await asyncio.to_thread(holder.stderr.read)).decode(errors="replace").strip()
        await asyncio.to_thread(holder.wait)
        raise OSError(f"cannot set up the sandbox's mount namespace: {problem or holder.returncode}")

    def close(self) -> None:
        if self._holder is not None and self._holder.poll() is None:
            self._holder.kill()
            self._holder.wait()


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
                   cgroup_procs: str | None) -> tuple[list[str], str, str]:
        """Returns (argv, host cwd, HOME) for the process to spawn. `cgroup_procs`: the cgroup the
        command joins before it execs, so that nothing it forks escapes the freezer (without a
        helper process, Python would have to fork this whole server for every command)."""
        cwd = posixpath.normpath(posixpath.join(HOME, cwd or HOME))
        namespace = ""
        if self.namespaces:
            namespace_of_sandbox = self._namespaces.get(files.root)
            if namespace_of_sandbox is None:
                namespace_of_sandbox = self._namespaces[files.root] = MountNamespace(files.root)
            pid = await namespace_of_sandbox.holder_pid()
            namespace, spawn_cwd, home = f"/proc/{pid}/ns/mnt", str(files.root), HOME
        else:
            spawn_cwd = cwd = str(files.to_host(cwd))
            home = str(files.to_host(HOME))
        if self.exec_helper:
            return [str(self.exec_helper), cgroup_procs or "", namespace, cwd, *argv], spawn_cwd, home
        if namespace:
            # The working directory is looked up through the holder's root, i.e. in its namespace
            # (nsenter resolves --wd before it enters).
            argv = [self.nsenter, "-t", str(pid), "-m", f"--wd=/proc/{pid}/root{cwd}", *argv]
        if cgroup_procs:
            argv = ["/bin/sh", "-c", _JOIN_CGROUP, cgroup_procs, *argv]
        return argv, spawn_cwd, home

    def release(self, files: SandboxFiles) -> None:
        """The sandbox is gone (or the server stops): its namespace goes too."""
        namespace = self._namespaces.pop(files.root, None)
        if namespace is not None:
            namespace.close()
