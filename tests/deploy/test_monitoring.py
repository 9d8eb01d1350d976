"""The observability kit: generated and current, its PromQL valid (a real parser), every alert
and panel explained in docs/operations.md. The names are checked against a live /metrics in
tests/e2e/test_monitoring.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from remote_agents.deploy import manifests, monitoring
from tests.support.promql import matchers, selected_series

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "manifests" / "monitoring"


def test_kit_is_current():
    assert manifests.stale(KIT, monitoring.files()) == [], "manifests/monitoring is stale: run `remote-agents monitoring`"


@pytest.mark.parametrize("expr, names", [
    ('absent(up{job="x"} == 1)', {"up"}),
    ('sum by (kind, outcome) (rate(a_total{outcome="error", kind=~"Re.*"}[10m])) > 0', {"a_total"}),
    ("histogram_quantile(0.95, sum by (le) (rate(b_bucket[5m]))) / on (le) group_left c", {"b_bucket", "c"}),
    ('g{label="sum(h)"} offset 5m', {"g"}),
])
def test_selected_series_are_read_by_the_parser(expr, names):
    assert selected_series(expr) == names


def test_every_expression_is_valid_promql_and_selects_our_series():
    for expr in monitoring.expressions():
        series = selected_series(expr)  # raises on a syntax error
        assert series and all(name.startswith("remote_agents_") or name == "up" for name in series), expr


def test_the_leader_alerts_read_the_operator_jobs_leader_gauge():
    rules = {rule["alert"]: rule for rule in monitoring.prometheus_rule()["spec"]["groups"][0]["rules"]}
    for name in ("RemoteAgentsNoLeader", "RemoteAgentsTwoLeaders"):
        expr = rules[name]["expr"]
        assert selected_series(expr) == {"remote_agents_leader"}
        assert matchers(expr, "remote_agents_leader") == [{"job": monitoring.JOB}]
    # No series at all (no instance scraped) must be "no leader", not an empty result that never fires.
    assert "or vector(0)" in rules["RemoteAgentsNoLeader"]["expr"] and rules["RemoteAgentsNoLeader"]["expr"].endswith("< 1")
    assert rules["RemoteAgentsNoLeader"]["labels"]["severity"] == "critical"


def test_invalid_promql_is_refused():
    with pytest.raises(ValueError):
        selected_series("sum(rate(remote_agents_tasks_total[5m]) by")


def test_kustomize_builds_the_kit():
    result = subprocess.run(["kubectl", "kustomize", str(KIT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    built = {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout) if doc}
    assert set(built) == {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    assert built["ConfigMap"]["metadata"]["labels"] == {"grafana_dashboard": "1"}
    dashboard = json.loads(built["ConfigMap"]["data"]["remote-agents.json"])
    assert [panel["title"] for panel in dashboard["panels"]] == [panel.title for panel in monitoring.PANELS]
    assert built["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == "metrics"


def test_every_alert_and_panel_is_explained_in_the_operations_doc():
    doc = (ROOT / "docs" / "operations.md").read_text()
    for alert in monitoring.ALERTS:
        assert f"### {alert.name}" in doc, alert.name
    for panel in monitoring.PANELS:
        assert f"| {panel.title} |" in doc, panel.title
