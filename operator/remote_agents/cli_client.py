"""`remote-agents query` and `remote-agents get`: the orchestrator client from a shell."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from remote_agents.api.names import AGENTS, POOL_LABEL, POOLS, TASKS
from remote_agents.api.timestamps import epoch
from remote_agents.client import (OrchestratorError, RemoteAgentOrchestrator,
                                  condition, is_current)

RECENT_TASKS = 20


# ---- query ------------------------------------------------------------------------------------
class Progress:
    """Prints a line on stderr each time the task's phase, wait reason or agent changes."""

    def __init__(self):
        self.last: tuple | None = None

    def __call__(self, task: dict[str, Any]) -> None:
        status = task.get("status") or {}
        phase = status.get("phase") or "Pending"
        ready = condition(task, "Ready")
        state = (phase, ready.get("reason") if phase == "Pending" else None, status.get("agent"))
        if state == self.last:
            return
        self.last = state
        name = task["metadata"]["name"]
        if phase == "Pending":
            why = f" ({ready['reason']}: {ready.get('message', '')})" if ready.get("reason") else ""
            line = f"{name}: Pending{why}"
        elif phase == "Running":
            line = f"{name}: Running on {status.get('agent')}"
        else:
            line = f"{name}: {phase} on {status.get('agent')} after {status.get('duration') or '?'}"
        print(line, file=sys.stderr, flush=True)


def query(args: argparse.Namespace) -> int:
    try:
        orchestrator = RemoteAgentOrchestrator(namespace=args.namespace)
        task = orchestrator.submit_task(args.question, agent=args.agent, pool=args.pool, timeout=args.timeout)
        result = orchestrator.wait_tasks([task], args.timeout, on_progress=Progress())[0]
    except OrchestratorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(result["output"])
    if not result["success"]:
        print(f"task {result['task']} failed ({result['reason']}): {result['error']}", file=sys.stderr)
        return 1
    return 0


# ---- get --------------------------------------------------------------------------------------
def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "?"
    seconds = int(time.time() - epoch(timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _agent_row(agent: dict[str, Any]) -> list[str]:
    status = agent.get("status") or {}
    pool = (agent["metadata"].get("labels") or {}).get(POOL_LABEL)
    return ["RemoteAgent", status.get("phase") or "-", str(is_current(agent, "Ready")),
            status.get("sandboxID") or "-", status.get("shortRevision") or "-", f"pool {pool}" if pool else ""]


def _pool_row(pool: dict[str, Any]) -> list[str]:
    status = pool.get("status") or {}
    ready = f"{status.get('readyReplicas', 0)}/{pool['spec'].get('replicas', 0)}"
    phase = "Paused" if pool["spec"].get("paused") else ("Ready" if is_current(pool, "Ready") else "Progressing")
    return ["AgentPool", phase, ready, "-", "-", f"updated {status.get('updatedReplicas', 0)}"]


def _task_row(task: dict[str, Any]) -> list[str]:
    status = task.get("status") or {}
    spec = task["spec"]
    target = f"agent {spec['agentRef']['name']}" if spec.get("agentRef") else f"pool {spec['poolRef']['name']}"
    phase = status.get("phase") or "Pending"
    if status.get("duration"):
        target += f", took {status['duration']}"
    elif phase == "Pending" and condition(task, "Ready").get("reason"):
        target += f", waiting: {condition(task, 'Ready')['reason']}"
    return ["AgentTask", phase, "-", status.get("agent") or "-", "-", target]


def table(orchestrator: RemoteAgentOrchestrator, everywhere: bool) -> str:
    key = lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])  # noqa: E731
    newest_first = lambda o: o["metadata"].get("creationTimestamp") or ""  # noqa: E731
    rows = []
    for plural, row in ((AGENTS, _agent_row), (POOLS, _pool_row)):
        rows += [(obj, row(obj)) for obj in sorted(orchestrator.list_objects(plural, everywhere), key=key)]
    tasks = sorted(orchestrator.list_objects(TASKS, everywhere), key=newest_first, reverse=True)[:RECENT_TASKS]
    rows += [(task, _task_row(task)) for task in tasks]
    header = ["KIND", "NAMESPACE", "NAME", "PHASE", "READY", "AGENT/SANDBOX", "REVISION", "AGE", "NOTES"]
    lines = [header] + [[kind, obj["metadata"]["namespace"], obj["metadata"]["name"], phase, ready, where,
                         revision, _age(obj["metadata"].get("creationTimestamp")), notes]
                        for obj, (kind, phase, ready, where, revision, notes) in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("   ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def get(args: argparse.Namespace) -> int:
    try:
        orchestrator = RemoteAgentOrchestrator(namespace=args.namespace)
        print(table(orchestrator, args.all_namespaces))
    except OrchestratorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
