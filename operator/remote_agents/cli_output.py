"""How `remote-agents get` prints objects: a table (wide adds why), a kubectl-style List as JSON or
YAML, or kind/name lines. Pure: objects in, text out."""

from __future__ import annotations

import json
import time
from typing import Any

import yaml

from remote_agents.api.names import GROUP, POOL_LABEL
from remote_agents.api.timestamps import epoch
from remote_agents.api.conditions import condition, is_current

OUTPUTS = ("table", "wide", "json", "yaml", "name")
HEADER = ["KIND", "NAMESPACE", "NAME", "PHASE", "READY", "AGENT/SANDBOX", "REVISION", "AGE", "NOTES"]
WIDE_HEADER = HEADER + ["REASON", "MESSAGE"]
COLUMN_GAP = "   "


def age(timestamp: str | None, now: float | None = None) -> str:
    if not timestamp:
        return "?"
    seconds = int((time.time() if now is None else now) - epoch(timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _agent_cells(agent: dict[str, Any]) -> list[str]:
    status = agent.get("status") or {}
    pool = (agent["metadata"].get("labels") or {}).get(POOL_LABEL)
    return [status.get("phase") or "-", str(is_current(agent, "Ready")),
            status.get("sandboxID") or "-", status.get("shortRevision") or "-", f"pool {pool}" if pool else ""]


def _pool_cells(pool: dict[str, Any]) -> list[str]:
    status = pool.get("status") or {}
    ready = f"{status.get('readyReplicas', 0)}/{pool['spec'].get('replicas', 0)}"
    phase = "Paused" if pool["spec"].get("paused") else ("Ready" if is_current(pool, "Ready") else "Progressing")
    return [phase, ready, "-", "-", f"updated {status.get('updatedReplicas', 0)}"]


def _task_cells(task: dict[str, Any]) -> list[str]:
    status = task.get("status") or {}
    spec = task["spec"]
    target = f"agent {spec['agentRef']['name']}" if spec.get("agentRef") else f"pool {spec['poolRef']['name']}"
    phase = status.get("phase") or "Pending"
    if status.get("duration"):
        target += f", took {status['duration']}"
    elif phase == "Pending" and condition(task, "Ready").get("reason"):
        target += f", waiting: {condition(task, 'Ready')['reason']}"
    return [phase, "-", status.get("agent") or "-", "-", target]


_CELLS = {"RemoteAgent": _agent_cells, "AgentPool": _pool_cells, "AgentTask": _task_cells}


def row(obj: dict[str, Any], wide: bool = False, now: float | None = None) -> list[str]:
    """The table cells of one object, in HEADER (or WIDE_HEADER) order."""
    meta = obj["metadata"]
    phase, ready, where, revision, notes = _CELLS[obj["kind"]](obj)
    cells = [obj["kind"], meta["namespace"], meta["name"], phase, ready, where, revision,
             age(meta.get("creationTimestamp"), now), notes]
    if wide:
        ready_condition = condition(obj, "Ready")
        cells += [ready_condition.get("reason") or "-", ready_condition.get("message") or ""]
    return cells


def format_line(cells: list[str], widths: list[int]) -> str:
    return COLUMN_GAP.join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()


def table(objects: list[dict[str, Any]], wide: bool = False, now: float | None = None) -> str:
    lines = [WIDE_HEADER if wide else HEADER] + [row(obj, wide, now) for obj in objects]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(format_line(line, widths) for line in lines)


def name(obj: dict[str, Any]) -> str:
    """kubectl's -o name: resource.group/name."""
    return f"{obj['kind'].lower()}.{GROUP}/{obj['metadata']['name']}"


def as_list(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """What `kubectl get -o json` prints for several kinds: a v1 List."""
    return {"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}}


def render(objects: list[dict[str, Any]], output: str, now: float | None = None) -> str:
    if output in ("table", "wide"):
        return table(objects, output == "wide", now)
    if output == "json":
        return json.dumps(as_list(objects), indent=4)
    if output == "yaml":
        return yaml.safe_dump(as_list(objects), sort_keys=False).rstrip("\n")
    if output == "name":
        return "\n".join(name(obj) for obj in objects)
    raise ValueError(f"unknown output format {output!r}")


def render_change(obj: dict[str, Any], output: str, widths: list[int], now: float | None = None) -> str:
    """One watched change: a table row aligned under the header printed first, a name, or a
    whole object (JSON on one line per object like kubectl's; YAML as a document)."""
    if output in ("table", "wide"):
        return format_line(row(obj, output == "wide", now), widths)
    if output == "json":
        return json.dumps(obj)
    if output == "yaml":
        return "---\n" + yaml.safe_dump(obj, sort_keys=False).rstrip("\n")
    return name(obj)


def watch_widths(wide: bool) -> list[int]:
    """Fixed column widths while watching (rows arrive one by one): wide enough for usual values."""
    widths = [11, 16, 24, 11, 5, 24, 12, 4, 30]
    return widths + [18, 40] if wide else widths
