"""A running task's progress (status.progress): the last complete line its run wrote to stderr
and how many lines it has written, from the run's stderr file in the sandbox (pure rules).

Cheapest with how runs work: the command's stderr already goes to a file, so nothing is added to
the run (no tee, no process); a run is looked at only once it has run for an interval, and then
at most once an interval, with one file read next to the poll it gets anyway; status is written
only when the line or the count changed. A run shorter than the interval costs nothing until its
end, whose one status write carries its final progress.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

LINE_LIMIT = 256  # bytes of the line kept in status, cut after redaction


def due(now: float, started: float, last_read: float | None, interval: float) -> bool:
    """Whether a running run's stderr is worth reading now: `interval` after its start, then
    `interval` after the last read."""
    return now >= max(started, last_read or 0.0) + interval


def of(stderr: str, redact: Callable[[str], str]) -> dict[str, Any] | None:
    """{line, count} for a run whose stderr is `stderr` so far; None before its first complete line.
    Redacted as a whole before the line is taken and cut (a value spanning lines, or cut in two,
    leaves nothing behind); a line redrawn with carriage returns shows its last drawing."""
    end = stderr.rfind("\n")
    if end < 0:
        return None
    complete = redact(stderr[:end])
    line = complete[complete.rfind("\n") + 1:].rstrip("\r").rsplit("\r", 1)[-1]
    return {"line": line.encode()[:LINE_LIMIT].decode(errors="ignore"), "count": stderr.count("\n")}


def update(current: Mapping[str, Any] | None, stderr: str, redact: Callable[[str], str],
           now: str) -> dict[str, Any] | None:
    """The status.progress to write, or None when there is none yet or it is what status says."""
    fresh = of(stderr, redact)
    if fresh is None or (current and (current.get("line"), current.get("count")) == (fresh["line"], fresh["count"])):
        return None
    return {**fresh, "updateTime": now}
