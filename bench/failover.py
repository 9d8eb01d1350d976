"""Leader election failover: two operators, N Ready agents; SIGKILL the leader, then stop the new
leader gracefully, and time each handover.

    python bench/failover.py [--agents 20] [--changed 3] [--lease-duration 15] [--renew-deadline 10] [--retry-period 1]

For each handover, from the signal: the time until the standby serves /leader, and until its
first reconcile (its reconcile counter leaves 0; Kopf resumes every object when it starts), then
until it has reconciled every agent. Also counted from the signal until every agent has been
reconciled and the log has been quiet for 10 s: E2B creates (e2b-local's log, target 0), and
Kubernetes writes by resource (apiserver counter, leases aside; in the graceful handover nothing
changes meanwhile, so any write is its own). Defaults are the shipped Lease settings.
After the SIGKILL, before the standby leads, `--changed` agents get a new spec.maxConcurrentTasks:
a watch of the agents' resourceVersions then shows which objects were written during the handover
(goal: only the changed ones), and the apiserver's RemoteAgent writes are split into ours (one
patch per changed agent) and the new leader's. The standby's silence before it leads is read from
its metrics (E2B calls, reconciles) and from the apiserver's writes over a quiet window.
Targets: SIGKILL -> first reconcile <= lease duration + 2 s; graceful stop -> first reconcile <= 2 s;
no E2B creates; no unchanged agent written; no E2B call by the standby before it leads.
"""

from __future__ import annotations

import argparse
import time
import urllib.error
import urllib.request

import harness

from remote_agents_local import processes
from tests.support.operator_process import OperatorProcess


def answer(port: int, path: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return None


def leads(port: int) -> bool:
    return answer(port, "/leader") == (200, "leader")


def stands_by(port: int) -> bool:
    return answer(port, "/healthz") == (200, "ok: standby")


def reconciles(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return harness.sum_metric(text, "remote_agents_reconcile_duration_seconds_count",
                              lambda labels: labels.get("kind") == "RemoteAgent")


def e2b_calls(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return harness.sum_metric(response.read().decode(), "remote_agents_e2b_calls_total", lambda labels: True)


def change_agents(stack: harness.Stack, names: list[str]) -> None:
    """A spec change that needs no new sandbox, only a reconcile (and a status write for its generation)."""
    for name in names:
        stack.kubectl.run("patch", "remoteagent", name, "-n", stack.namespace, "--type=merge",
                          "-p", '{"spec":{"maxConcurrentTasks":2}}')


def handover(stack: harness.Stack, leader: OperatorProcess, end, successor: OperatorProcess, port: int,
             count: int, changed: list[str] = ()) -> dict:
    """End the leader with `end()`, change the `changed` agents while no one leads; the successor's
    times, the handover's E2B creates and writes, and which agents were written."""
    creates_before, writes_before = stack.e2b_creates(), stack.apiserver_writes()
    log_before, successor_log_before = leader.log_path.stat().st_size, successor.log_path.stat().st_size
    # --watch-only: one line per change of an agent from now on, none for the initial list.
    watch = harness.Watch(stack.kubectl, "remoteagents", "-n", stack.namespace, "--watch-only", "--no-headers",
                          "-o", "custom-columns=NAME:.metadata.name,RV:.metadata.resourceVersion")
    started = time.monotonic()
    end()
    change_agents(stack, list(changed))
    changed_before_leading = not leads(port)
    leading_s = stack.wait(lambda: leads(port), 120, "the standby to lead", interval=0.05) - started
    first_s = stack.wait(lambda: reconciles(port) > 0, 120, "the new leader's first reconcile", interval=0.05) - started
    all_s = stack.wait(lambda: reconciles(port) >= count, 300, "every agent reconciled", interval=0.2) - started
    harness.wait_log_quiet(successor.log_path, 10, 300)
    watch.stop()
    written = sorted({line.split()[0] for _, line in watch.lines if line.strip()})
    writes = harness.delta(writes_before, stack.apiserver_writes())
    harness.log("the ended leader's log from then on:\n" + leader.log()[log_before:][-3000:])
    harness.log("the successor's Lease lines:\n" + "".join(
        line for line in successor.log()[successor_log_before:].splitlines(keepends=True) if "Lease" in line))
    return {"to_leading_s": leading_s, "to_first_reconcile_s": first_s, "to_all_reconciled_s": all_s,
            "e2b_creates": stack.e2b_creates() - creates_before,
            "kubernetes_writes": writes, "changed_agents": len(changed),
            "changed_before_the_standby_led": changed_before_leading,
            "agents_written": len(written), "unchanged_agents_written": len(set(written) - set(changed)),
            "leader_remoteagent_writes": writes.get("remoteagents", 0) - len(changed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--changed", type=int, default=3, help="agents changed while no one leads")
    parser.add_argument("--lease-duration", type=int, default=15)
    parser.add_argument("--renew-deadline", type=float, default=10)
    parser.add_argument("--retry-period", type=float, default=1)
    args = parser.parse_args()
    namespace = "bench-failover"
    election = ("--leader-election", "--lease-namespace", namespace, "--lease-duration", str(args.lease_duration),
                "--renew-deadline", str(args.renew_deadline), "--retry-period", str(args.retry_period))

    with harness.Stack("failover", operator_args=election, max_running=args.agents + 50,
                       operator_env={"REMOTE_AGENTS_E2B_CREATES_PER_SECOND": "5"}) as stack:
        first, first_port = stack.operator, stack.metrics_port
        stack.wait(lambda: leads(first_port), 60, "the first operator to lead")
        second_port = processes.free_port()
        second = OperatorProcess(stack.cluster.kubeconfig, stack.e2b.env, stack.state / "operator-2.log", *election,
                                 "--metrics-port", str(second_port), env=stack.operator_env).start()
        stack.wait(lambda: stands_by(second_port), 60, "the second operator to stand by")
        try:
            setup_s = stack.create_ready_agents(args.agents, 300 + args.agents * 2)
            harness.log(f"{args.agents} agents Ready in {setup_s:.0f}s; SIGKILL the leader")
            harness.wait_log_quiet(first.log_path, 5, 300)
            quiet_writes_before = stack.apiserver_writes()
            time.sleep(10)  # a window in which neither operator has anything to do
            standby = {"standby_writes_in_a_quiet_10s": sum(harness.delta(quiet_writes_before,
                                                                          stack.apiserver_writes()).values()),
                       "standby_e2b_calls": e2b_calls(second_port), "standby_reconciles": reconciles(second_port)}
            harness.log(f"the standby before leading: {standby}")
            killed = handover(stack, first, first.kill, second, second_port, args.agents,
                              [f"agent-{i}" for i in range(args.changed)])
            harness.log(f"after SIGKILL: {killed}")

            first.start()  # back as the standby
            stack.wait(lambda: stands_by(first_port), 60, "the restarted operator to stand by")
            harness.log("graceful stop of the new leader")
            # SIGTERM without waiting for the exit: the process lingers a few seconds after its release
            # (blocking watch threads end with their requests), and the standby does not wait for that.
            stopped = handover(stack, second, second.process.terminate, first, first_port, args.agents)
            harness.log(f"after the graceful stop: {stopped}")
        finally:
            second.stop()

    figures = {"agents": args.agents, "lease_duration_s": args.lease_duration,
               "renew_deadline_s": args.renew_deadline, "retry_period_s": args.retry_period, **standby,
               **{f"sigkill_{key}": value for key, value in killed.items()},
               **{f"graceful_{key}": value for key, value in stopped.items()}}
    harness.report("failover", figures, [
        harness.Target("SIGKILL -> first reconcile by the new leader", killed["to_first_reconcile_s"],
                       args.lease_duration + 2, "s"),
        harness.Target("graceful stop -> first reconcile by the new leader", stopped["to_first_reconcile_s"], 2, "s"),
        harness.Target("E2B creates caused by the two handovers",
                       killed["e2b_creates"] + stopped["e2b_creates"], 0, ""),
        harness.Target("unchanged agents written during the SIGKILL handover", killed["unchanged_agents_written"],
                       0, ""),
        harness.Target("E2B calls by the standby before it led", standby["standby_e2b_calls"], 0, ""),
    ])


if __name__ == "__main__":
    main()
