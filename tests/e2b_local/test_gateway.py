"""The operator's SandboxGateway (the one owner of E2B calls) through the real SDK against e2b-local."""

from __future__ import annotations

import asyncio
import uuid

from remote_agents.api.names import SANDBOX_UID_KEY
from remote_agents.controller.clients.e2b import SandboxGateway
from remote_agents.controller.sandboxes import OPERATOR_ACCOUNT, CommandOutcome
from remote_agents.controller.settings import GatewaySettings


async def test_create_is_idempotent_and_sandboxes_are_found_by_metadata():
    gateway = SandboxGateway(GatewaySettings(creates_per_second=100, calls_per_second=100))
    uid = str(uuid.uuid4())
    metadata = {SANDBOX_UID_KEY: uid}
    first = await gateway.create(template="base", timeout_seconds=120, metadata=metadata, idempotency_key=uid,
                                 account=OPERATOR_ACCOUNT)
    again = await gateway.create(template="base", timeout_seconds=120, metadata=metadata, idempotency_key=uid,
                                 account=OPERATOR_ACCOUNT)
    try:
        assert again == first  # a retried create (lost answer, operator crash) never makes a second sandbox
        assert [s.sandbox_id for s in await gateway.list(metadata, OPERATOR_ACCOUNT)] == [first.sandbox_id]
    finally:
        await gateway.kill(first)
    assert await gateway.list(metadata, OPERATOR_ACCOUNT) == []


async def test_long_in_sandbox_commands_do_not_hold_the_api_slots():
    # One E2B API call at a time, yet a short command in one sandbox is not held up by a long one
    # in another: in-sandbox calls have their own bound.
    gateway = SandboxGateway(GatewaySettings(max_concurrency=1, creates_per_second=100, calls_per_second=100))
    keys = [str(uuid.uuid4()) for _ in range(2)]
    slow, quick = [await gateway.create(template="base", timeout_seconds=120, metadata={SANDBOX_UID_KEY: key},
                                        idempotency_key=key, account=OPERATOR_ACCOUNT) for key in keys]
    try:
        long_setup = asyncio.create_task(gateway.run(slow, "sleep 20; echo slow", envs={}, cwd=None,
                                                     timeout_seconds=60))
        await asyncio.sleep(0.5)
        outcome = await gateway.run(quick, "echo quick", envs={}, cwd=None, timeout_seconds=60)
        assert outcome.stdout == "quick\n"
        assert not long_setup.done()
        assert (await gateway.list({SANDBOX_UID_KEY: keys[1]}, OPERATOR_ACCOUNT))[0].sandbox_id == quick.sandbox_id
        assert not long_setup.done()  # API calls are not held up either
        long_setup.cancel()
    finally:
        for sandbox in (slow, quick):
            await gateway.kill(sandbox)


async def test_a_command_that_exits_non_zero_is_an_outcome_with_its_output():
    # The SDK raises e2b.CommandExitException for a non-zero exit; the gateway turns it into the
    # step's outcome (exit code, stdout, stderr), which the reconciler reports as SetupFailed.
    gateway = SandboxGateway(GatewaySettings(creates_per_second=100, calls_per_second=100))
    key = str(uuid.uuid4())
    sandbox = await gateway.create(template="base", timeout_seconds=120, metadata={SANDBOX_UID_KEY: key},
                                   idempotency_key=key, account=OPERATOR_ACCOUNT)
    try:
        outcome = await gateway.run(sandbox, "echo partial; echo 'no such package' >&2; exit 3", envs={},
                                    cwd=None, timeout_seconds=60)
        assert outcome == CommandOutcome(3, "partial\n", "no such package\n")
        # The sandbox is still usable afterwards: the failure was the command's, not the connection's.
        assert (await gateway.run(sandbox, "echo fine", envs={}, cwd=None, timeout_seconds=60)).exit_code == 0
    finally:
        await gateway.kill(sandbox)
