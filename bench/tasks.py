"""Run many short AgentTasks on a pool and compare throughput with the pool's capacity.

    python bench/tasks.py [--small] [--tasks N] [--pool 20] [--max-concurrent 1] [--task-seconds 0.5]

Capacity = pool size * maxConcurrentTasks / task duration (target: throughput >= 80% of it).
The tasks are created by 8 concurrent `kubectl create`s: throughput can only be compared with
capacity while tasks wait, and one kubectl alone creates them at about the pool's pace here.
Throughput counts from the first task seen to the last one finished. Dispatch latency is
per task, from the watch seeing it created to the watch seeing it leave Pending (client-side
times: the API's timestamps have whole seconds only).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import harness
from tests.e2e.test_agent_task import task_manifest  # the e2e tests' AgentTask

TARGET_SHARE = 0.8
SUBMITTERS = 8  # concurrent `kubectl create`s: tasks must arrive faster than the pool runs them
FINISHED = ("Succeeded", "Failed")


def tasks_manifests(count: int, namespace: str, pool: str, lists: int) -> list[str]:
    """The tasks as `lists` List manifests, task i in list i % lists (so each list is in creation order)."""
    items = [json.loads(task_manifest(f"task-{i}", namespace, f"query {i}", pool=pool)) for i in range(count)]
    return [json.dumps({"apiVersion": "v1", "kind": "List", "items": items[start::lists]}) for start in range(lists)]


def first_times(watch: harness.Watch) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, str]]:
    """Per task: first seen, first seen past Pending, first seen finished; and its last phase."""
    seen, dispatched, finished, phases = {}, {}, {}, {}
    for at, line in list(watch.lines):
        name, phase = (line.split() + ["<none>"])[:2]
        seen.setdefault(name, at)
        if phase not in ("<none>", "Pending"):
            dispatched.setdefault(name, at)
        if phase in FINISHED:
            finished.setdefault(name, at)
        phases[name] = phase
    return seen, dispatched, finished, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="200 tasks instead of 1000")
    parser.add_argument("--tasks", type=int)
    parser.add_argument("--pool", type=int, default=20)
    parser.add_argument("--max-concurrent", type=int, default=1, help="maxConcurrentTasks of each agent")
    parser.add_argument("--task-seconds", type=float, default=0.5)
    args = parser.parse_args()
    count = args.tasks or (200 if args.small else 1000)
    capacity = args.pool * args.max_concurrent / args.task_seconds

    env = {"REMOTE_AGENTS_E2B_CREATES_PER_SECOND": "5"}  # only speeds up the pool's set-up
    with harness.Stack("tasks", operator_env=env, max_running=args.pool + 10) as stack:
        stack.apply(harness.pool_manifest("workers", stack.namespace, stack.repo.url, args.pool,
                                          maxConcurrentTasks=args.max_concurrent,
                                          query={"command": f"sleep {args.task_seconds}; echo ok"}))
        stack.wait_agents(lambda rows: len(rows) == args.pool and all(r.converged for r in rows), 300,
                          "the pool to be Ready")
        harness.log(f"pool of {args.pool} Ready; submitting {count} tasks")
        with harness.Watch(stack.kubectl, "agenttasks", "-n", stack.namespace, "--watch", "--no-headers",
                           "-o", "custom-columns=N:.metadata.name,P:.status.phase") as watch:
            writes_before = stack.apiserver_writes()
            cpu_before, submitted = stack.cpu_seconds_by_component(), time.monotonic()
            with ThreadPoolExecutor(SUBMITTERS) as submitters:
                list(submitters.map(stack.create, tasks_manifests(count, stack.namespace, "workers", SUBMITTERS)))
            submit_s = time.monotonic() - submitted
            stack.wait(lambda: len(first_times(watch)[2]) == count, 120 + count,
                       f"{count} finished tasks", interval=1)
            seen, dispatched, finished, phases = first_times(watch)
            # Where the time goes: is a piece (or the whole machine) CPU-bound, or waiting on round trips?
            cpu = harness.cpu_percent(cpu_before, stack.cpu_seconds_by_component(), time.monotonic() - submitted)
            writes = harness.delta(writes_before, stack.apiserver_writes())  # the tasks' creation included
        calls = stack.e2b_calls()  # since the operator started: pool set-up included

    window = max(finished.values()) - min(seen.values())
    throughput = count / window
    latencies = [dispatched[name] - seen[name] for name in seen]
    figures = {"tasks": count, "pool": args.pool, "max_concurrent_tasks": args.max_concurrent,
               "task_seconds": args.task_seconds, "capacity_per_s": capacity, "submit_s": submit_s,
               "window_s": window, "throughput_per_s": throughput,
               "succeeded": sum(phase == "Succeeded" for phase in phases.values()),
               "dispatch_p50_s": harness.percentile(latencies, 0.5),
               "dispatch_p95_s": harness.percentile(latencies, 0.95),
               "dispatch_max_s": max(latencies), "operator_e2b_calls": calls,
               "apiserver_writes_per_task": {k: round(v / count, 2) for k, v in sorted(writes.items())},
               "cpu_percent_of_a_core": cpu, "cores": os.cpu_count()}
    harness.report("tasks", figures, [
        harness.Target("throughput / capacity", throughput / capacity, TARGET_SHARE, "", higher_is_better=True),
    ])


if __name__ == "__main__":
    main()
