"""SandboxGateway's in-sandbox calls: E2B answers one to a paused sandbox as to a killed one (502,
SandboxNotRunningException), so the gateway asks the control plane before it calls a sandbox
gone; a paused one is resumed by the next call's connect."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from e2b import exceptions as e2b_errors

from remote_agents.controller.clients import e2b as gateway_module
from remote_agents.controller.clients.e2b import SandboxGateway, SandboxGone, SandboxPaused
from remote_agents.controller.sandboxes import SandboxAddress
from remote_agents.controller.settings import GatewaySettings

ADDRESS = SandboxAddress("sbx-1")


class Sandbox:
    """E2B with one sandbox whose state a test sets: envd answers 502 unless it runs, and a
    connect resumes it."""

    def __init__(self, state: str):
        self.state = state
        self.connects = 0
        commands = SimpleNamespace(run=self._run)
        self.handle = SimpleNamespace(sandbox_id=ADDRESS.sandbox_id, commands=commands)

    async def connect(self, sandbox_id: str, timeout=None, **_):
        if self.state == "gone":
            raise e2b_errors.SandboxNotFoundException(f"Paused sandbox {sandbox_id} not found")
        self.connects += 1
        self.state = "running"
        return self.handle

    async def get_info(self, sandbox_id: str, **_):
        if self.state == "gone":
            raise e2b_errors.SandboxNotFoundException(f"Sandbox {sandbox_id} not found")
        return SimpleNamespace(sandbox_id=sandbox_id, state=SimpleNamespace(value=self.state))

    async def _run(self, command: str, **_):
        if self.state != "running":
            raise e2b_errors.SandboxNotRunningException("The sandbox was not found")
        return SimpleNamespace(pid=7)


def gateway_on(monkeypatch, sandbox: Sandbox) -> SandboxGateway:
    monkeypatch.setattr(gateway_module.AsyncSandbox, "connect", sandbox.connect)
    monkeypatch.setattr(gateway_module.AsyncSandbox, "get_info", sandbox.get_info)
    return SandboxGateway(GatewaySettings(max_attempts=1, backoff_base_seconds=0, calls_per_second=1000))


@pytest.mark.parametrize("then, raised", [("paused", SandboxPaused), ("gone", SandboxGone)])
def test_a_sandbox_not_running_under_a_held_handle_is_told_paused_from_gone(monkeypatch, then, raised):
    sandbox = Sandbox("running")
    gateway = gateway_on(monkeypatch, sandbox)

    async def scenario() -> None:
        await gateway.start_background(ADDRESS, "true", envs={})  # connects, and keeps the handle
        sandbox.state = then  # a pause (or a kill) that did not go through this gateway's handle
        with pytest.raises(raised):
            await gateway.start_background(ADDRESS, "true", envs={})
    asyncio.run(scenario())
    assert not issubclass(SandboxPaused, SandboxGone)


def test_the_call_after_a_paused_answer_connects_again_which_resumes_the_sandbox(monkeypatch):
    sandbox = Sandbox("running")
    gateway = gateway_on(monkeypatch, sandbox)

    async def scenario() -> None:
        await gateway.start_background(ADDRESS, "true", envs={})
        sandbox.state = "paused"
        with pytest.raises(SandboxPaused):
            await gateway.start_background(ADDRESS, "true", envs={})
        assert (await gateway.start_background(ADDRESS, "true", envs={})).pid == 7
    asyncio.run(scenario())
    assert sandbox.connects == 2 and sandbox.state == "running"
