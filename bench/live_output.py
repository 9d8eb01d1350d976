"""`remote-agents logs -f` latency, from a line printed in the sandbox to the CLI's stdout, and what
a long, chatty run's status.progress costs the operator.

    python bench/live_output.py [--lines 200] [--every 0.05]

The task's command prints `--lines` lines `--every` seconds apart on stdout (each with
$EPOCHREALTIME, bash's clock without a process, taken just before it is written) and one on
stderr; `remote-agents logs TASK -f` runs as a subprocess and each stdout line is timed when the
benchmark reads it from the CLI's pipe (e2b-local's sandboxes share this machine's clock). The
latency counts the lines printed once the CLI was streaming (its first line in); the lines
before it are the backlog a follower starting mid-run reads at once. Also
counted: the task's status writes (apiserver PATCHes of agenttasks/status during the run) and
the operator's E2B calls during the run, against the lines the run wrote.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import harness
from tests.e2e.test_agent_task import task_manifest

TARGET_P50_MS = 200.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=400)
    parser.add_argument("--every", type=float, default=0.05, help="seconds between lines")
    args = parser.parse_args()
    command = (f'for i in $(seq 1 {args.lines}); do echo "tick $i $EPOCHREALTIME"; echo "step $i" >&2; '
               f'sleep {args.every}; done')
    with harness.Stack("live_output") as stack:
        stack.apply(harness.agent_manifest("ticker", stack.namespace, stack.repo.url, query={"command": command}))
        stack.wait_agents(lambda rows: len(rows) == 1 and rows[0].converged, 120, "the agent to be Ready")
        env = {**os.environ, **stack.e2b.env, "KUBECONFIG": stack.cluster.kubeconfig}
        cli = [str(Path(sys.executable).parent / "remote-agents"), "logs", "tick", "-n", stack.namespace, "-f"]
        writes_before, calls_before = stack.apiserver_writes(), stack.e2b_calls()
        stack.create(task_manifest("tick", stack.namespace, "go", agent="ticker"))
        started = time.time()
        follower = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        latencies_ms, backlog, first_in = [], 0, None
        for line in follower.stdout:
            received = time.time()
            printed = float(line.split()[2])
            first_in = first_in or received
            if printed < first_in:
                backlog += 1
            else:
                latencies_ms.append((received - printed) * 1000)
        follower.wait(60)
        stack.wait(lambda: stack.kubectl.get("agenttask", "tick", stack.namespace)["status"].get("phase")
                   in ("Succeeded", "Failed"), 60, "the task to finish")
        writes = harness.delta(writes_before, stack.apiserver_writes())
        calls = harness.delta(calls_before, stack.e2b_calls())
        progress = stack.kubectl.get("agenttask", "tick", stack.namespace)["status"].get("progress")

    run_seconds = args.lines * args.every
    figures = {"lines": args.lines, "every_s": args.every, "lines_received": backlog + len(latencies_ms),
               "backlog_lines": backlog, "live_lines": len(latencies_ms),
               "exit_code": follower.returncode,
               "latency_p50_ms": harness.percentile(latencies_ms, 0.5),
               "latency_p95_ms": harness.percentile(latencies_ms, 0.95),
               "latency_max_ms": max(latencies_ms),
               "created_to_first_line_s": first_in - started,
               "final_progress": progress,
               "run_s_at_least": run_seconds,
               "apiserver_writes_during_the_task": writes,
               "operator_e2b_calls_during_the_task": calls}
    harness.report("live_output", figures, [
        harness.Target("follow latency p50", figures["latency_p50_ms"], TARGET_P50_MS, "ms"),
    ])


if __name__ == "__main__":
    main()
