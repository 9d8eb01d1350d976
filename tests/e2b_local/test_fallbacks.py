"""The documented fallbacks, exercised directly: path-mapping isolation, signal-based pause and
commands entering their sandbox without the exec helper (the server picks them only where mount
namespaces / a writable cgroup v2 / a C compiler are missing)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from e2b.envd.process import process_pb

from remote_agents_local.e2b_local.freezer import SignalFreezer
from remote_agents_local.e2b_local.isolation import CommandWrapper, SandboxFiles, build_exec_helper
from remote_agents_local.e2b_local.processes import ProcessTable


def test_path_mapping(tmp_path: Path):
    files = SandboxFiles(tmp_path / "sbx")
    assert files.to_host("/home/user/a/b") == tmp_path / "sbx/home/user/a/b"
    assert files.to_host("rel/x") == tmp_path / "sbx/home/user/rel/x"
    assert files.to_host("/tmp/t") == tmp_path / "sbx/tmp/t"
    assert files.to_host("/home/user/../../etc/passwd") == Path("/etc/passwd")
    assert files.to_host("/usr/bin") == Path("/usr/bin")
    assert files.to_sandbox(tmp_path / "sbx/home/user/a") == "/home/user/a"


async def _output(table: ProcessTable, cmd: str) -> str:
    managed = await table.start(process_pb.ProcessConfig(cmd="/bin/bash", args=["-c", cmd]),
                                tag=None, stdin=False, deadline_seconds=10)
    chunks = []
    async for event in managed.events(None):
        if event.event.field == "data":
            chunks.append(event.event.value.output.value)
    return b"".join(chunks).decode()


async def test_path_mapping_commands_and_signal_pause(tmp_path: Path):
    files = SandboxFiles(tmp_path / "sbx")
    files.create()
    table = ProcessTable(files, CommandWrapper(namespaces=False), cgroup_procs=lambda: None,
                         env=lambda: {"PATH": "/usr/bin:/bin"})
    assert await _output(table, "pwd; echo $HOME; echo hi > x") == f"{files.root}/home/user\n" * 2
    assert (files.root / "home/user/x").read_text() == "hi\n"

    counter = await table.start(
        process_pb.ProcessConfig(cmd="/bin/bash", args=["-c", "while true; do date +%s%N > n; sleep 0.05; done"]),
        tag=None, stdin=False, deadline_seconds=None)
    await asyncio.sleep(0.3)
    freezer = SignalFreezer()
    freezer.freeze("sbx", table.process_groups())
    await asyncio.sleep(0.2)
    frozen = (files.root / "home/user/n").read_text()
    await asyncio.sleep(0.4)
    assert (files.root / "home/user/n").read_text() == frozen
    freezer.thaw("sbx", table.process_groups())
    await asyncio.sleep(0.4)
    assert (files.root / "home/user/n").read_text() != frozen
    assert counter.pid in table.running
    freezer.kill_all("sbx", table.process_groups())
    await asyncio.wait_for(counter.finished.wait(), 5)


async def test_without_the_exec_helper_commands_enter_through_a_shell_and_nsenter(tmp_path: Path):
    files = SandboxFiles(tmp_path / "sbx")
    files.create()
    wrapper = CommandWrapper(namespaces=True, exec_helper=None)
    table = ProcessTable(files, wrapper, cgroup_procs=lambda: None, env=lambda: {"PATH": "/usr/bin:/bin"})
    try:
        assert await _output(table, "pwd; ls /home; echo hi > /home/user/x") == "/home/user\nuser\n"
        assert (files.root / "home/user/x").read_text() == "hi\n"
    finally:
        wrapper.release(files)


def test_the_exec_helper_is_built_once_and_reports_what_it_cannot_do(tmp_path: Path):
    helper = build_exec_helper(tmp_path)
    assert helper is not None, "no C compiler: e2b-local would fall back to a shell and nsenter per command"
    built = helper.stat().st_mtime_ns
    assert build_exec_helper(tmp_path) == helper and helper.stat().st_mtime_ns == built
    ran = subprocess.run([str(helper), "", "", str(tmp_path), "pwd"], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout == f"{tmp_path}\n"
    lost = subprocess.run([str(helper), "", "", str(tmp_path / "missing"), "pwd"], capture_output=True, text=True)
    assert lost.returncode == 126 and "missing: No such file or directory" in lost.stderr
