"""Restart the operator (SIGKILL + start) under N Ready RemoteAgents.

    python bench/restart.py [--small] [--agents N] [--quiet-seconds 15]

Measures, from the new process's start: E2B creates caused by the restart (target 0, from
e2b-local's request log, which survives the restart), Kubernetes writes, the time until every
agent is converged again (observedGeneration == generation and Ready; sampled every second once
the new process serves /metrics, and the least converged count seen is reported), the time until the operator has reconciled every agent once
(its reconcile counter reaches N), and the time until its log has been quiet for
--quiet-seconds. Set-up runs with REMOTE_AGENTS_E2B_CREATES_PER_SECOND=5 and is not measured.
"""

from __future__ import annotations

import argparse
import time

import harness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="100 agents instead of 1000")
    parser.add_argument("--agents", type=int)
    parser.add_argument("--quiet-seconds", type=float, default=15)
    args = parser.parse_args()
    count = args.agents or (100 if args.small else 1000)

    env = {"REMOTE_AGENTS_E2B_CREATES_PER_SECOND": "5"}
    with harness.Stack("restart", operator_env=env, max_running=count + 100) as stack:
        setup_s = stack.create_ready_agents(count, 300 + count * 2)
        harness.log(f"{count} agents Ready in {setup_s:.0f}s; letting the operator settle, then SIGKILL")
        time.sleep(10)
        creates_before, writes_before = stack.e2b_creates(), stack.apiserver_writes()
        log_before = stack.operator.log_path.stat().st_size

        stack.operator.kill()
        started = time.monotonic()
        stack.restart_operator()
        least_converged = count

        def converged(rows: list[harness.AgentRow]) -> bool:
            nonlocal least_converged
            ready = sum(row.converged for row in rows)
            least_converged = min(least_converged, ready)
            return ready == count

        converged_s = stack.wait_agents(converged, 600, "every agent converged", interval=1) - started
        reconciled_s = stack.wait(lambda: stack.operator_metric("remote_agents_reconcile_duration_seconds_count",
                                                                kind="RemoteAgent") >= count,
                                  900, f"{count} reconciles", interval=1) - started
        quiet_s = harness.wait_log_quiet(stack.operator.log_path, args.quiet_seconds, 900) - started
        creates = stack.e2b_creates() - creates_before
        writes_after = stack.apiserver_writes()
        restart_log = stack.operator.log_path.read_text(errors="replace")[log_before:]
        calls = stack.e2b_calls()  # the new process's counters: all of them after the restart

    writes = harness.delta(writes_before, writes_after)
    figures = {"agents": count, "setup_s": setup_s, "e2b_creates_after_restart": creates,
               "least_converged_seen": least_converged, "time_to_all_converged_s": converged_s,
               "time_to_all_reconciled_s": reconciled_s, "time_to_log_quiet_s": quiet_s,
               "kubernetes_writes_after_restart": writes, "operator_e2b_calls_after_restart": calls,
               "operator_log_lines_after_restart": restart_log.count("\n")}
    harness.report("restart", figures, [harness.Target("E2B creates after restart", creates, 0, "")])


if __name__ == "__main__":
    main()
