"""sandbox-exec (sandbox_exec.c) on its own: built once per version, and it refuses clearly."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from remote_agents_local.e2b_local.isolation import (BoundaryConfig, BoundaryError, SandboxFiles, SandboxInit,
                                                     build_exec_helper, find_bwrap, write_identity_files)


def test_the_exec_helper_is_built_once_and_reports_what_it_cannot_do(tmp_path: Path):
    helper = build_exec_helper(tmp_path)
    built = helper.stat().st_mtime_ns
    assert build_exec_helper(tmp_path) == helper and helper.stat().st_mtime_ns == built
    ran = subprocess.run([str(helper), "--user", "0:0", "--cwd", str(tmp_path), "--", "pwd"],
                         capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout == f"{tmp_path}\n"
    lost = subprocess.run([str(helper), "--user", "0:0", "--cwd", str(tmp_path / "missing"), "--", "pwd"],
                          capture_output=True, text=True)
    assert lost.returncode == 126 and "missing: No such file or directory" in lost.stderr
    # As `user` (no capabilities, no_new_privs): not even a setuid binary gives root back.
    dropped = subprocess.run([str(helper), "--user", "201000:201000", "--cwd", "/", "--",
                              "sh", "-c", "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"],
                             capture_output=True, text=True)
    assert dropped.stdout.split() == ["201000", "CapEff:", "0000000000000000", "NoNewPrivs:", "1"]
    bad = subprocess.run([str(helper), "--bogus", "x", "--", "true"], capture_output=True, text=True)
    assert bad.returncode == 126 and "bad option --bogus" in bad.stderr


async def test_a_sandbox_killed_while_its_init_starts_leaves_nothing_behind(tmp_path: Path):
    passwd, group = write_identity_files(tmp_path)
    config = BoundaryConfig(helper=build_exec_helper(tmp_path), bwrap=find_bwrap(), uid_base=200000,
                            hidden=(), passwd=passwd, group=group)
    files = SandboxFiles(tmp_path / "sbx")
    files.create(config)
    init = SandboxInit(config, files, [], "test")
    starting = asyncio.create_task(init.ensure())
    await asyncio.sleep(0)  # the init is being spawned: its start has begun, not finished
    await init.stop()
    with pytest.raises(BoundaryError):
        await starting
    assert init.ns_fds == [] and init.root_fd is None and init.process is None
    with pytest.raises(BoundaryError):
        await init.ensure()  # and nothing starts it again
    # The half-started init (a child of this process) is gone, not left running.
    assert init.stopped
    deadline = time.monotonic() + 5
    while _running_children("bwrap") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _running_children("bwrap") == []


def _running_children(name: str) -> list[int]:
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue  # a thread that ended meanwhile
        for pid in children:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z" and name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                pass
    return found
