"""The SaaS stand-ins the agents of Dexter's shape talk to, each as a real server process on a free
port: the scripted OpenAI-compatible LLM (remote_agents_local.llm_standin) and the market-data API
(remote_agents_local.market_data)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from remote_agents_local import processes

SAMPLES = Path(__file__).resolve().parents[2] / "local" / "remote_agents_local" / "samples"
DEMO_SCRIPT = SAMPLES / "research_demo_script.yaml"


@dataclass
class Server:
    url: str
    pid: int

    def get(self, path: str):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return json.load(response)


@dataclass
class LlmStandin(Server):
    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def requests(self) -> list[dict]:
        """What it was asked and how it replied, in order."""
        return self.get("/_standin/requests")

    def forget(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/_standin/requests", method="DELETE"), timeout=10)


@contextmanager
def _serve(module: str, args: list[str], probe: str, log: Path) -> Iterator[tuple[str, int]]:
    port = processes.free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *args],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}{probe}", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{module} did not start; its log:\n{processes.log_tail(log)}") from None
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def llm_standin(log_dir: Path, script: Path = DEMO_SCRIPT) -> Iterator[LlmStandin]:
    with _serve("remote_agents_local.llm_standin", ["--script", str(script)], "/health",
                log_dir / "llm-standin.log") as (url, pid):
        yield LlmStandin(url, pid)


@contextmanager
def market_data(log_dir: Path) -> Iterator[Server]:
    with _serve("remote_agents_local.market_data", [], "/_requests", log_dir / "market-data.log") as (url, pid):
        yield Server(url, pid)
