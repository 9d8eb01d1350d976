"""The sandbox boundary: one bubblewrap "init" per sandbox, which every command joins.

A sandbox's init is created on its first use: `sandbox-exec --map` (sandbox_exec.c) makes a user
namespace whose uids 0..65535 are host uids BASE..BASE+65535 and execs bubblewrap as its root;
bubblewrap builds the rest (mount namespace with the host read-only and the private and hidden
paths, pid namespace with its own /proc, ipc, uts, cgroup namespaces, all capabilities dropped)
and runs `sleep infinity` under its pid-1 reaper. The server keeps the init's namespaces open as
descriptors, and every command is spawned as `sandbox-exec --ns ...` which joins them, forks into
the pid namespace and becomes `user` (or root) with no_new_privs. So commands of one sandbox share
one process tree that later calls list and signal, and nothing is rebuilt per command.

Killing the init (its pid 1) makes the kernel kill everything in the pid namespace, however a
process tried to leave (setsid, double fork, another cgroup): that is how a sandbox is killed. The
init dies with the server (bubblewrap's --die-with-parent), and the next server makes a new one on
the sandbox's next use: files persist on disk, processes do not.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import posixpath
import pwd
import re
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("e2b_local")

HOME = "/home/user"
ID_COUNT = 65536
# The users a command may run as (the SDK's `user=`), by sandbox uid, and their homes.
USERS = {"root": (0, "/root"), "user": (1000, HOME)}
DEFAULT_USER = "user"
NAMESPACES = ("user", "ipc", "uts", "cgroup", "pid", "mnt")  # joined in this order: user first
EXEC_HELPER_SOURCE = Path(__file__).with_name("sandbox_exec.c")
INIT_START_SECONDS = 10


class BoundaryError(RuntimeError):
    pass


def build_exec_helper(directory: Path) -> Path:
    """Compile sandbox_exec.c (once per version of it) into `directory`."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise BoundaryError("e2b-local needs a C compiler (gcc) and static glibc (libc6-dev) for its "
                            "sandbox-exec helper")
    source = EXEC_HELPER_SOURCE.read_bytes()
    helper = directory / f"sandbox-exec-{hashlib.sha256(source).hexdigest()[:12]}"
    if helper.exists():
        return helper
    building = directory / f"{helper.name}.{os.getpid()}.partial"
    built = subprocess.run([compiler, "-O2", "-static", "-o", str(building), str(EXEC_HELPER_SOURCE)],
                           capture_output=True, timeout=120)
    if built.returncode != 0:
        building.unlink(missing_ok=True)
        raise BoundaryError(f"cannot compile {EXEC_HELPER_SOURCE.name}: {built.stderr.decode(errors='replace')}")
    building.rename(helper)
    return helper


def find_bwrap() -> str:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise BoundaryError("e2b-local needs bubblewrap (`apt-get install bubblewrap`): it builds every "
                            "sandbox's namespaces")
    return bwrap


def hidden_paths(state_dir: Path, extra: tuple[str, ...]) -> list[str]:
    """Host paths that must not be visible in any sandbox: the server's state (tokens, every
    sandbox's files), the homes and state dirs of the users of this machine (kubeconfigs, ssh keys,
    tokens), runtime sockets. /home, /root and /tmp are replaced by the sandbox's own anyway."""
    home = Path(os.path.expanduser("~"))
    candidates = [state_dir, home, "/run", "/var/tmp", "/var/run",
                  os.environ.get("XDG_STATE_HOME"), os.environ.get("XDG_CONFIG_HOME"),
                  os.environ.get("XDG_CACHE_HOME"), os.environ.get("XDG_RUNTIME_DIR"),
                  os.environ.get("KUBECONFIG", "").split(":")[0] or None, *extra]
    replaced = ("/home", "/root", "/tmp", "/proc", "/dev")
    hidden = []
    for candidate in candidates:
        if not candidate:
            continue
        path = os.path.realpath(candidate)
        if path == "/" or any(path == r or path.startswith(r + "/") for r in replaced):
            continue
        if os.path.isdir(path) and not os.path.islink(path) and path not in hidden:
            hidden.append(path)
        elif os.path.isfile(path):
            hidden.append(path)
    return sorted(hidden, key=len)


def write_identity_files(directory: Path) -> tuple[Path, Path]:
    """/etc/passwd and /etc/group as a sandbox sees them: E2B's `user` (1000) and root, plus the
    host's system accounts so that tools resolving them keep working."""
    passwd = ["root:x:0:0:root:/root:/bin/bash", f"user:x:1000:1000::{HOME}:/bin/bash"]
    group = ["root:x:0:", "user:x:1000:"]
    for entry in pwd.getpwall():
        if 0 < entry.pw_uid < 1000:
            passwd.append(f"{entry.pw_name}:x:{entry.pw_uid}:{entry.pw_gid}::{entry.pw_dir}:/usr/sbin/nologin")
    passwd.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
    group.append("nogroup:x:65534:")
    paths = directory / "passwd", directory / "group"
    for path, lines in zip(paths, (passwd, group)):
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o644)
    return paths


# Every command's PATH unless the template, the sandbox or the command sets one (E2B's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def write_profile(directory: Path) -> Path:
    """/etc/profile as a sandbox sees it: the host's, keeping the PATH a command was started with.
    Debian's resets PATH for every login shell (commands run as `bash -l -c`), so a template's or
    a sandbox's PATH would be lost; E2B's Ubuntu-based images leave PATH alone."""
    try:
        host = Path("/etc/profile").read_text()
    except OSError:
        host = ""
    path = directory / "profile"
    path.write_text('__e2b_path="${PATH-}"\n' + host +
                    '\nif [ -n "$__e2b_path" ]; then PATH="$__e2b_path"; export PATH; fi\nunset __e2b_path\n')
    path.chmod(0o644)
    return path


@dataclass(frozen=True)
class BoundaryConfig:
    """What every sandbox of one server shares."""
    helper: Path
    bwrap: str
    uid_base: int
    hidden: tuple[str, ...]
    passwd: Path
    group: Path
    profile: Path | None = None

    def host_uid(self, sandbox_uid: int) -> int:
        return self.uid_base + sandbox_uid

    def sandbox_uid(self, host_uid: int) -> int | None:
        inside = host_uid - self.uid_base
        return inside if 0 <= inside < ID_COUNT else None


# The trees a sandbox writes in directories of its own; everything else is the host's, read-only
# (or, with its own `rootfs`, the host's under the sandbox's writes). A template's layer is these
# trees and its rootfs as its build left them.
WRITABLE = ("home", "root", "tmp")
ROOTFS = "rootfs"


class SandboxFiles:
    """The on-disk directories of one sandbox: its /home (holding user/), /root and /tmp.

    With `rootfs` (template builds and their sandboxes), its `/` is an overlay of the host's `/`
    (read-only, as ever) under `rootfs/`, owned by the sandbox's root: it may add what the host's
    `/` lacks (`/app`), never change the host's files. With a template `layer`, each tree is an
    overlay too: the layer's (read-only, shared by every sandbox of the template) under the
    sandbox's own directory, which takes every write."""

    def __init__(self, root: Path, layer: Path | None = None, rootfs: bool = False) -> None:
        self.root = root
        self.layer = layer
        self.rootfs = (rootfs or layer is not None) and OWN_ROOTFS

    def create(self, config: BoundaryConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        trees = [("home", None, 0o755), ("root", 0, 0o700), ("tmp", 0, 0o1777)]
        if self.layer is None:
            trees.append(("home/user", 1000, 0o755))
        else:  # home/user comes from the layer; overlayfs needs a work dir per overlay
            trees += [("work", None, 0o700), *((f"work/{name}", None, 0o700) for name in WRITABLE)]
        if self.rootfs:
            trees += [(ROOTFS, 0, 0o755), ("work", None, 0o700), (f"work/{ROOTFS}", None, 0o700),
                      *([("work/layer", None, 0o700)] if self.layer is not None else [])]
        for sub, owner, mode in trees:
            path = self.root / sub
            path.mkdir(exist_ok=True)
            if owner is not None:
                os.chown(path, config.host_uid(owner), config.host_uid(owner))
            path.chmod(mode)

    def destroy(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def resolve_user(name: str | None) -> tuple[str, int, str]:
    """(name, sandbox uid, home) of the user a call runs as; the SDK's default is `user`."""
    name = name or DEFAULT_USER
    if name not in USERS:
        raise KeyError(name)
    uid, home = USERS[name]
    return name, uid, home


class SandboxInit:
    """One sandbox's bubblewrap init and the descriptors of its namespaces and root."""

    def __init__(self, config: BoundaryConfig, files: SandboxFiles, cgroup_procs: list[str],
                 hostname: str) -> None:
        self.config = config
        self.files = files
        self.cgroup_procs = cgroup_procs
        self.hostname = hostname
        self.process: asyncio.subprocess.Process | None = None
        self.pid: int | None = None  # host pid of the sandbox's pid 1
        self.ns_fds: list[int] = []
        self.root_fd: int | None = None
        self._opening = asyncio.Lock()  # two first calls at once start one init
        self._watch: asyncio.Task | None = None
        self.stopped = False  # the sandbox is gone: no init may start (or survive starting) any more

    def _stages(self) -> list[str]:
        """The sandbox's own directories and identity files, which sandbox-exec bind-mounts on
        /tmp/NAME before bubblewrap starts: bubblewrap runs as the sandbox's root (an
        unprivileged host uid), which may not traverse the 0700 state dir they live in."""
        root = self.files.root
        stages = [f"{name}={root / name}" for name in WRITABLE] if self.files.layer is None else []
        stages += [f"passwd={self.config.passwd}", f"group={self.config.group}"]
        return stages + ([f"profile={self.config.profile}"] if self.config.profile else [])

    def _overlays(self) -> list[str]:
        """The overlays sandbox-exec mounts on /tmp/NAME (as host root, before the user namespace):
        a template layer's trees under the sandbox's own directories, and its own `/` over the
        host's (and the layer's rootfs)."""
        root, layer = self.files.root, self.files.layer
        if any(":" in str(path) or "," in str(path) or "+" in str(path) for path in (root, layer) if path):
            raise BoundaryError(f"a state dir path with ':', ',' or '+' cannot hold template sandboxes: {root}")
        overlays = []
        if layer is not None:
            overlays += [f"{name}={layer / name}:{root / name}:{root / 'work' / name}" for name in WRITABLE]
        if self.files.rootfs and layer is not None and (layer / ROOTFS).is_dir():
            # overlayfs refuses a lower layer below another (the layer's rootfs is below the host's
            # `/`), so the layer's rootfs is first an overlay of its own, read-only, over `/`.
            overlays.append(f"ro:layer-{ROOTFS}=/:{layer / ROOTFS}:{root / 'work' / 'layer'}")
            overlays.append(f"{ROOTFS}=@layer-{ROOTFS}:{root / ROOTFS}:{root / 'work' / ROOTFS}")
        elif self.files.rootfs:
            overlays.append(f"{ROOTFS}=/:{root / ROOTFS}:{root / 'work' / ROOTFS}")
        return overlays

    def _bwrap_args(self) -> list[str]:
        if self.files.rootfs:  # the overlay holds the host's root filesystem only: its submounts again
            args = ["--bind", f"/tmp/{ROOTFS}", "/", *(a for m in host_submounts() for a in ("--ro-bind", m, m))]
        else:
            args = ["--ro-bind", "/", "/"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        for path in self.config.hidden:
            args += ["--tmpfs", path] if os.path.isdir(path) else ["--ro-bind", "/dev/null", path]
        # /tmp last: it covers the staged directories.
        args += ["--bind", "/tmp/home", "/home", "--bind", "/tmp/root", "/root",
                 "--ro-bind", "/tmp/passwd", "/etc/passwd", "--ro-bind", "/tmp/group", "/etc/group",
                 *(["--ro-bind", "/tmp/profile", "/etc/profile"] if self.config.profile else []),
                 "--bind", "/tmp/tmp", "/tmp",
                 "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                 "--hostname", "e2b", "--die-with-parent", "--cap-drop", "ALL", "--chdir", "/"]
        return args

    async def ensure(self) -> None:
        async with self._opening:
            if self.stopped:
                raise BoundaryError(f"sandbox {self.hostname} is gone")
            if self.root_fd is None:
                await self._start()
            if self.stopped:
                # Killed while this init was starting: stop() found nothing to stop.
                self.stop_now()
                raise BoundaryError(f"sandbox {self.hostname} is gone")

    async def _start(self) -> None:
        info_read, info_write = os.pipe()
        # Each init is a boot of the sandbox: its own boot id, as a cold-booted VM would have
        # (E2B's filesystem-only pause resumes by booting again, and its SDK tests look at it).
        boot_read, boot_write = os.pipe()
        os.write(boot_write, f"{uuid.uuid4()}\n".encode())
        os.close(boot_write)
        argv = [str(self.config.helper), *[a for p in self.cgroup_procs for a in ("--cgroup", p)],
                *[a for stage in self._stages() for a in ("--stage", stage)],
                *[a for overlay in self._overlays()
                  for a in (("--ro-overlay", overlay[3:]) if overlay.startswith("ro:") else ("--overlay", overlay))],
                "--map", f"{self.config.uid_base}:{ID_COUNT}", "--",
                self.config.bwrap, *self._bwrap_args(),
                "--perms", "0444", "--ro-bind-data", str(boot_read), "/proc/sys/kernel/random/boot_id", "--info-fd", str(info_write),
                # The echo says the sandbox is complete (bwrap's pid 1 has pivoted into it).
                "--", "/bin/sh", "-c", "echo ready; exec sleep infinity"]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=(info_write, boot_read), start_new_session=True)
        finally:
            os.close(info_write)
            os.close(boot_read)
        try:
            ready = await asyncio.wait_for(process.stdout.readline(), INIT_START_SECONDS)
            info = await asyncio.to_thread(_read_all, info_read)
            if ready != b"ready\n":
                raise BoundaryError(
                    f"the sandbox's init failed: {(await process.stderr.read()).decode(errors='replace').strip()}")
            pid = json.loads(info)["child-pid"]
            ns_fds = [os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in NAMESPACES]
            root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except BaseException:
            _kill(process.pid)
            await process.wait()
            raise
        finally:
            os.close(info_read)
        self.process, self.pid, self.ns_fds, self.root_fd = process, pid, ns_fds, root_fd
        self._watch = asyncio.get_running_loop().create_task(self._watch_exit(process))

    async def _watch_exit(self, process: asyncio.subprocess.Process) -> None:
        """An init that ends (root inside killed it, or OOM) takes its processes with it; the next
        call starts a new one."""
        stderr = await process.stderr.read()
        code = await process.wait()
        if self.process is process:
            log.warning("sandbox %s: its init ended (%s)%s; the next call starts a new one", self.hostname,
                        code, f": {stderr.decode(errors='replace').strip()}" if stderr.strip() else "")
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in [*self.ns_fds, *([self.root_fd] if self.root_fd is not None else [])]:
            os.close(fd)
        self.ns_fds, self.root_fd, self.process, self.pid = [], None, None, None

    def has_pid(self, pid: int) -> bool:
        """Whether `pid` exists in the sandbox (zombies included), seen through its own /proc."""
        if self.root_fd is None:
            return False
        try:
            os.close(os.open(f"proc/{pid}", os.O_PATH | os.O_CLOEXEC, dir_fd=self.root_fd))
        except OSError:
            return False
        return True

    def enter_argv(self, argv: list[str], uid: int, cwd: str, report_fd: int) -> tuple[list[str], tuple[int, ...]]:
        """What to spawn (and which descriptors it inherits) to run `argv` in this sandbox."""
        helper = [str(self.config.helper), *[a for p in self.cgroup_procs for a in ("--cgroup", p)]]
        for fd in self.ns_fds:
            helper += ["--ns", str(fd)]
        helper += ["--user", f"{uid}:{uid}", "--cwd", cwd, "--report", str(report_fd)]
        if uid == 0:
            helper.append("--keep-caps")
        return [*helper, "--", *argv], (*self.ns_fds, report_fd)

    async def stop(self) -> None:
        """Kill the sandbox: its pid 1 (the kernel then kills the whole pid namespace) and bwrap."""
        self.stopped = True
        process, pid = self.process, self.pid
        if process is None:
            return
        self.process = None
        if pid is not None:
            _kill(pid)
        _kill(process.pid)
        await process.wait()
        self._close_fds()
        if self._watch is not None:
            self._watch.cancel()

    def stop_now(self) -> None:
        """Server exit: no waiting (bwrap's --die-with-parent finishes the job if we are gone first)."""
        self.stopped = True
        if self.process is not None:
            if self.pid is not None:
                _kill(self.pid)
            _kill(self.process.pid)
            self._close_fds()


def _root_fstype() -> str:
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if fields[4] == "/":
                return fields[fields.index("-") + 1]
    return ""


# A sandbox's own `/` stacks two overlays on the host's (see SandboxInit._overlays): where `/` is
# an overlay already (a container's), that passes the kernel's stacking limit, so there sandboxes
# write /home, /root and /tmp only.
OWN_ROOTFS = _root_fstype() != "overlay"


def host_submounts() -> list[str]:
    """The host's top-level mounts below `/` (/sys, bind mounts a container runtime made), which an
    overlay of `/` does not carry; bubblewrap binds them recursively. /proc, /dev, /home, /root and
    /tmp are the sandbox's own."""
    own = ("/proc", "/dev", "/home", "/root", "/tmp")
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point != "/" and not any(point == o or point.startswith(o + "/") for o in own):
                points.append(point)
    top = []
    for point in sorted(set(points), key=len):
        if not any(point.startswith(parent + "/") for parent in top) and os.path.exists(point):
            top.append(point)
    return top


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def sandbox_path(path: str, home: str) -> str:
    """A path as the sandbox's envd reads it: relative ones are relative to the user's home."""
    return posixpath.normpath(posixpath.join(home, path))
