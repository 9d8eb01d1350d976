"""tasks/runner.py's cancel command in a real e2b-local sandbox, through the operator's gateway:
a run cancelled before its runner starts never starts, and a run that ignores SIGTERM is killed
with everything it started."""

from __future__ import annotations

import asyncio
import uuid

from remote_agents.api.names import SANDBOX_UID_KEY
from remote_agents.controller.clients.e2b import SandboxGateway
from remote_agents.controller.sandboxes import OPERATOR_ACCOUNT
from remote_agents.controller.settings import GatewaySettings
from remote_agents.controller.tasks import runner

STUBBORN = "trap '' TERM; sleep 313 & sleep 314; wait"


async def sandbox(gateway: SandboxGateway):
    key = str(uuid.uuid4())
    return await gateway.create(template="base", timeout_seconds=120, metadata={SANDBOX_UID_KEY: key},
                                idempotency_key=key, account=OPERATOR_ACCOUNT)


async def start(gateway: SandboxGateway, address, status: dict, command: str):
    return await gateway.start_background(address, runner.RUNNER,
                                          envs=runner.runner_env(status, "q", "/home/user", command))


async def test_a_run_cancelled_before_its_runner_starts_never_starts():
    gateway = SandboxGateway(GatewaySettings(creates_per_second=100, calls_per_second=100))
    address = await sandbox(gateway)
    status = {"runId": str(uuid.uuid4())}
    try:
        cancelled = await gateway.run(address, runner.cancel_command(status, 1), envs={}, cwd=None, timeout_seconds=30)
        assert cancelled.stdout == "stopped\n"
        await (await start(gateway, address, status, "echo started > /home/user/started")).wait()
        assert await gateway.read_file(address, "/home/user/started") is None
        assert await gateway.read_file(address, runner.run_file(status, "pid")) is None
    finally:
        await gateway.kill(address)


async def test_a_run_that_ignores_sigterm_is_killed_with_all_it_started():
    gateway = SandboxGateway(GatewaySettings(creates_per_second=100, calls_per_second=100))
    address = await sandbox(gateway)
    status = {"runId": str(uuid.uuid4())}
    try:
        handle = await start(gateway, address, status, STUBBORN)
        for _ in range(100):
            if "sleep 314" in (await gateway.run(address, "ps -eo args", envs={}, cwd=None, timeout_seconds=30)).stdout:
                break
            await asyncio.sleep(0.1)
        cancelled = await gateway.run(address, runner.cancel_command(status, 1), envs={}, cwd=None, timeout_seconds=30)
        assert cancelled.stdout == "stopped\n"
        left = (await gateway.run(address, "ps -eo args", envs={}, cwd=None, timeout_seconds=30)).stdout
        assert "sleep 313" not in left and "sleep 314" not in left, left
        ended = runner.exit_line((await handle.wait()).stdout)
        assert ended and int(ended[1]) == 128 + 9  # SIGKILL: SIGTERM was ignored
    finally:
        await gateway.kill(address)
