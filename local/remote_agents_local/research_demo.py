"""The research-demo agent in `remote-agents up`: the checkout's agents/ directory served as a git
repository, the two SaaS stand-ins it talks to (the scripted LLM and the market data), and its
RemoteAgent, which installs Bun from npm and its locked dependencies in setup."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from remote_agents_local import bun, processes

NAME = "research-demo"
# agents/ sits beside local/ in a checkout (the local extra is installed from one: pip install -e ./local).
AGENTS_DIR = Path(__file__).resolve().parents[2] / "agents"
BUN = "$HOME/.bun/node_modules/.bin/bun"


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


def node_ca_env() -> dict[str, str]:
    """The host's extra CA bundle for Node (NODE_EXTRA_CA_CERTS, e.g. a TLS-inspecting proxy's), when it
    has one: e2b-local's sandboxes share the host's network but start with a clean environment, and npm
    and bun in them must trust the registry as the host does."""
    path = os.environ.get("NODE_EXTRA_CA_CERTS")
    return {"NODE_EXTRA_CA_CERTS": path} if path else {}


def manifest(namespace: str, repo_url: str, llm_url: str, market_url: str) -> str:
    env = {"OPENAI_API_KEY": "sk-standin", "OPENAI_BASE_URL": f"{llm_url}/v1", "MARKET_DATA_URL": market_url,
           **node_ca_env()}
    return json.dumps({
        "apiVersion": "remoteagents.io/v1alpha1", "kind": "RemoteAgent",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {"source": {"repo": repo_url, "ref": "main", "path": f"agents/{NAME}"},
                 "setup": [f"npm install --no-audit --no-fund --prefix $HOME/.bun bun@{bun.BUN_VERSION}",
                           f"{BUN} install --frozen-lockfile --ignore-scripts"],
                 "query": {"command": f"{BUN} run src/query.ts", "timeoutSeconds": 120},
                 "env": [{"name": name, "value": value} for name, value in env.items()]},
    })
