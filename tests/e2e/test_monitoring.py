"""Every series the alert rules and the dashboard select is one the running operator exports."""

from __future__ import annotations

import re
import urllib.request

from remote_agents.deploy import monitoring
from tests.support.kubectl import eventually

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
    missing = {expr: sorted(monitoring.metric_names(expr) - exported - PROMETHEUS_SERIES)
               for expr in monitoring.expressions()}
    assert {expr: names for expr, names in missing.items() if names} == {}
