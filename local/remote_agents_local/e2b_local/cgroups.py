"""Each sandbox's cgroups: freezing (pause), killing, and its pids and memory limits.

Where a controller lives depends on the machine: on a pure cgroup v2 host everything is in one
tree, but hybrid hosts (like the CI and dev machines here) have a v2 tree without controllers and
the pids/memory controllers only in v1 hierarchies. So each function is looked up separately:
freeze/kill from v2 when `cgroup.freeze` exists there, else the v1 freezer; pids and memory from
v2 when the v2 root offers the controller, else from their v1 hierarchy. Every sandbox process
(its init and every command) joins all of them before it runs anything of the sandbox's.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("e2b_local")


class CgroupError(RuntimeError):
    pass


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, options) of every cgroup mount."""
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[2] in ("cgroup", "cgroup2"):
            found.append((parts[1], parts[2], set(parts[3].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup per v1 controller ('' key: the v2 one)."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


@dataclass(frozen=True)
class Tree:
    """Where one function's per-server directory is: `base/<sandbox id>` per sandbox."""
    base: Path
    v2: bool


def _v2_tree(mount: str, controller: str, instance: str) -> Tree | None:
    """The v2 tree for `controller` if the v2 root offers it. Sandbox cgroups sit at the root:
    under our own v2 cgroup (which holds processes) no controller could be enabled."""
    root = Path(mount)
    try:
        if controller not in (root / "cgroup.controllers").read_text().split():
            return None
    except OSError:
        return None
    return Tree(root / f"e2b-local-{instance}", v2=True)


class SandboxCgroups:
    def __init__(self, instance: str, pids_max: int, memory_bytes: int) -> None:
        self.pids_max = pids_max
        self.memory_bytes = memory_bytes
        mounts = _mounts()
        own = _own_paths()
        v2_mount = next((m for m, kind, _ in mounts if kind == "cgroup2"), None)
        v1 = {c: m for m, kind, options in mounts if kind == "cgroup" for c in options
              if c in ("freezer", "pids", "memory")}

        def v1_tree(controller: str) -> Tree | None:
            if controller not in v1:
                return None
            # Below our own cgroup there: a limit set on us by whoever runs this server still holds.
            base = Path(v1[controller]) / own.get(controller, "/").lstrip("/") / f"e2b-local-{instance}"
            return Tree(base, v2=False)

        self.freezer = None
        if v2_mount and self._v2_freeze_works(Path(v2_mount) / f"e2b-local-{instance}"):
            self.freezer = Tree(Path(v2_mount) / f"e2b-local-{instance}", v2=True)
        else:
            self.freezer = v1_tree("freezer")
        self.pids = (v2_mount and _v2_tree(v2_mount, "pids", instance)) or v1_tree("pids")
        self.memory = (v2_mount and _v2_tree(v2_mount, "memory", instance)) or v1_tree("memory")
        self.trees = [t for t in {self.freezer, self.pids, self.memory} if t is not None]
        for tree in self.trees:
            tree.base.mkdir(exist_ok=True)
            if tree.v2 and tree in (self.pids, self.memory):
                self._enable_v2_controllers(tree)

    @staticmethod
    def _v2_freeze_works(base: Path) -> bool:
        try:
            base.mkdir(exist_ok=True)
            probe = base / "probe"
            probe.mkdir(exist_ok=True)
            ok = (probe / "cgroup.freeze").exists()
            probe.rmdir()
            return ok
        except OSError:
            return False

    def _enable_v2_controllers(self, tree: Tree) -> None:
        wanted = [c for c, t in (("pids", self.pids), ("memory", self.memory)) if t == tree]
        for directory in (tree.base.parent, tree.base):
            (directory / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))

    @property
    def mode(self) -> str:
        def where(tree: Tree | None) -> str:
            return "none" if tree is None else ("v2" if tree.v2 else "v1")
        return (f"freezer {where(self.freezer)}, pids.max={self.pids_max} ({where(self.pids)}), "
                f"memory.max={self.memory_bytes >> 20} MiB ({where(self.memory)})")

    def require_limits(self) -> None:
        missing = [name for name, tree in (("freezer", self.freezer), ("pids", self.pids), ("memory", self.memory))
                   if tree is None]
        if missing:
            raise CgroupError(f"no cgroup {', '.join(missing)} controller is available (neither v2 nor v1): "
                              f"sandboxes could not be paused or limited")

    def create(self, sandbox_id: str, memory_bytes: int | None = None) -> list[str]:
        """The sandbox's cgroups with their limits (memory: the server's unless its template sets
        one); returns the cgroup.procs files to join."""
        procs = []
        for tree in self.trees:
            path = tree.base / sandbox_id
            path.mkdir(exist_ok=True)
            if tree == self.pids:
                (path / "pids.max").write_text(str(self.pids_max))
            if tree == self.memory:
                (path / ("memory.max" if tree.v2 else "memory.limit_in_bytes")).write_text(str(memory_bytes or self.memory_bytes))
            procs.append(str(path / "cgroup.procs"))
        return procs

    def freeze(self, sandbox_id: str) -> None:
        self._set_frozen(sandbox_id, True)

    def thaw(self, sandbox_id: str) -> None:
        self._set_frozen(sandbox_id, False)

    def _set_frozen(self, sandbox_id: str, frozen: bool) -> None:
        if self.freezer is None:
            raise CgroupError("no cgroup freezer: pause is unavailable")
        path = self.freezer.base / sandbox_id
        if not path.exists():
            return
        if self.freezer.v2:
            (path / "cgroup.freeze").write_text("1" if frozen else "0")
        else:
            (path / "freezer.state").write_text("FROZEN" if frozen else "THAWED")

    def kill(self, sandbox_id: str) -> None:
        """SIGKILL everything in the sandbox's cgroups (frozen ones too)."""
        for tree in self.trees:
            path = tree.base / sandbox_id
            if not path.exists():
                continue
            if tree.v2 and (path / "cgroup.kill").exists():
                (path / "cgroup.kill").write_text("1")
                continue
            for _ in range(20):  # a fork between reading and killing adds a pid: read again
                pids = (path / "cgroup.procs").read_text().split()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if self.freezer is not None and (self.freezer.base / sandbox_id).exists():
            self._set_frozen(sandbox_id, False)  # v1: killed tasks of a frozen cgroup die once thawed

    def remove(self, sandbox_id: str) -> None:
        # rmdir succeeds only once the killed processes are reaped; they usually are within ms.
        for tree in self.trees:
            path = tree.base / sandbox_id
            for _ in range(100):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
            else:
                log.warning("cgroup %s still has processes; left in place", path)

    def reap_leftovers(self) -> None:
        """Kill what a previous server on this state dir left behind (e.g. after SIGKILL)."""
        names = {p.name for tree in self.trees for p in tree.base.iterdir() if p.is_dir()}
        for name in names:
            self.kill(name)
            self.remove(name)

    def release(self) -> None:
        """Server exit: drop the per-server cgroups and any sandbox cgroup a kill left behind."""
        for tree in self.trees:
            for path in [*tree.base.glob("*/"), tree.base]:
                try:
                    path.rmdir()
                except OSError:
                    pass
