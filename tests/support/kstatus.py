"""The kstatus library of sigs.k8s.io/cli-utils (what Flux and kpt read), as a tiny Go program
built from tests/support/kstatus/ with modules from the Go module proxy. The binary is cached
outside the repository, keyed by its sources, like the control-plane binaries."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parent / "kstatus"
CACHE = Path.home() / ".cache" / "remote-agents" / "kstatus"


class KstatusUnavailable(RuntimeError):
    pass


def binary() -> Path:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((SOURCE / name).read_bytes())
    built = CACHE / digest.hexdigest()[:16] / "kstatus"
    if built.is_file():
        return built
    if shutil.which("go") is None:
        raise KstatusUnavailable("Go is needed to build the kstatus checker (tests/support/kstatus)")
    built.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["go", "build", "-mod=readonly", "-o", str(built), "."], cwd=SOURCE,
                            capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        raise KstatusUnavailable(f"go build of tests/support/kstatus failed:\n{result.stderr}")
    return built


def compute(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Object name -> {"status": Current|InProgress|Failed|..., "message": ...} per kstatus."""
    result = subprocess.run([str(binary())], input=json.dumps(objects), capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"kstatus failed: {result.stderr}")
    return {verdict["name"]: {"status": verdict["status"], "message": verdict["message"]}
            for verdict in json.loads(result.stdout)}
