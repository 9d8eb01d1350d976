"""The agents of Dexter's shape against the SaaS stand-ins, all real processes on this machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from remote_agents_local import bun, research_demo
from tests.support import standins

DEMO_AGENT = research_demo.AGENTS_DIR / research_demo.NAME


@pytest.fixture(scope="session")
def llm(tmp_path_factory):
    with standins.llm_standin(tmp_path_factory.mktemp("llm")) as server:
        yield server


@pytest.fixture(scope="session")
def market(tmp_path_factory):
    with standins.market_data(tmp_path_factory.mktemp("market")) as server:
        yield server


@pytest.fixture(scope="session")
def bun_binary() -> Path:
    try:
        return bun.require()
    except bun.BunMissing as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def demo_agent(bun_binary) -> Path:
    """agents/research-demo with its locked dependencies installed (what its template bakes in)."""
    result = subprocess.run([str(bun_binary), "install", "--frozen-lockfile", "--ignore-scripts"], cwd=DEMO_AGENT,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"bun install --frozen-lockfile in {DEMO_AGENT} failed:\n{result.stderr}", pytrace=False)
    return DEMO_AGENT
