"""sandbox-exec (sandbox_exec.c) on its own: built once per version, and it refuses clearly."""

from __future__ import annotations

import subprocess
from pathlib import Path

from remote_agents_local.e2b_local.isolation import build_exec_helper


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
