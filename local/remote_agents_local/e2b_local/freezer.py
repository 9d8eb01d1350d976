"""Freezing every process of a sandbox (pause) and killing them all (kill).

cgroup v2 when its hierarchy is writable: each sandbox gets a cgroup that every command
joins before it execs, so even daemons that leave their process group are frozen, and
`cgroup.freeze` stops them atomically. Otherwise SIGSTOP/SIGCONT/SIGKILL go to each
command's process group (a process that calls setsid escapes; documented).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _cgroup2_mount() -> Path | None:
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


def _signal_groups(pgids: list[int], sig: int) -> None:
    for pgid in pgids:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class SignalFreezer:
    mode = "signals"

    def join_path(self, sandbox_id: str) -> None:
        return None

    def freeze(self, sandbox_id: str, pgids: list[int]) -> None:
        _signal_groups(pgids, signal.SIGSTOP)

    def thaw(self, sandbox_id: str, pgids: list[int]) -> None:
        _signal_groups(pgids, signal.SIGCONT)

    def kill_all(self, sandbox_id: str, pgids: list[int]) -> None:
        _signal_groups(pgids, signal.SIGKILL)
        _signal_groups(pgids, signal.SIGCONT)

    def remove(self, sandbox_id: str) -> None:
        pass

    def reap_leftovers(self) -> None:
        pass  # untracked processes of a crashed server cannot be found without cgroups

    def release(self) -> None:
        pass


class CgroupFreezer:
    mode = "cgroup-v2"

    def __init__(self, base: Path) -> None:
        self.base = base

    def _dir(self, sandbox_id: str) -> Path:
        return self.base / sandbox_id

    def join_path(self, sandbox_id: str) -> str:
        """The cgroup.procs file a new command writes its pid to (created on first use)."""
        path = self._dir(sandbox_id)
        path.mkdir(exist_ok=True)
        return str(path / "cgroup.procs")

    def freeze(self, sandbox_id: str, pgids: list[int]) -> None:
        path = self._dir(sandbox_id)
        if path.exists():
            (path / "cgroup.freeze").write_text("1")

    def thaw(self, sandbox_id: str, pgids: list[int]) -> None:
        path = self._dir(sandbox_id)
        if path.exists():
            (path / "cgroup.freeze").write_text("0")

    def kill_all(self, sandbox_id: str, pgids: list[int]) -> None:
        path = self._dir(sandbox_id)
        if not path.exists():
            return
        kill_file = path / "cgroup.kill"
        if kill_file.exists():
            kill_file.write_text("1")  # works on frozen cgroups too
        else:
            for pid in (path / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            (path / "cgroup.freeze").write_text("0")

    def remove(self, sandbox_id: str) -> None:
        # rmdir succeeds only once the killed processes are reaped; they usually are within ms.
        path = self._dir(sandbox_id)
        for _ in range(50):
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)

    def reap_leftovers(self) -> None:
        """Kill what a previous server on this state dir left behind (e.g. after SIGKILL)."""
        for path in self.base.iterdir():
            if path.is_dir():
                self.kill_all(path.name, [])
                self.remove(path.name)

    def release(self) -> None:
        """Server exit: drop the per-server cgroup and any sandbox cgroup a kill left behind."""
        for path in [*self.base.glob("*/"), self.base]:
            try:
                path.rmdir()
            except OSError:
                pass


def make_freezer(instance: str) -> CgroupFreezer | SignalFreezer:
    """A cgroup freezer under `<cgroup2>/e2b-local-<instance>` if that works here, else signals."""
    mount = _cgroup2_mount()
    if mount is None:
        return SignalFreezer()
    base = mount / f"e2b-local-{instance}"
    try:
        base.mkdir(exist_ok=True)
        probe = base / "probe"
        probe.mkdir(exist_ok=True)
        ok = (probe / "cgroup.freeze").exists()
        probe.rmdir()
    except OSError:
        return SignalFreezer()
    return CgroupFreezer(base) if ok else SignalFreezer()
