"""`remote-agents query` and `remote-agents get`: the orchestrator client from a shell."""

from __future__ import annotations

import argparse
import queue
import sys
import threading
from collections.abc import Iterator
from typing import Any

from remote_agents import cli_output
from remote_agents.api.names import AGENTS, POOLS, TASKS
from remote_agents.api.conditions import condition
from remote_agents.client import FINISHED, OrchestratorError, RemoteAgentOrchestrator

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
        orchestrator = RemoteAgentOrchestrator(namespace=args.namespace, context=args.context)
        task = orchestrator.submit_task(args.question, agent=args.agent, pool=args.pool, timeout=args.timeout,
                                        session=args.session, priority=args.priority, retries=args.retries)
        if args.follow:
            return _print_output(orchestrator, task, follow=True, on_progress=Progress())
        result = orchestrator.wait_tasks([task], args.timeout, on_progress=Progress())[0]
    except OrchestratorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(result["output"])
    if not result["success"]:
        print(f"task {result['task']} failed ({result['reason']}): {result['error']}", file=sys.stderr)
        return 1
    return 0


def cancel(args: argparse.Namespace) -> int:
    try:
        orchestrator = RemoteAgentOrchestrator(namespace=args.namespace, context=args.context)
        for name in args.tasks:
            orchestrator.cancel_task(name, timeout=args.timeout)
            print(f"agenttask/{name} cancelled")
    except OrchestratorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


# ---- logs -------------------------------------------------------------------------------------
def _print_output(orchestrator: RemoteAgentOrchestrator, task: str, follow: bool,
                  on_progress: Progress | None = None) -> int:
    """The run's stdout on stdout and its stderr on stderr, as it is written (after the lines of
    `on_progress` while it waits to start); then, when the task has ended, its exit code (1 for a
    run that ended without one)."""
    for stream, line in orchestrator.follow_task(task, follow=follow, on_progress=on_progress):
        print(line, end="", file=sys.stdout if stream == "stdout" else sys.stderr, flush=True)
    if not follow and (orchestrator.get_task(task).get("status") or {}).get("phase") not in FINISHED:
        return 0  # still running: what it has written so far
    result = orchestrator.task_result(task)
    if not result["success"] and result["exit_code"] in (None, 0):
        print(f"task {result['task']} failed ({result['reason']}): {result['error']}", file=sys.stderr)
        return 1
    return result["exit_code"] or 0


def logs(args: argparse.Namespace) -> int:
    try:
        orchestrator = RemoteAgentOrchestrator(namespace=args.namespace, context=args.context)
        return _print_output(orchestrator, args.task, args.follow)
    except OrchestratorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# ---- get --------------------------------------------------------------------------------------
def objects(orchestrator: RemoteAgentOrchestrator, everywhere: bool) -> list[dict[str, Any]]:
    """Agents and pools by namespace and name, then the most recent tasks, newest first."""
    key = lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])  # noqa: E731
    newest_first = lambda o: o["metadata"].get("creationTimestamp") or ""  # noqa: E731
    found = []
    for plural in (AGENTS, POOLS):
        found += sorted(orchestrator.list_objects(plural, everywhere), key=key)
    return found + sorted(orchestrator.list_objects(TASKS, everywhere), key=newest_first, reverse=True)[:RECENT_TASKS]


def _changes(orchestrator: RemoteAgentOrchestrator, everywhere: bool) -> Iterator[dict[str, Any]]:
    """Every object of the three kinds as it is now, then each change, from one watch per kind
    (a thread each, since the client's watch blocks) until interrupted."""
    changed: queue.Queue = queue.Queue()

    def follow(plural: str) -> None:
        try:
            for event in orchestrator.watch_objects(plural, everywhere):
                changed.put(event["object"])
        except Exception as error:  # noqa: BLE001 - handed to the printing thread, which raises it
            changed.put(error)
    for plural in (AGENTS, POOLS, TASKS):
        threading.Thread(target=follow, args=(plural,), daemon=True).start()
    while True:
        item = changed.get()
        if isinstance(item, Exception):
            raise OrchestratorError(f"watch failed: {item}")
        yield item


def _watch(orchestrator: RemoteAgentOrchestrator, args: argparse.Namespace) -> None:
    if args.output in ("table", "wide"):
        widths = cli_output.watch_widths(args.output == "wide")
        header = cli_output.WIDE_HEADER if args.output == "wide" else cli_output.HEADER
        print(cli_output.format_line(header, widths), flush=True)
    else:
        widths = []
    for obj in _changes(orchestrator, args.all_namespaces):
        print(cli_output.render_change(obj, args.output, widths), flush=True)


def get(args: argparse.Namespace) -> int:
    try:
        orchestrator = RemoteAgentOrchestrator(namespace=args.namespace, context=args.context)
        if args.watch:
            _watch(orchestrator, args)
        else:
            found = objects(orchestrator, args.all_namespaces)
            if found or args.output not in ("table", "wide", "name"):
                print(cli_output.render(found, args.output))
            else:
                where = "any namespace" if args.all_namespaces else f"namespace {orchestrator.namespace}"
                print(f"No agents, pools or tasks found in {where}.", file=sys.stderr)
    except OrchestratorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
