"""kstatus conditions (Ready, Reconciling, Stalled) computed from an outcome. Pure.

A condition's lastTransitionTime moves only when its status flips, and the whole status is
compared before writing, so a reconcile that changes nothing writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from remote_agents.api.timestamps import now_rfc3339


@dataclass(frozen=True)
class Outcome:
    """What a reconcile concluded: ready or not, still working or stuck, and why."""

    ready: bool
    reason: str
    message: str
    reconciling: bool = False
    stalled: bool = False


def condition(kind: str, is_true: bool, reason: str, message: str, generation: int,
               previous: dict[str, dict[str, Any]]) -> dict[str, Any]:
    status = "True" if is_true else "False"
    before = previous.get(kind)
    changed = before is None or before.get("status") != status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now_rfc3339() if changed else before.get("lastTransitionTime", now_rfc3339()),
    }


def conditions_for(outcome: Outcome, generation: int, previous: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    by_type = {c.get("type"): c for c in previous or []}
    ready_reason = outcome.reason if not outcome.ready else (outcome.reason or "Ready")
    return [
        condition("Ready", outcome.ready, ready_reason, outcome.message, generation, by_type),
        condition("Reconciling", outcome.reconciling, outcome.reason if outcome.reconciling else "Idle",
                   outcome.message if outcome.reconciling else "", generation, by_type),
        condition("Stalled", outcome.stalled, outcome.reason if outcome.stalled else "Healthy",
                   outcome.message if outcome.stalled else "", generation, by_type),
    ]


def same_status(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """True when writing `desired` would change nothing visible (ignoring transition times)."""
    def comparable(status: dict[str, Any]) -> dict[str, Any]:
        conditions = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions") or []]
        return {**{k: v for k, v in status.items() if v is not None}, "conditions": conditions}
    return comparable({**current, **desired}) == comparable(current)


def status_update(current: dict[str, Any], outcome: Outcome, generation: int,
                  extra: tuple[tuple, ...] = (), **fields: Any) -> dict[str, Any] | None:
    """The status patch reporting `outcome` (the kstatus conditions, then `extra` ones given as
    (type, true?, reason) with the outcome's message, or (type, true?, reason, message)) with
    `fields` and observedGeneration; None when writing it would change nothing visible. Every
    kind's status writer goes through here."""
    previous = current.get("conditions") or []
    by_type = {c.get("type"): c for c in previous}
    conditions = conditions_for(outcome, generation, previous) + [
        condition(kind, is_true, reason, message[0] if message else outcome.message, generation, by_type)
        for kind, is_true, reason, *message in extra]
    desired = {**fields, "observedGeneration": generation, "conditions": conditions}
    return None if same_status(current, desired) else desired
