"""The same surface through AsyncSandbox."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from e2b import AsyncSandbox, CommandExitException, SandboxQuery, SandboxState
from e2b.exceptions import AuthenticationException, SandboxNotRunningException, TimeoutException


async def test_async_lifecycle_commands_and_files():
    run = uuid.uuid4().hex
    box = await AsyncSandbox.create(timeout=60, metadata={"run": run, "path": "x y/z"}, envs={"A": "1"})
    try:
        assert (await box.commands.run("echo $A")).stdout == "1\n"
        with pytest.raises(CommandExitException):
            await box.commands.run("exit 2")
        await box.files.write("/home/user/f.txt", "async")
        assert await box.files.read("/home/user/f.txt") == "async"
        assert [e.name for e in await box.files.list("/home/user")] == ["f.txt"]
        assert await box.files.exists("/home/user/nope") is False

        paginator = AsyncSandbox.list(query=SandboxQuery(metadata={"run": run, "path": "x y/z"}))
        assert [s.sandbox_id for s in await paginator.next_items()] == [box.sandbox_id]

        handle = await box.commands.run("sleep 30", background=True, timeout=0)
        assert handle.pid in [p.pid for p in await box.commands.list()]

        assert await box.pause() is True
        assert (await box.get_info()).state == SandboxState.PAUSED
        assert await box.is_running() is False
        with pytest.raises(SandboxNotRunningException):
            await box.commands.run("true")
        resumed = await AsyncSandbox.connect(box.sandbox_id, timeout=60)
        assert handle.pid in [p.pid for p in await resumed.commands.list()]
        assert await resumed.commands.kill(handle.pid) is True
        await resumed.set_timeout(120)
    finally:
        assert await box.kill() is True
    assert await AsyncSandbox.kill(box.sandbox_id) is False


async def test_async_command_timeout_and_concurrency():
    box = await AsyncSandbox.create(timeout=60)
    try:
        with pytest.raises(TimeoutException):
            await box.commands.run("sleep 30", timeout=1)
        results = await asyncio.gather(*(box.commands.run(f"echo {i}") for i in range(5)))
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(5)]
    finally:
        await box.kill()


async def test_async_wrong_key():
    with pytest.raises(AuthenticationException):
        await AsyncSandbox.create(api_key="e2b_wrong")


async def test_pause_interrupts_a_running_command_and_kill_too():
    box = await AsyncSandbox.create(timeout=60)
    try:
        running = asyncio.create_task(box.commands.run("sleep 30", timeout=20))
        await asyncio.sleep(0.5)
        await box.pause()
        with pytest.raises(SandboxNotRunningException):
            await asyncio.wait_for(running, 10)
        resumed = await AsyncSandbox.connect(box.sandbox_id)
        running = asyncio.create_task(resumed.commands.run("sleep 30", timeout=20))
        await asyncio.sleep(0.5)
    finally:
        await box.kill()
    with pytest.raises(SandboxNotRunningException):
        await asyncio.wait_for(running, 10)
