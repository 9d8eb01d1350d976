"""SandboxGateway.list pages through everything or fails whole: a partial list never reaches the
fleet (which would take the sandboxes it misses for lost)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from e2b import exceptions as e2b_errors

from remote_agents.controller.clients import e2b as gateway_module
from remote_agents.controller.clients.e2b import E2BUnavailable, SandboxGateway
from remote_agents.controller.sandboxes import OPERATOR_ACCOUNT
from remote_agents.controller.settings import GatewaySettings

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def info(sandbox_id: str) -> SimpleNamespace:
    return SimpleNamespace(sandbox_id=sandbox_id, state=SimpleNamespace(value="running"), metadata={},
                           started_at=T0, end_at=T0)


class Pages:
    """A paginator over fixed pages; the pages listed in `failing` answer 503 on every try."""

    def __init__(self, pages: list[list[str]], failing: frozenset[int] = frozenset()):
        self.pages, self.failing, self.index = pages, failing, 0

    @property
    def has_next(self) -> bool:
        return self.index < len(self.pages)

    async def next_items(self):
        if self.index in self.failing:
            raise e2b_errors.ServiceBusyException("injected")
        self.index += 1
        return [info(i) for i in self.pages[self.index - 1]]


def listed(monkeypatch, paginator: Pages) -> list[str]:
    monkeypatch.setattr(gateway_module.AsyncSandbox, "list", lambda **_: paginator)
    gateway = SandboxGateway(GatewaySettings(max_attempts=2, backoff_base_seconds=0, calls_per_second=1000))
    return [s.sandbox_id for s in asyncio.run(gateway.list({}, OPERATOR_ACCOUNT))]


def test_every_page_is_read(monkeypatch):
    assert listed(monkeypatch, Pages([["a"], ["b"], ["c"]])) == ["a", "b", "c"]


def test_a_sandbox_shifted_onto_two_pages_counts_once(monkeypatch):
    assert listed(monkeypatch, Pages([["a", "b"], ["b", "c"]])) == ["a", "b", "c"]


@pytest.mark.parametrize("failing", [frozenset({0}), frozenset({2})])
def test_a_page_that_keeps_failing_fails_the_whole_list(monkeypatch, failing):
    with pytest.raises(E2BUnavailable):
        listed(monkeypatch, Pages([["a"], ["b"], ["c"]], failing))
