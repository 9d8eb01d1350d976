"""Sandbox records and their persistence as one JSON file in the state dir.

Only metadata lives here (what the control plane reports); processes are runtime-only."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

RUNNING = "running"
PAUSED = "paused"


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
    metadata: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)


class Store:
    """Records by sandbox id plus the idempotency-key index, rewritten atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.idempotency: dict[str, str] = {}
        if path.exists():
            data = json.loads(path.read_text())
            self.sandboxes = {k: SandboxRecord(**v) for k, v in data.get("sandboxes", {}).items()}
            self.idempotency = dict(data.get("idempotency", {}))

    def save(self) -> None:
        # Drop keys whose sandbox is gone so the index does not grow forever.
        self.idempotency = {k: v for k, v in self.idempotency.items() if v in self.sandboxes}
        data = {
            "sandboxes": {k: asdict(v) for k, v in self.sandboxes.items()},
            "idempotency": self.idempotency,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
