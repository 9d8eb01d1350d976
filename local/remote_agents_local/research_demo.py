"""The research-demo agent in `remote-agents up`: the checkout's agents/ directory served as a git
repository, the two SaaS stand-ins it talks to (the scripted LLM and the market data), and its
E2BTemplate (agents/research-demo/template.yaml, which bakes Bun and its locked dependencies in) and
its RemoteAgent on that template."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import yaml

from remote_agents_local import processes

NAME = "research-demo"
# agents/ sits beside local/ in a checkout (the local extra is installed from one: pip install -e ./local).
AGENTS_DIR = Path(__file__).resolve().parents[2] / "agents"
BUN = "/home/user/.bun/bin/bun"  # where template.yaml installs it


def available() -> bool:
    return (AGENTS_DIR / NAME / "bun.lock").is_file()


def repository(root: Path) -> Path:
    """A bare repository whose one commit on main is the checkout's agents/ (without node_modules)."""
    bare = root / "git" / f"{NAME}.git"
    if bare.exists():
        return bare
    work = root / "git" / f"{NAME}-work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(AGENTS_DIR, work / "agents", ignore=shutil.ignore_patterns("node_modules"))
    git = ["git", "-C", str(work), "-c", "user.name=remote-agents", "-c", "user.email=up@remote-agents.local"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "agents"]):
        subprocess.run(git + args, check=True, capture_output=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, capture_output=True)
    return bare


def start_standins(root: Path) -> tuple[dict[str, int], str, str]:
    """Both stand-ins in the background: their pids, the LLM's base URL and the market data's URL."""
    llm_port, market_port = processes.free_port(), processes.free_port()
    script = resources.files("remote_agents_local.samples") / "research_demo_script.yaml"
    pids = {
        "llm-standin": processes.start_detached(
            [sys.executable, "-m", "remote_agents_local.llm_standin", "--script", str(script), "--port", str(llm_port)],
            root / "llm-standin.log"),
        "market-data": processes.start_detached(
            [sys.executable, "-m", "remote_agents_local.market_data", "--port", str(market_port)],
            root / "market-data.log"),
    }
    return pids, f"http://127.0.0.1:{llm_port}", f"http://127.0.0.1:{market_port}"


def files_configmap(namespace: str) -> dict:
    """The ConfigMap template.yaml copies the agent's files from (the `kubectl create configmap` at its
    head: every file of these folders under its base name)."""
    folders = (AGENTS_DIR / NAME, AGENTS_DIR / NAME / "src", AGENTS_DIR / "harness")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME, "namespace": namespace},
            "data": {path.name: path.read_text() for folder in folders for path in sorted(folder.iterdir())
                     if path.is_file()}}


def template(namespace: str) -> dict:
    """The committed E2BTemplate (agents/research-demo/template.yaml): Bun and node_modules baked in."""
    manifest = yaml.safe_load((AGENTS_DIR / NAME / "template.yaml").read_text())
    manifest["metadata"]["namespace"] = namespace
    return manifest


def manifest(namespace: str, repo_url: str, llm_url: str, market_url: str) -> str:
    """The template's files, the template, and the agent on it (Ready without an install of its own)."""
    env = {"OPENAI_API_KEY": "sk-standin", "OPENAI_BASE_URL": f"{llm_url}/v1", "MARKET_DATA_URL": market_url}
    agent = {
        "apiVersion": "remoteagents.io/v1alpha1", "kind": "RemoteAgent",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {"templateRef": {"name": NAME},
                 "source": {"repo": repo_url, "ref": "main", "path": f"agents/{NAME}"},
                 "query": {"command": f"{BUN} run src/query.ts", "timeoutSeconds": 120},
                 "env": [{"name": name, "value": value} for name, value in env.items()]},
    }
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [files_configmap(namespace), template(namespace), agent]})
