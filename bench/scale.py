"""Scale an AgentPool from 0 to N agents and time it until every agent is Ready.

    python bench/scale.py [--small] [--agents N] [--sequential-sample K]

Compared with (a) the ideal the configured E2B create rate allows,
n / creates_per_second + create latency + per-agent setup (target: within 1.2x), and (b) the
seed's orchestrator, which created and checked out agents one by one through the e2b SDK: K of
those are timed here and extrapolated to N. The operator runs with
REMOTE_AGENTS_E2B_CREATES_PER_SECOND=5 (the default, 1/s, is E2B Hobby's limit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import harness
from remote_agents.controller.agents.decide import AGENT_HOME
from remote_agents.controller.sources import git

CREATES_PER_SECOND = 5.0
CREATE_LATENCY = 1.0  # matches harness.E2B_LATENCY_ARGS
TARGET_RATIO = 1.2


def sequential_baseline(stack: harness.Stack, count: int) -> dict[str, float]:
    """The seed's way: create, then check out, one agent after the other."""
    from e2b import Sandbox  # the SDK reads E2B_* from the environment set below

    os.environ.update(stack.e2b.env)
    revision = stack.head()
    script = git.checkout_script(stack.repo.url, revision, AGENT_HOME)
    creates, checkouts, boxes = [], [], []
    for _ in range(count):
        started = time.monotonic()
        box = Sandbox.create(timeout=600)
        created = time.monotonic()
        box.commands.run(script, timeout=120)
        creates.append(created - started)
        checkouts.append(time.monotonic() - created)
        boxes.append(box)
    for box in boxes:
        box.kill()
    per_agent = statistics.mean(c + s for c, s in zip(creates, checkouts))
    return {"create_s_median": statistics.median(creates), "checkout_s_median": statistics.median(checkouts),
            "per_agent_s_mean": per_agent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="20 agents instead of 100")
    parser.add_argument("--agents", type=int)
    parser.add_argument("--sequential-sample", type=int, default=10)
    args = parser.parse_args()
    agents = args.agents or (20 if args.small else 100)

    env = {"REMOTE_AGENTS_E2B_CREATES_PER_SECOND": str(CREATES_PER_SECOND)}
    with harness.Stack("scale", operator_env=env, max_running=agents + args.sequential_sample + 10) as stack:
        harness.log(f"sequential baseline: {args.sequential_sample} agents through the SDK")
        baseline = sequential_baseline(stack, args.sequential_sample)

        stack.apply(harness.pool_manifest("fleet", stack.namespace, stack.repo.url, 0))
        creates_before = stack.e2b_creates()
        harness.log(f"scaling the pool 0 -> {agents}")
        started = time.monotonic()
        stack.kubectl.run("scale", "agentpool/fleet", "-n", stack.namespace, f"--replicas={agents}")
        milestones: dict[str, float] = {}

        def all_ready(rows: list[harness.AgentRow]) -> bool:
            ready = sum(row.converged for row in rows)
            for share in (25, 50, 75, 100):
                if ready >= agents * share / 100 and f"{share}%" not in milestones:
                    milestones[f"{share}%"] = round(time.monotonic() - started, 2)
            return ready == agents and len(rows) == agents

        elapsed = stack.wait_agents(all_ready, 60 + agents * 3, f"{agents} Ready agents") - started
        creates = stack.e2b_creates() - creates_before
        calls = stack.e2b_calls()
        # Summed over all waiting calls: shows which of the two token buckets held the agents back.
        rate_wait = {bucket: stack.operator_metric("remote_agents_e2b_rate_limit_wait_seconds_total", bucket=bucket)
                     for bucket in ("creates", "calls")}

    ideal = agents / CREATES_PER_SECOND + CREATE_LATENCY + baseline["checkout_s_median"]
    sequential = baseline["per_agent_s_mean"] * agents
    figures = {"agents": agents, "creates_per_second": CREATES_PER_SECOND, "time_to_all_ready_s": elapsed,
               "ready_milestones_s": milestones, "ideal_s": ideal, "e2b_creates": creates,
               "operator_e2b_calls": calls, "operator_rate_limit_wait_s": rate_wait,
               "sequential_sample": args.sequential_sample, **{f"sequential_{k}": v for k, v in baseline.items()},
               "sequential_extrapolated_s": sequential, "speedup_vs_sequential": sequential / elapsed}
    harness.report("scale", figures, [
        harness.Target("time to all Ready / ideal", elapsed / ideal, TARGET_RATIO, "x"),
    ])


if __name__ == "__main__":
    main()
