"""Giving each sandbox its own /home/user and /tmp.

Preferred: every command runs in a private mount namespace (`unshare --mount`) where the
sandbox's directories are bind-mounted over /home and /tmp, so `echo hi > /home/user/x`
writes into that sandbox only and no sandbox sees another's files. When the machine does not
allow mount namespaces, the fallback maps paths instead: the files API rewrites them and
commands get HOME and cwd inside the sandbox directory (absolute /home/user paths inside a
command line then point at the host's, which is documented in docs/e2b-local.md).
"""

from __future__ import annotations

import posixpath
import shutil
import subprocess
from pathlib import Path

HOME = "/home/user"
# Sandbox paths that live in the sandbox's own directory; everything else is the host's.
PRIVATE_ROOTS = (HOME, "/tmp")

# Runs as root inside the new mount namespace, then becomes the user's command.
# $1 = sandbox dir, $2 = cwd, rest = argv.
_MOUNT_SCRIPT = """
set -e
mount --bind "$1/home" /home
mount --bind "$1/tmp" /tmp
cd "$2"
shift 2
exec "$@"
"""


def mount_namespaces_available() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None or not Path("/home").is_dir():
        return False
    probe = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs probe /home"],
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


class CommandWrapper:
    """Turns a command's argv/cwd/HOME into what runs on the host for one isolation mode."""

    def __init__(self, namespaces: bool) -> None:
        self.namespaces = namespaces
        self.unshare = shutil.which("unshare")

    @property
    def mode(self) -> str:
        return "mount-namespace" if self.namespaces else "path-mapping"

    def wrap(self, files: SandboxFiles, argv: list[str], cwd: str | None) -> tuple[list[str], str, str]:
        """Returns (argv, host cwd, HOME) for the process to spawn."""
        cwd = posixpath.normpath(posixpath.join(HOME, cwd or HOME))
        if self.namespaces:
            argv = [self.unshare, "--mount", "--propagation", "private", "sh", "-c", _MOUNT_SCRIPT,
                    "e2b-sandbox", str(files.root), cwd, *argv]
            return argv, str(files.root), HOME
        return argv, str(files.to_host(cwd)), str(files.to_host(HOME))
