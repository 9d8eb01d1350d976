"""The operator distribution (what the image installs) carries the operator alone: no local
pieces (e2b-local, the control-plane build, `up`), and none of their dependencies."""

from __future__ import annotations

import email
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCAL_ONLY_DEPENDENCIES = ("starlette", "uvicorn", "httptools", "cryptography", "pulumi")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    (found,) = out.glob("remote_agents-*.whl")
    return found


def test_the_operator_wheel_holds_the_operator_package_only(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"remote_agents"}
    assert "remote_agents/controller/main.py" in names
    assert not [n for n in names if "e2b_local" in n or "sandbox_exec" in n or n.startswith("remote_agents/cluster")]


def test_the_operator_wheel_requires_no_local_or_deploy_dependency(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        metadata_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(metadata_name))
    base = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert any(r.startswith("kopf") for r in base) and any(r.startswith("e2b") for r in base)
    assert not [r for r in base if r.lower().startswith(LOCAL_ONLY_DEPENDENCIES)]


def test_the_operator_starts_without_the_local_distribution_or_its_dependencies():
    """Imports the operator's entry points with every local-only module refused, as in the image."""
    refused = ("remote_agents_local",) + LOCAL_ONLY_DEPENDENCIES
    probe = f"""
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {refused!r}:
            raise ModuleNotFoundError(f"refused: {{name}}", name=name)
sys.meta_path.insert(0, Refuse())
import remote_agents.controller.main, remote_agents.controller.handlers, remote_agents.cli
from remote_agents.cli import main
sys.exit(main(["e2b-local"]))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT / "operator")
    assert result.returncode == 2, result.stderr
    assert "needs the local extra" in result.stderr and "pip install -e ./local" in result.stderr
