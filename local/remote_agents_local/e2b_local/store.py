"""Sandbox records and their persistence as one JSON file in the state dir.

Only metadata lives here (what the control plane reports); processes are runtime-only. The file
holds every access token and env value: 0600 in a 0700 dir, replaced atomically (write, fsync,
rename, fsync the dir) so a crash leaves the old or the new file, never half of one."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

RUNNING = "running"
PAUSED = "paused"
log = logging.getLogger("e2b_local")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class SandboxRecord:
    sandbox_id: str
    template_id: str
    state: str
    started_at: float
    end_at: float
    access_token: str
    auto_pause: bool = False
    auto_pause_memory: bool = True  # False: the timeout's pause is filesystem-only (processes end)
    metadata: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    # Of a sandbox created from a built template (templates.py): what it starts from.
    template_alias: str = ""
    layer: str = ""  # the build's layer dir, under the sandbox's own writes
    template_env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""  # default cwd of commands (the template's WORKDIR)
    default_user: str = ""  # the template's last USER; "" = `user`
    cpu_count: int = 0  # 0: the server's defaults
    memory_mb: int = 0


_FIELDS = {f.name for f in fields(SandboxRecord)}


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace `path` (mode 0600) with `data`, durable once this returns."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# What reading a damaged or foreign state file raises.
UNREADABLE = (OSError, ValueError, TypeError, KeyError, AttributeError)


def set_aside(path: Path, error: Exception, what: str) -> None:
    """A server that cannot start is worse than one that starts empty: the unreadable file is
    renamed (kept for whoever wants to look) and the server starts with no `what`."""
    aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, aside)
    log.error("state file %s is unreadable (%s: %s): set aside as %s; starting with no %s",
              path, type(error).__name__, error, aside, what)


class Store:
    """Records by sandbox id plus the idempotency-key index, rewritten atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.idempotency: dict[str, str] = {}
        if path.exists():
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_bytes())
            sandboxes = {k: SandboxRecord(**{f: v for f, v in record.items() if f in _FIELDS})
                         for k, record in data["sandboxes"].items()}
            idempotency = {str(k): str(v) for k, v in dict(data.get("idempotency", {})).items()}
        except UNREADABLE as error:
            set_aside(self.path, error, "sandboxes")
            return
        self.sandboxes, self.idempotency = sandboxes, idempotency

    def save(self) -> None:
        # Drop keys whose sandbox is gone so the index does not grow forever.
        self.idempotency = {k: v for k, v in self.idempotency.items() if v in self.sandboxes}
        data = {
            "sandboxes": {k: asdict(v) for k, v in self.sandboxes.items()},
            "idempotency": self.idempotency,
        }
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True).encode())
