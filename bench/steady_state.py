"""N RemoteAgents at rest: what the operator costs while nothing changes.

    python bench/steady_state.py [--small] [--agents N] [--duration 300] [--settle 60]

Over a window of --duration seconds, after every agent is Ready and --settle seconds more:
operator RSS (peak and end, VmRSS), CPU (utime+stime over the window, % of one core),
Kubernetes writes (RemoteAgent watch events and the apiserver's mutating request counter,
leases aside) and E2B calls per health interval (the operator's counter and e2b-local's log).
Set-up runs with REMOTE_AGENTS_E2B_CREATES_PER_SECOND=5 and is not measured.
"""

from __future__ import annotations

import argparse
import time

import harness

HEALTH_INTERVAL = 30.0  # the operator's default, passed explicitly so the figure below is tied to it
RSS_TARGET_MIB = 300
CPU_TARGET_PERCENT = 5
LIST_PAGE = 100  # the gateway's page size: one list of N sandboxes is ceil(N / 100) calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="100 agents instead of 1000")
    parser.add_argument("--agents", type=int)
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--settle", type=float, default=60)
    args = parser.parse_args()
    count = args.agents or (100 if args.small else 1000)

    env = {"REMOTE_AGENTS_E2B_CREATES_PER_SECOND": "5"}
    with harness.Stack("steady_state", operator_args=("--health-interval", str(HEALTH_INTERVAL)),
                       operator_env=env, max_running=count + 100) as stack:
        setup_s = stack.create_ready_agents(count, 300 + count * 2)
        harness.log(f"{count} agents Ready in {setup_s:.0f}s; settling {args.settle:.0f}s")
        time.sleep(args.settle)

        pid = stack.operator.process.pid
        harness.log(f"measuring for {args.duration:.0f}s")
        with harness.Watch(stack.kubectl, "remoteagents", "-A", "--watch-only", "-o", "name") as watch:
            writes_before, calls_before = stack.apiserver_writes(), stack.e2b_calls()
            lists_before, cpu_before = stack.e2b_lists(), harness.cpu_seconds(pid)
            started = time.monotonic()
            rss = []
            while time.monotonic() - started < args.duration:
                rss.append(harness.rss_mib(pid))
                time.sleep(1)
            window = time.monotonic() - started
            cpu = harness.cpu_seconds(pid) - cpu_before
            writes_after, calls_after = stack.apiserver_writes(), stack.e2b_calls()
            lists = stack.e2b_lists() - lists_before
            watch_events = len(watch.lines)

    intervals = window / HEALTH_INTERVAL
    writes, calls = harness.delta(writes_before, writes_after), harness.delta(calls_before, calls_after)
    calls_per_interval = sum(calls.values()) / intervals
    pages = -(-count // LIST_PAGE)
    # Rounds, not window / interval: a window holds one round more or less depending on where it falls.
    rounds = max(1, round(calls.get("list", 0) / pages))
    calls_per_round = sum(calls.values()) / rounds
    figures = {"agents": count, "setup_s": setup_s, "window_s": window, "health_interval_s": HEALTH_INTERVAL,
               "rss_peak_mib": max(rss), "rss_end_mib": rss[-1], "cpu_percent_of_core": cpu / window * 100,
               "remoteagent_watch_events": watch_events, "kubernetes_writes": writes,
               "kubernetes_writes_per_minute": sum(writes.values()) / window * 60,
               "operator_e2b_calls": calls, "e2b_calls_per_health_interval": calls_per_interval,
               "e2b_local_list_requests_per_health_interval": lists / intervals,
               "list_pages_for_n": pages, "health_rounds": rounds, "e2b_calls_per_round": calls_per_round}
    harness.report("steady_state", figures, [
        harness.Target("operator RSS peak", max(rss), RSS_TARGET_MIB, "MiB"),
        harness.Target("operator CPU", cpu / window * 100, CPU_TARGET_PERCENT, "% of a core"),
        harness.Target("Kubernetes writes per minute at rest", sum(writes.values()) / window * 60, 0, "/min"),
        harness.Target("E2B calls per health round", calls_per_round, pages, "calls"),
    ])


if __name__ == "__main__":
    main()
