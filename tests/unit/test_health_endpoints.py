"""The operator's small HTTP endpoint tells a leader from a standby, and both from an unhealthy replica."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remote_agents.controller import metrics


@pytest.mark.parametrize("healthy, leading, health, leader", [
    (True, True, (200, "ok: leader"), (200, "leader")),
    (True, False, (200, "ok: standby"), (503, "standby")),  # a standby is ready: rollouts and drains need it
    (False, True, (503, "unhealthy"), (200, "leader")),
])
async def test_probes_name_the_role(healthy, leading, health, leader):
    application = metrics.app(healthy=lambda: healthy, leading=lambda: leading, refresh=lambda: None)
    async with TestClient(TestServer(application)) as client:
        for path in ("/healthz", "/readyz"):
            response = await client.get(path)
            assert (response.status, await response.text()) == health
        response = await client.get("/leader")
        assert (response.status, await response.text()) == leader
