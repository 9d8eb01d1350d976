"""Fixtures of the orchestrators' unit tests: the operator on in-memory fakes (tests/support/world.py)."""

from __future__ import annotations

import time

import pytest

from remote_agents.controller.tasks import controller as task_controller
from tests.support.world import Clock, World


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(time, "time", clock.time)
    return clock


@pytest.fixture
async def world(clock, monkeypatch) -> World:
    # The task loop's longest wait for news: short, so that a moved clock is looked at at once.
    monkeypatch.setattr(task_controller, "ROUND_SECONDS", 0.01)
    world = World(clock)
    yield world
    await world.close()
