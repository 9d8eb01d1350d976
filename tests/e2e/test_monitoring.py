"""Every series the alert rules and the dashboard select is one the running operator exports."""

from __future__ import annotations

import re
import urllib.request

from remote_agents.deploy import monitoring
from tests.e2e.test_agent_task import task_manifest
from tests.e2e.test_remote_agent import agent_manifest
from tests.support.kubectl import eventually
from tests.support.promql import selected_series

# Series Prometheus itself makes for every scrape target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "summary": ("_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",)}


def exported_names(text: str) -> set[str]:
    """Series names of a Prometheus text exposition, samples or not yet (a labelled metric nothing
    has touched shows only its TYPE line)."""
    names = set()
    for line in text.splitlines():
        typed = re.fullmatch(r"# TYPE (\S+) (\S+)", line)
        if typed:
            # A counter's TYPE line may name it with or without its _total.
            family = typed[1].removesuffix("_total") if typed[2] == "counter" else typed[1]
            names |= {family + suffix for suffix in _SUFFIXES.get(typed[2], ("",))}
        elif line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)[0])
    return names


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return None


def test_rules_and_dashboard_use_only_exported_series(operator):
    # The operator serves /metrics once it is up; the endpoint comes a moment after the process.
    exported = exported_names(eventually(lambda: _scrape(f"{operator.metrics_url}/metrics"), 60,
                                         what="the operator's /metrics"))
    assert "remote_agents_e2b_calls_total" in exported, sorted(exported)
    missing = {expr: sorted(selected_series(expr) - exported - PROMETHEUS_SERIES)
               for expr in monitoring.expressions()}
    assert {expr: names for expr, names in missing.items() if names} == {}


def _sample(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else None


def test_stalled_agents_and_the_task_queue_are_exported(operator, kubectl, namespace, agent_repo):
    kubectl.apply(agent_manifest("broken", namespace, agent_repo.url, setup=["exit 7"]))
    kubectl.apply(task_manifest("waits", namespace, "q", agent="broken"))
    url = f"{operator.metrics_url}/metrics"

    def exported(name: str, check) -> bool:
        value = _sample(_scrape(url) or "", name)
        return value is not None and check(value)
    eventually(lambda: exported("remote_agents_agents_stalled", lambda v: v >= 1), 120,
               what="the stalled agent to be counted")
    eventually(lambda: exported("remote_agents_tasks_waiting", lambda v: v >= 1), 60,
               what="the waiting task to be counted")
    eventually(lambda: exported("remote_agents_task_oldest_waiting_seconds", lambda v: v >= 1), 60,
               what="the oldest wait to grow")
    kubectl.run("delete", "agenttask", "waits", "-n", namespace)
    kubectl.run("patch", "remoteagent", "broken", "-n", namespace, "--type=merge", "-p", '{"spec":{"setup":[]}}')
    eventually(lambda: exported("remote_agents_tasks_waiting", lambda v: v == 0), 60,
               what="the queue to empty once the task is gone")
