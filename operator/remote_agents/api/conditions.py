"""Reading an object's conditions (as the API returns it, a dict). Pure."""

from __future__ import annotations

from typing import Any


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The condition of type `kind`, or {} when the object has none."""
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def is_current(obj: dict[str, Any], kind: str) -> bool:
    """The condition is True and was computed for the object's current spec."""
    found = condition(obj, kind)
    return found.get("status") == "True" and \
        found.get("observedGeneration", 0) >= obj["metadata"].get("generation", 0)
