"""Cancel many running AgentTasks at once: how long until each is gone, and what is left running.

    python bench/task_control.py [--pool 4] [--max-concurrent 5] [--ignore-term]

Every task runs two sleeps of 600 s (with --ignore-term the command and its children ignore
SIGTERM, so only the SIGKILL after the 5 s grace ends them). Once all run, one
`kubectl delete --all --wait=false` deletes them; back-to-back `kubectl get`s time each from the
delete to the first list without it (client-side, so each figure is up to one list late). Then
`ps` in every sandbox counts what is left of them (target 0), and one more task per agent shows
the slots are free again.
"""

from __future__ import annotations

import argparse
import json
import time

import harness
from tests.e2e.test_agent_task import task_manifest  # the e2e tests' AgentTask
from tests.support.e2b_client import E2BClient

CANCEL_TARGET_S = 10  # SIGKILL comes 5 s after SIGTERM: the slowest cancel, plus a few seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--max-concurrent", type=int, default=5, help="maxConcurrentTasks of each agent")
    parser.add_argument("--ignore-term", action="store_true", help="commands that ignore SIGTERM")
    args = parser.parse_args()
    count = args.pool * args.max_concurrent
    trap = "trap '' TERM; " if args.ignore_term else ""
    command = f'{trap}case "$AGENT_QUERY" in after*) echo free;; *) sleep 601 & sleep 602; wait;; esac'

    with harness.Stack("task_control", max_running=args.pool + 5) as stack:
        stack.apply(harness.pool_manifest("workers", stack.namespace, stack.repo.url, args.pool,
                                          maxConcurrentTasks=args.max_concurrent, query={"command": command}))
        stack.wait_agents(lambda rows: len(rows) == args.pool and all(r.converged for r in rows), 300,
                          "the pool to be Ready")
        items = [json.loads(task_manifest(f"task-{i}", stack.namespace, f"query {i}", pool="workers", timeout=900))
                 for i in range(count)]
        stack.create(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

        def phases() -> list[str]:
            out = stack.kubectl.run("get", "agenttasks", "-n", stack.namespace, "--no-headers",
                                    "-o", "custom-columns=P:.status.phase").stdout
            return out.split()
        stack.wait(lambda: phases() == ["Running"] * count, 120, f"{count} running tasks")
        e2b = E2BClient(stack.e2b.env)
        sandboxes = [s.sandbox_id for s in e2b.sandboxes()]
        time.sleep(2)  # every runner past its pid file
        harness.log(f"{count} tasks running on {len(sandboxes)} sandboxes; deleting them all")
        names = {item["metadata"]["name"] for item in items}
        gone: dict[str, float] = {}
        deleted_at = time.monotonic()
        stack.kubectl.run("delete", "agenttasks", "--all", "-n", stack.namespace, "--wait=false")
        while len(gone) < count and time.monotonic() < deleted_at + 120:
            there = set(stack.kubectl.run("get", "agenttasks", "-n", stack.namespace, "--no-headers",
                                          "-o", "custom-columns=N:.metadata.name").stdout.split())
            gone.update({name: time.monotonic() - deleted_at for name in names - there - gone.keys()})
        assert len(gone) == count, f"still there after 120 s: {sorted(names - gone.keys())}"
        left = sum(e2b.connect(s).commands.run("ps -eo args").stdout.count("sleep 60") for s in sandboxes)
        after = [json.loads(task_manifest(f"after-{i}", stack.namespace, "after", pool="workers"))
                 for i in range(args.pool)]
        stack.create(json.dumps({"apiVersion": "v1", "kind": "List", "items": after}))
        stack.wait(lambda: phases() == ["Succeeded"] * args.pool, 120, "the tasks after the cancel")

    seconds = list(gone.values())
    figures = {"tasks": count, "pool": args.pool, "max_concurrent_tasks": args.max_concurrent,
               "ignore_term": args.ignore_term, "cancel_p50_s": harness.percentile(seconds, 0.5),
               "cancel_p95_s": harness.percentile(seconds, 0.95), "cancel_max_s": max(seconds),
               "processes_left": left}
    harness.report("task_control_ignore_term" if args.ignore_term else "task_control", figures, [
        harness.Target("slowest cancel", max(seconds), CANCEL_TARGET_S, "s"),
        harness.Target("processes left", left, 0, ""),
    ])


if __name__ == "__main__":
    main()
