"""Draw the Grafana dashboard's panels (deploy/monitoring.py PANELS, the queries of
manifests/monitoring/dashboard.json) from metrics the operator exported in an e2e-like run, into
docs/img/dashboard.png.

    python bench/dashboard.py                  # run the scenario (about 4 minutes), save the scrapes, draw
    python bench/dashboard.py --redraw         # draw again from bench/results/dashboard-scrapes.json

The scenario, on the benchmarks' real stack (control plane, e2b-local, git daemon, operator): a pool
of 3 agents, scaled to 5 halfway; an agent whose ref does not exist (Stalled); waves of tasks, one in
six failing, for about 3 minutes. /metrics is scraped every 5 s, as Prometheus would (each good
scrape also records `up` 1). No Prometheus runs: the panels' PromQL is evaluated here, over those
scrapes, by the small evaluator below, which knows just what the panels use (selectors with
equality matchers, rate/increase without extrapolation, sum/max by, histogram_quantile as Prometheus
interpolates it). matplotlib draws one small chart per panel, in the dashboard's order.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import threading
import time
from collections import defaultdict
from pathlib import Path

import promql_parser
from prometheus_client.parser import text_string_to_metric_families

import harness
from remote_agents.deploy import monitoring

SCRAPES = harness.RESULTS / "dashboard-scrapes.json"
PICTURE = harness.ROOT / "docs" / "img" / "dashboard.png"
SCRAPE_SECONDS = 5
WAVES, WAVE_SECONDS, WAVE_TASKS = 18, 10, 8

Sample = tuple[str, dict[str, str], float]  # name, labels, value
Series = dict[tuple[tuple[str, str], ...], float]  # labels -> value, at one instant


# -- the run ---------------------------------------------------------------------------------------

def record() -> list[dict]:
    scrapes: list[dict] = []
    with harness.Stack("dashboard", operator_env={"REMOTE_AGENTS_E2B_CREATES_PER_SECOND": "5"}) as stack:
        stop = threading.Event()

        def scrape() -> None:
            while not stop.wait(SCRAPE_SECONDS):
                text = stack.metrics_text()
                samples = [] if text is None else [  # ours only: the process_ and python_ series are no panel's
                    [s.name, s.labels, s.value] for family in text_string_to_metric_families(text)
                    for s in family.samples if s.name.startswith("remote_agents_")]
                samples.append(["up", {"job": monitoring.JOB, "instance": "operator"}, 0.0 if text is None else 1.0])
                scrapes.append({"t": time.time(), "samples": samples})

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        command = 'read seconds outcome; sleep "$seconds"; [ "$outcome" = ok ]'
        stack.apply(harness.pool_manifest("workers", stack.namespace, stack.repo.url, 3, query={"command": command}))
        stack.apply(harness.agent_manifest("lost", stack.namespace, stack.repo.url).replace('"ref": "main"',
                                                                                            '"ref": "no-such-branch"'))
        stack.wait_agents(lambda rows: sum(r.converged for r in rows) >= 3, 300, "the pool to be Ready")
        rng = random.Random(7)
        for wave in range(WAVES):
            if wave == WAVES // 2:
                stack.kubectl.run("scale", "agentpool/workers", "-n", stack.namespace, "--replicas=5")
            for index in range(WAVE_TASKS):
                name = f"w{wave}-{index}"
                query = f"{rng.choice(('0.5', '1', '2', '4'))} {'fail' if rng.random() < 1 / 6 else 'ok'}"
                stack.create(json.dumps(task(name, stack.namespace, query)))
            time.sleep(WAVE_SECONDS)
        stack.wait(lambda: stack.operator_metric("remote_agents_tasks_waiting") == 0, 300, "the queue to drain")
        time.sleep(3 * SCRAPE_SECONDS)
        stop.set()
        scraper.join()
    return scrapes


def task(name: str, namespace: str, query: str) -> dict:
    return {"apiVersion": "remoteagents.io/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"query": query, "poolRef": {"name": "workers"}, "timeoutSeconds": 60}}


# -- PromQL over the scrapes -----------------------------------------------------------------------

def key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class Evaluator:
    def __init__(self, scrapes: list[dict]):
        self.scrapes = scrapes

    def at(self, expr: str, index: int) -> Series:
        return self._eval(promql_parser.parse(expr), index)

    def _select(self, selector, index: int) -> dict[tuple, list[tuple[float, float]]]:
        wanted = {m.name: m.value for m in selector.matchers.matchers}
        found: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
        for scrape in self.scrapes[:index + 1]:
            for name, labels, value in scrape["samples"]:
                if name == selector.name and all(labels.get(k) == v for k, v in wanted.items()):
                    found[key(labels)].append((scrape["t"], value))
        return found

    def _eval(self, node, index: int) -> Series:
        now = self.scrapes[index]["t"]
        if isinstance(node, promql_parser.ParenExpr):
            return self._eval(node.expr, index)
        if isinstance(node, promql_parser.VectorSelector):
            return {k: points[-1][1] for k, points in self._select(node, index).items() if points[-1][0] == now}
        if isinstance(node, promql_parser.AggregateExpr):
            inner = self._eval(node.expr, index)
            by = list(node.modifier.labels) if node.modifier else []
            groups: dict[tuple, list[float]] = defaultdict(list)
            for labels, value in inner.items():
                groups[tuple((k, v) for k, v in labels if k in by)].append(value)
            combine = {"sum": sum, "max": max}[str(node.op)]
            return {group: combine(values) for group, values in groups.items()}
        if isinstance(node, promql_parser.Call):
            name = node.func.name
            if name in ("rate", "increase"):
                matrix = node.args[0]
                window = matrix.range.total_seconds()
                result: Series = {}
                for labels, points in self._select(matrix.vector_selector, index).items():
                    inside = [(t, v) for t, v in points if now - window <= t <= now]
                    if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
                        grown = max(0.0, inside[-1][1] - inside[0][1])
                        result[tuple((k, v) for k, v in labels if k != "__name__")] = (
                            grown / (inside[-1][0] - inside[0][0]) if name == "rate" else grown)
                return result
            if name == "histogram_quantile":
                return quantiles(node.args[0].val, self._eval(node.args[1], index))
        raise NotImplementedError(f"not evaluated here: {node}")


def quantiles(q: float, buckets: Series) -> Series:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket the rank falls in."""
    by_group: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for labels, count in buckets.items():
        le = dict(labels)["le"]
        by_group[tuple((k, v) for k, v in labels if k != "le")].append((float(le), count))
    result: Series = {}
    for group, points in by_group.items():
        points.sort()
        total = points[-1][1]
        if total <= 0:
            continue
        rank, lower, below = q * total, 0.0, 0.0
        for upper, count in points:
            if count >= rank:
                result[group] = points[-2][0] if math.isinf(upper) else lower + (upper - lower) * (rank - below) / max(
                    count - below, 1e-12)
                break
            lower, below = upper, count
    return result


def legend(template: str, labels: tuple) -> str:
    text = template
    for name, value in labels:
        text = text.replace("{{" + name + "}}", value)
    return text


# -- the picture -----------------------------------------------------------------------------------

def draw(scrapes: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluator = Evaluator(scrapes)
    start = scrapes[0]["t"]
    minutes = [(s["t"] - start) / 60 for s in scrapes]
    columns = 3
    rows = math.ceil(len(monitoring.PANELS) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(15, 3.1 * rows), constrained_layout=True)
    figure.suptitle("remote-agents dashboard: panels of manifests/monitoring/dashboard.json over an e2e-like run "
                    "(bench/dashboard.py)", fontsize=12)
    for panel, ax in zip(monitoring.PANELS, axes.flat):
        ax.set_title(panel.title, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        lines: dict[str, list[float]] = {}
        for expr, template in panel.targets:
            for index in range(len(scrapes)):
                for labels, value in evaluator.at(expr, index).items():
                    lines.setdefault(legend(template, labels), [math.nan] * len(scrapes))[index] = value
        if panel.kind == "stat":
            last = [values[-1] for values in lines.values()]
            ax.axis("off")
            ax.text(0.5, 0.45, f"{last[0]:g}" if last else "no data", ha="center", va="center", fontsize=34,
                    color="tab:green" if last and (last[0] == 1 if panel.title == "Operator up" else last[0] == 0)
                    else "tab:red", transform=ax.transAxes)
            ax.text(0.5, 0.1, panel.description, ha="center", fontsize=8, color="dimgray", transform=ax.transAxes)
            continue
        for label, values in sorted(lines.items()):
            ax.plot(minutes, values, label=label, linewidth=1.4)
        ax.set_xlabel("minutes", fontsize=8)
        if panel.unit != "none":
            ax.set_ylabel({"ops": "per second", "s": "seconds"}.get(panel.unit, panel.unit), fontsize=8)
        if lines:
            ax.legend(fontsize=7, loc="upper left", ncol=2 if len(lines) > 4 else 1)
        else:
            ax.text(0.5, 0.5, "no data (none happened)", ha="center", va="center", color="dimgray",
                    transform=ax.transAxes)
    for ax in list(axes.flat)[len(monitoring.PANELS):]:
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    harness.log(f"drew {len(monitoring.PANELS)} panels from {len(scrapes)} scrapes into {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redraw", action="store_true", help=f"draw from {SCRAPES} without running")
    args = parser.parse_args()
    if args.redraw:
        scrapes = json.loads(SCRAPES.read_text())
    else:
        scrapes = record()
        SCRAPES.write_text(json.dumps(scrapes))
    draw(scrapes, PICTURE)


if __name__ == "__main__":
    main()
