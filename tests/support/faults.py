"""Failures scheduled into the in-memory fakes (fake_kube.py, fake_e2b.py).

A fault fails one call of one operation: *before* it takes effect (the service refused or was
unreachable: nothing changed), or *after* it (the change happened, then the caller never learnt of
it: a lost answer, or the operator process dying right there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class OperatorCrashed(Exception):
    """Stands for the operator process dying mid-step. The orchestrators catch only the errors of
    their clients, so this goes up to the test, which then starts a fresh operator (no memory)
    on the same fakes."""


@dataclass
class Fault:
    operation: str
    error: BaseException
    after: bool
    times: int
    when: Callable[..., bool] | None


class Faults:
    def __init__(self) -> None:
        self._pending: list[Fault] = []

    def add(self, operation: str, error: BaseException, *, after: bool = False, times: int = 1,
            when: Callable[..., bool] | None = None) -> None:
        """Fail the next `times` calls of `operation` (the fake's method name) whose details
        satisfy `when(**details)`, with `error`: before they take effect, or `after`."""
        self._pending.append(Fault(operation, error, after, times, when))

    def check(self, operation: str, after: bool, **details: Any) -> None:
        """Raise the first fault scheduled for this call at this point, if any."""
        for fault in self._pending:
            if fault.operation == operation and fault.after == after and (
                    fault.when is None or fault.when(**details)):
                fault.times -= 1
                if fault.times == 0:
                    self._pending.remove(fault)
                raise fault.error

    @property
    def pending(self) -> list[Fault]:
        """Faults not triggered yet (a test can assert its fault was reached)."""
        return list(self._pending)
