"""Every E2B operation slow (500 ms) and flaky (20% answered 503/429 with Retry-After): agents
still converge, never twice, and the operator's call rate stays under its configured limit."""

from __future__ import annotations

import os
import re
from collections import Counter

import pytest

from tests.e2e.conftest import start_e2b
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.e2b_client import E2BClient
from tests.support.kubectl import eventually

OPERATIONS = ("create", "connect", "pause", "kill", "list", "info", "timeout", "envd")
CALLS_PER_SECOND = 10  # the operator's default REMOTE_AGENTS_E2B_CALLS_PER_SECOND
CONTROL_PLANE_REQUEST = re.compile(r"^(\S+ \S+),\d+ INFO e2b_local: (GET|POST|DELETE) /(v2/)?sandboxes")


@pytest.fixture(scope="module")
def e2b(tmp_path_factory):
    faults = [arg for op in OPERATIONS for arg in ("--latency", f"{op}=0.5", "--error-rate", f"{op}=0.2")]
    os.environ["E2B_LOCAL_SEED"] = "20"
    try:
        server = start_e2b(tmp_path_factory, *faults)
    finally:
        del os.environ["E2B_LOCAL_SEED"]
    yield server
    server.stop()


def busiest_second(log: str) -> int:
    per_second = Counter(match.group(1) for line in log.splitlines() if (match := CONTROL_PLANE_REQUEST.match(line)))
    return max(per_second.values(), default=0)


def test_agents_converge_without_duplicates_or_hot_loops(kubectl, namespace, operator, e2b, agent_repo):
    client = E2BClient(e2b.env)
    names = [f"weather-{i}" for i in range(4)]
    for name in names:
        kubectl.apply(agent_manifest(name, namespace, agent_repo.url))
    agents = [wait_ready(kubectl, name, namespace, timeout=300) for name in names]
    for agent in agents:
        assert [s.sandbox_id for s in client.by_uid(agent["metadata"]["uid"])] == [agent["status"]["sandboxID"]]

    kubectl.run("patch", "ra", "weather-0", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":true}}')
    eventually(lambda: kubectl.get("ra", "weather-0", namespace)["status"].get("phase") == "Paused", 180,
               what="pause through flaky E2B")
    kubectl.run("delete", "ra", "weather-1", "-n", namespace, "--timeout=180s")
    assert client.by_uid(agents[1]["metadata"]["uid"]) == []

    log = e2b.log_path.read_text()
    assert "-> 503" in log or "-> 429" in log, "no injected error was exercised"
    # Each request the operator makes may be retried by the SDK itself (up to 3 times, after
    # Retry-After), so allow for that on top of the operator's own limit; a hot loop is far above.
    busiest = busiest_second(log)
    assert 0 < busiest <= (CALLS_PER_SECOND + 1) * 4, f"busiest second: {busiest} requests"
