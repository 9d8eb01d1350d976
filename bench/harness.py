"""Shared set-up for the benchmarks: a real control plane, e2b-local with E2B-like latencies, a git
daemon serving a tiny agent repo and the operator, all in one temporary directory and all torn
down on exit. Plus the measuring helpers the scripts share (polling agents, /metrics, /proc,
result files).

    with harness.Stack("scale", operator_env={...}, max_running=200) as stack:
        stack.apply(harness.pool_manifest("fleet", stack.namespace, stack.repo.url, 100))
        ...
        harness.report("scale", figures, targets)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support is a plain directory of the repo, not an installed package

from remote_agents_local import processes  # noqa: E402
from remote_agents_local.cluster import control_plane  # noqa: E402
from remote_agents_local.e2b_local import launcher  # noqa: E402
from tests.e2e.conftest import AGENT_FILES  # noqa: E402
from tests.e2e.test_agent_pool import pool_manifest  # noqa: E402,F401  (re-exported for the scripts)
from tests.e2e.test_remote_agent import agent_manifest  # noqa: E402
from tests.support.git_server import GitServer  # noqa: E402
from tests.support.kubectl import Kubectl  # noqa: E402
from tests.support.operator_process import OperatorProcess  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# Roughly what E2B itself takes for these two calls.
E2B_LATENCY_ARGS = ("--latency", "create=1", "--latency", "pause=1")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- manifests (the e2e tests' own, so benchmarks and tests create the same objects) ------------

def agents_manifest(prefix: str, count: int, namespace: str, repo_url: str) -> str:
    """`count` standalone RemoteAgents in one List, so one kubectl call creates them all."""
    items = [json.loads(agent_manifest(f"{prefix}-{i}", namespace, repo_url)) for i in range(count)]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


# -- the stack -----------------------------------------------------------------------------------

@dataclass
class AgentRow:
    name: str
    generation: int
    observed_generation: int | None
    phase: str | None
    revision: str | None

    @property
    def converged(self) -> bool:
        return self.phase == "Ready" and self.observed_generation == self.generation


class Stack:
    """Everything a benchmark needs, started on enter and stopped (in reverse) on exit."""

    def __init__(self, name: str, *, operator_args: Iterable[str] = (), operator_env: dict[str, str] | None = None,
                 max_running: int = 200):
        self.name = name
        self.operator_args = list(operator_args)
        self.operator_env = operator_env or {}
        self.max_running = max_running
        self.namespace = f"bench-{name.replace('_', '-')}"
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *_: Any) -> None:
        log("tearing down")
        self._exit.close()

    def _start(self) -> None:
        self.state = Path(self._exit.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{self.name}-")))
        started = time.monotonic()
        cluster_dir = self.state / "cluster"
        self.cluster = control_plane.up(cluster_dir)
        self._exit.callback(control_plane.down, cluster_dir)
        self.kubectl = Kubectl(self.cluster.kubeconfig)
        crds = ROOT / "crds"
        self.kubectl.run("apply", "--server-side", "-f", str(crds))
        self.kubectl.run("wait", "--for=condition=Established", "--timeout=60s",
                         *[f"crd/{p.name.removesuffix('.yaml')}" for p in sorted(crds.glob("*.yaml"))])
        self.kubectl.run("create", "namespace", self.namespace)

        self.git = GitServer(self.state / "git")
        self._exit.callback(self.git.stop)
        self.repo = self.git.create("agent", AGENT_FILES)

        self.e2b = launcher.start(self.state / "e2b", extra_args=[*E2B_LATENCY_ARGS,
                                                                   "--max-running", str(self.max_running)])
        self._exit.callback(self.e2b.stop)

        self.metrics_port = processes.free_port()
        self.operator = OperatorProcess(self.cluster.kubeconfig, self.e2b.env, self.state / "operator.log",
                                        *self.operator_args, "--metrics-port", str(self.metrics_port),
                                        env=self.operator_env)
        self.operator.start()
        self._exit.callback(self.operator.stop)
        self.wait(lambda: self.metrics_text() is not None, 60, "the operator's /metrics")
        log(f"stack up in {time.monotonic() - started:.1f}s (state {self.state})")

    # -- Kubernetes ------------------------------------------------------------------------------

    def apply(self, manifest: str) -> None:
        self.kubectl.run("apply", "-f", "-", input=manifest, timeout=600)

    def create(self, manifest: str) -> None:
        """`kubectl create`: for one-shot objects (tasks), as the orchestrator client submits them;
        without apply's read before each write and its last-applied copy in every object."""
        self.kubectl.run("create", "-f", "-", input=manifest, timeout=600)

    def agents(self) -> list[AgentRow]:
        """One cheap kubectl call (custom columns, not JSON) for every RemoteAgent of the namespace."""
        columns = ("N:.metadata.name,G:.metadata.generation,O:.status.observedGeneration,P:.status.phase,"
                   "R:.status.revision")
        out = self.kubectl.run("get", "remoteagents", "-n", self.namespace, "--no-headers", "-o",
                               f"custom-columns={columns}", timeout=120).stdout
        rows = []
        for line in out.splitlines():
            name, generation, observed, phase, revision = (None if v == "<none>" else v for v in line.split())
            rows.append(AgentRow(name, int(generation), int(observed) if observed else None, phase, revision))
        return rows

    def wait_agents(self, done: Callable[[list[AgentRow]], bool], timeout: float, what: str,
                    interval: float = 0.5) -> float:
        """Poll until `done(agents)`; returns the monotonic time it first held."""
        return self.wait(lambda: done(self.agents()), timeout, what, interval)

    @staticmethod
    def wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return time.monotonic()
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")

    def apiserver_writes(self) -> dict[str, int]:
        """Mutating requests the apiserver has served so far, by resource. Leases are left out:
        kube-controller-manager renews its leader lease every few seconds whatever we do."""
        text = self.kubectl.run("get", "--raw", "/metrics", timeout=60).stdout
        writes: dict[str, int] = {}
        for resource in set(re.findall(r'apiserver_request_total\{(?:[^}]*,)?resource="([^"]*)"', text)) - {"leases"}:
            count = sum_metric(text, "apiserver_request_total", lambda labels: labels.get("resource") == resource
                               and labels.get("verb") in ("POST", "PUT", "PATCH", "DELETE"))
            if count:
                writes[resource] = int(count)
        return writes

    def create_ready_agents(self, count: int, timeout: float) -> float:
        """`count` standalone RemoteAgents, waited for until all are Ready; returns the seconds it took."""
        started = time.monotonic()
        self.apply(agents_manifest("agent", count, self.namespace, self.repo.url))
        progress = {"logged": started}

        def all_ready(rows: list[AgentRow]) -> bool:
            ready = sum(row.converged for row in rows)
            if time.monotonic() - progress["logged"] > 30:
                progress["logged"] = time.monotonic()
                log(f"{ready}/{count} agents Ready")
            return ready == count

        return self.wait_agents(all_ready, timeout, f"{count} Ready agents", interval=2) - started

    def head(self) -> str:
        """The agent repo's current commit."""
        return subprocess.run(["git", "-C", str(self.repo.work), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()

    # -- the operator ----------------------------------------------------------------------------

    def metrics_text(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
                return response.read().decode()
        except OSError:
            return None

    def operator_metric(self, name: str, **labels: str) -> float:
        """One of the operator's metrics, summed over the label values not given (resets on restart)."""
        return sum_metric(self.metrics_text() or "", name,
                          lambda found: all(found.get(k) == v for k, v in labels.items()))

    def e2b_calls(self) -> dict[str, int]:
        """The operator's remote_agents_e2b_calls_total by operation (list, create, command, files, ...)."""
        text = self.metrics_text() or ""
        operations = set(re.findall(r'remote_agents_e2b_calls_total\{[^}]*operation="([^"]*)"', text))
        return {op: int(sum_metric(text, "remote_agents_e2b_calls_total",
                                   lambda labels: labels.get("operation") == op)) for op in sorted(operations)}

    def restart_operator(self) -> None:
        self.operator.restart()
        self.wait(lambda: self.metrics_text() is not None, 60, "the restarted operator's /metrics")

    def cpu_seconds_by_component(self) -> dict[str, float]:
        """CPU used so far by each piece on this machine (e2b-local includes its reaped sandbox
        processes), and by the whole machine: where a benchmark's time goes on shared cores."""
        pids = {**self.cluster.pids, "operator": self.operator.process.pid}
        used = {name: cpu_seconds(pid) for name, pid in pids.items()}
        used["e2b-local"] = cpu_seconds(self.e2b.pid, with_children=True)
        used["e2b-local sandboxes"] = used["e2b-local"] - cpu_seconds(self.e2b.pid)  # its reaped commands
        used["machine"] = machine_busy_seconds()
        return used

    # -- e2b-local -------------------------------------------------------------------------------

    def e2b_requests(self, method: str, path_pattern: str) -> int:
        """Control-plane requests e2b-local has logged so far (`METHOD path -> status (ms)`; envd
        requests carry ` sandbox=ID` before the arrow and so never match)."""
        pattern = re.compile(rf"\b{method} {path_pattern} ->")
        return sum(1 for line in self.e2b.log_path.read_text(errors="replace").splitlines() if pattern.search(line))

    def e2b_creates(self) -> int:
        return self.e2b_requests("POST", r"/(v2/)?sandboxes")

    def e2b_lists(self) -> int:
        return self.e2b_requests("GET", r"/(v2/)?sandboxes")


class Watch:
    """`kubectl get KIND --watch` in the background: every line it prints, with the time it arrived.

    Client-side timestamps, because creationTimestamp and the operator's status times only have
    whole seconds."""

    def __init__(self, kubectl: Kubectl, kind: str, *args: str):
        self.lines: list[tuple[float, str]] = []
        self._argv = ["kubectl", "--kubeconfig", kubectl.kubeconfig, "get", kind, *args]
        self._stopping = False
        self.process = self._spawn()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(self._argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _read(self) -> None:
        """Every line; a watch the API server ends (kubectl exits, e.g. on an expired resource
        version) is started again: it lists every object anew, so no final state is missed."""
        while True:
            for line in self.process.stdout:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
            error = self.process.stderr.read().strip()
            if self._stopping:
                return
            log(f"kubectl watch ended ({self.process.wait()}: {error[-200:]}); watching again")
            self.process = self._spawn()

    def stop(self) -> None:
        self._stopping = True
        self.process.terminate()
        self.process.wait(timeout=10)
        self._reader.join(10)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()


def wait_log_quiet(path: Path, quiet: float, timeout: float) -> float:
    """The monotonic time a log last grew, once it has stayed unchanged for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The file's mtime is when it last grew, also if that was before this function was called.
        since_growth = time.time() - path.stat().st_mtime
        if since_growth >= quiet:
            return time.monotonic() - since_growth
        time.sleep(0.5)
    raise TimeoutError(f"{path.name} never went quiet for {quiet}s")


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Per-key growth of a counter snapshot, keys that did not grow left out."""
    return {key: value - before.get(key, 0) for key, value in after.items() if value - before.get(key, 0)}


# -- measuring -----------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def sum_metric(text: str, name: str, keep: Callable[[dict[str, str]], bool]) -> float:
    """Sum the samples of one metric in Prometheus text format whose labels `keep` accepts."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name and keep(dict(_LABEL.findall(match["labels"] or ""))):
            total += float(match["value"])
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """utime + stime of the process so far (plus its waited-for children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if with_children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all cores spent on anything but idle and iowait since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def cpu_percent(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Per component, percent of one core over `seconds` (the machine's figure is out of
    100 x cores)."""
    return {name: round((after[name] - before[name]) / seconds * 100, 1) for name in after}


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; enough for the handful-to-thousands of samples here."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


@dataclass
class Target:
    """One figure against its goal: `ratio` is measured/target, so <= 1 passes for upper bounds."""

    figure: str
    measured: float
    target: float
    unit: str
    higher_is_better: bool = False

    @property
    def ratio(self) -> float | None:
        return self.measured / self.target if self.target else None

    @property
    def met(self) -> bool:
        return self.measured >= self.target if self.higher_is_better else self.measured <= self.target

    def line(self) -> str:
        bound = ">=" if self.higher_is_better else "<="
        ratio = f"{self.ratio:.2f}x of target" if self.ratio is not None else "target 0"
        return (f"  {self.figure}: {self.measured:.3g} {self.unit} (target {bound} {self.target:g} {self.unit}; "
                f"{ratio}; {'MET' if self.met else 'MISSED'})")


def operator_version() -> dict[str, Any]:
    """The commit the operator ran from, and whether its sources had uncommitted edits: the
    working tree is shared with others, so a result belongs to the code of its moment (read when
    the result is written; the operator imported its code when it started)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "operator_sources_modified": bool(git("status", "--porcelain", "--", "operator"))}


def report(name: str, figures: dict[str, Any], targets: list[Target]) -> None:
    """Print the figures and ratios and write bench/results/<name>.json."""
    print(f"\n== {name} ==")
    for key, value in figures.items():
        print(f"  {key}: {round(value, 3) if isinstance(value, float) else value}")
    for target in targets:
        print(target.line())
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
              **operator_version(), "figures": figures,
              "targets": [{"figure": t.figure, "measured": t.measured, "target": t.target, "unit": t.unit,
                           "ratio": t.ratio, "met": t.met} for t in targets]}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  -> {path.relative_to(ROOT)}")

