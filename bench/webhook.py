"""One signed GitHub push reaching a pool of agents: time until every agent reports the new revision.

    python bench/webhook.py [--small] [--agents N] [--pushes 5]

The operator runs with --ref-poll-interval 3600, so only the webhook can explain an update.
Each push is a new commit, delivered as a GitHub-format push signed with HMAC-SHA256; the
figures are p50/p95 over the pushes.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import time
import urllib.request
import uuid

import harness
from remote_agents_local import processes

SECRET = "whsec-bench-91c4"
GITHUB_TIMEOUT_S = 10  # GitHub gives up on a delivery after 10 s (and marks it failed)


def deliver(url: str, repo_url: str, commit: str) -> dict:
    """A signed GitHub push. Unlike the e2e tests' helper, this one waits up to a minute and
    does not hide a slow answer: how long the receiver takes is one of the figures."""
    body = json.dumps({"ref": "refs/heads/main", "after": commit, "deleted": False,
                       "repository": {"clone_url": repo_url, "full_name": "local/agent"}}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": signature})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="20 agents instead of 100")
    parser.add_argument("--agents", type=int)
    parser.add_argument("--pushes", type=int, default=5)
    args = parser.parse_args()
    agents = args.agents or (20 if args.small else 100)

    port = processes.free_port()
    url = f"http://127.0.0.1:{port}/webhooks/github"
    operator_args = ("--ref-poll-interval", "3600", "--webhook-port", str(port))
    env = {"GITHUB_WEBHOOK_SECRET": SECRET, "REMOTE_AGENTS_E2B_CREATES_PER_SECOND": "5"}
    with harness.Stack("webhook", operator_args=operator_args, operator_env=env, max_running=agents + 10) as stack:
        stack.apply(harness.pool_manifest("fleet", stack.namespace, stack.repo.url, agents))
        stack.wait_agents(lambda rows: len(rows) == agents and all(r.converged for r in rows), 60 + agents * 3,
                          f"{agents} Ready agents")
        harness.log(f"{agents} agents Ready; {args.pushes} pushes")
        latencies, responses, matched = [], [], []
        calls_before = stack.e2b_calls()
        for push in range(args.pushes):
            commit = stack.repo.commit({"agent.txt": f"version {push + 2}\n"}, f"push {push}")
            started = time.monotonic()
            matched.append(deliver(url, stack.repo.url, commit)["matched"])
            responses.append(time.monotonic() - started)
            done = stack.wait_agents(lambda rows: len(rows) == agents and all(r.revision == commit for r in rows),
                                     120 + agents, f"every agent at {commit[:12]}", interval=0.2)
            latencies.append(done - started)
            harness.log(f"push {push}: answered in {responses[-1]:.2f}s, all agents updated in {latencies[-1]:.2f}s")
        calls = harness.delta(calls_before, stack.e2b_calls())

    p50, p95 = harness.percentile(latencies, 0.5), harness.percentile(latencies, 0.95)
    figures = {"agents": agents, "pushes": args.pushes, "matched": matched, "latencies_s": latencies,
               "p50_s": p50, "p95_s": p95, "operator_e2b_calls_during_pushes": calls, "per_agent_ms_p50": p50 / agents * 1000,
               "response_s": responses, "response_max_s": max(responses)}
    harness.report("webhook", figures, [
        harness.Target("slowest answer to a delivery", max(responses), GITHUB_TIMEOUT_S, "s"),
    ])


if __name__ == "__main__":
    main()
