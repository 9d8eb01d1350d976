"""Commands and files through the sync SDK, including pause/resume of live processes and
isolation between two sandboxes' /home/user."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import pytest
from e2b import Sandbox
from e2b import CommandExitException
from e2b.exceptions import NotFoundException, SandboxNotRunningException, TimeoutException

from tests.e2b_local.helpers import held_namespaces, wait_for

# Renamed into place, so a read never catches the file between truncation and write.
COUNTER = ("i=0; while true; do i=$((i+1)); echo $i > /home/user/count.new; mv /home/user/count.new /home/user/count; "
           "sleep 0.1; done")


def test_foreground_command_output_env_cwd_and_exit_code(sandbox: Sandbox):
    result = sandbox.commands.run("echo out; echo err >&2; echo $FOO; pwd", envs={"FOO": "bar"}, cwd="/tmp")
    assert result.exit_code == 0
    assert result.stdout == "out\nbar\n/tmp\n"
    assert result.stderr == "err\n"
    assert sandbox.commands.run("pwd; echo $HOME").stdout == "/home/user\n/home/user\n"
    with pytest.raises(CommandExitException) as caught:
        sandbox.commands.run("echo failing; exit 3")
    assert caught.value.exit_code == 3
    assert caught.value.stdout == "failing\n"


def test_background_list_connect_kill(sandbox: Sandbox):
    handle = sandbox.commands.run("for i in 1 2 3; do echo tick $i; touch /tmp/ticked; sleep 0.2; done; sleep 30",
                                  background=True, timeout=0)
    wait_for(lambda: sandbox.files.exists("/tmp/ticked"))  # its output has begun
    assert handle.pid in [p.pid for p in sandbox.commands.list()]
    listed = next(p for p in sandbox.commands.list() if p.pid == handle.pid)
    assert listed.cmd == "/bin/bash"
    attached = sandbox.commands.connect(handle.pid, timeout=10)
    assert sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException):
        sandbox.commands.run(f"kill -0 {handle.pid}")  # reaped by the time kill answers
    with pytest.raises(CommandExitException):
        attached.wait()
    wait_for(lambda: handle.pid not in [p.pid for p in sandbox.commands.list()])
    assert sandbox.commands.kill(handle.pid) is False
    with pytest.raises(CommandExitException) as caught:
        handle.wait()
    assert "tick 1" in caught.value.stdout


def test_stdin(sandbox: Sandbox):
    handle = sandbox.commands.run("cat", background=True, stdin=True, timeout=20)
    sandbox.commands.send_stdin(handle.pid, "hello ")
    handle.send_stdin(b"world\n")
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "hello world\n"


def test_command_timeout_kills_the_process(sandbox: Sandbox):
    with pytest.raises(TimeoutException):
        sandbox.commands.run("echo $$ > /home/user/pid; sleep 30", timeout=1)
    pid = int(sandbox.files.read("/home/user/pid"))
    wait_for(lambda: pid not in [p.pid for p in sandbox.commands.list()], timeout=5)
    # Background commands too: the deadline travels with the Start call.
    handle = sandbox.commands.run("sleep 30", background=True, timeout=1)
    wait_for(lambda: handle.pid not in [p.pid for p in sandbox.commands.list()], timeout=5)


def test_pause_freezes_processes_and_resume_continues_them(sandbox: Sandbox):
    handle = sandbox.commands.run(COUNTER, background=True, timeout=0)
    wait_for(lambda: sandbox.files.exists("/home/user/count") and int(sandbox.files.read("/home/user/count")) > 2)
    sandbox.pause()
    time.sleep(1.0)
    resumed = Sandbox.connect(sandbox.sandbox_id, timeout=60)
    after_pause = int(resumed.files.read("/home/user/count"))
    time.sleep(0.6)
    later = int(resumed.files.read("/home/user/count"))
    assert later > after_pause, "the counter did not continue after resume"
    assert handle.pid in [p.pid for p in resumed.commands.list()], "same pid after resume"
    # Frozen for the second it was paused: far fewer ticks than 10 per second would give.
    frozen_count = int(resumed.commands.run("cat /home/user/count").stdout)
    assert frozen_count < after_pause + 10
    resumed.commands.kill(handle.pid)


def test_files_api(sandbox: Sandbox):
    info = sandbox.files.write("/home/user/dir/a.txt", "alpha")
    assert info.path == "/home/user/dir/a.txt"
    sandbox.files.write_files([{"path": "/home/user/dir/b.bin", "data": b"\x00\x01"},
                               {"path": "rel.txt", "data": "relative"}])
    assert sandbox.files.read("/home/user/dir/b.bin", format="bytes") == bytearray(b"\x00\x01")
    assert sandbox.files.read("/home/user/rel.txt") == "relative"
    assert sorted(e.name for e in sandbox.files.list("/home/user/dir")) == ["a.txt", "b.bin"]
    assert {e.path for e in sandbox.files.list("/home/user", depth=2)} >= {"/home/user/dir/a.txt", "/home/user/rel.txt"}
    assert sandbox.files.exists("/home/user/dir/a.txt") is True
    assert sandbox.files.get_info("/home/user/dir").type.value == "dir"
    assert sandbox.files.make_dir("/home/user/new/deep") is True
    assert sandbox.files.make_dir("/home/user/new/deep") is False
    moved = sandbox.files.rename("/home/user/dir/a.txt", "/home/user/new/a.txt")
    assert moved.path == "/home/user/new/a.txt"
    sandbox.files.remove("/home/user/dir")
    assert sandbox.files.exists("/home/user/dir") is False
    sandbox.files.remove("/home/user/never-there")  # as envd: no error
    with pytest.raises(NotFoundException):
        sandbox.files.read("/home/user/missing")
    # Files written through the API are what commands see, and vice versa.
    assert sandbox.commands.run("cat /home/user/new/a.txt").stdout == "alpha"
    sandbox.commands.run("echo from-cmd > /tmp/cmd.txt")
    assert sandbox.files.read("/tmp/cmd.txt") == "from-cmd\n"


def test_two_sandboxes_do_not_share_home_or_tmp():
    first, second = Sandbox.create(timeout=60), Sandbox.create(timeout=60)
    try:
        first.commands.run("echo first > /home/user/who; touch /home/user/only-first /tmp/only-first")
        second.commands.run("echo second > /home/user/who")
        assert first.commands.run("cat /home/user/who").stdout == "first\n"
        assert second.commands.run("cat /home/user/who").stdout == "second\n"
        assert first.files.read("/home/user/who") == "first\n"
        assert second.files.read("/home/user/who") == "second\n"
        assert "only-first" not in second.commands.run("ls -a /home/user /tmp").stdout
        assert second.files.exists("/home/user/only-first") is False
    finally:
        first.kill()
        second.kill()


def test_a_sandbox_keeps_one_namespace_that_the_server_holds_until_it_ends(e2b_server):
    box = Sandbox.create(timeout=60)
    try:
        first = box.commands.run("readlink /proc/self/ns/mnt").stdout.strip()
        # Every command enters the same private namespace, which the server keeps as a descriptor.
        assert box.commands.run("readlink /proc/self/ns/mnt").stdout.strip() == first
        assert first != os.readlink("/proc/self/ns/mnt")
        assert first in held_namespaces(e2b_server.pid)
    finally:
        box.kill()
    assert first not in held_namespaces(e2b_server.pid)


def test_signed_download_and_upload_urls(sandbox: Sandbox):
    sandbox.files.write("/home/user/signed.txt", "signed content")
    with urllib.request.urlopen(sandbox.download_url("/home/user/signed.txt", "user")) as answer:
        assert answer.read() == b"signed content"
    with urllib.request.urlopen(sandbox.download_url("signed.txt", use_signature_expiration=60)) as answer:
        assert answer.read() == b"signed content"
    upload = urllib.request.Request(sandbox.upload_url("/home/user/up.txt"), data=b"uploaded", method="POST",
                                    headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(upload) as answer:
        assert answer.status == 200
    assert sandbox.files.read("/home/user/up.txt") == "uploaded"
    expired = sandbox.download_url("/home/user/signed.txt", use_signature_expiration=-120)
    tampered = sandbox.download_url("/home/user/signed.txt").replace("signed.txt", "up.txt")
    for url, message in ((expired, "signature is already expired"), (tampered, "invalid signature")):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(url)
        assert caught.value.code == 401 and json.loads(caught.value.read()) == {"code": 401, "message": message}


def test_file_metadata_is_kept_in_user_xattrs(sandbox: Sandbox):
    info = sandbox.files.write("/home/user/meta.txt", "m", metadata={"Author": "ann", "stage": "one"})
    assert info.metadata == {"author": "ann", "stage": "one"}  # keys lowercased, as envd does
    assert sandbox.files.get_info("/home/user/meta.txt").metadata == {"author": "ann", "stage": "one"}
    assert next(e for e in sandbox.files.list("/home/user") if e.name == "meta.txt").metadata["stage"] == "one"
    xattr = sandbox.commands.run("python3 -c \"import os; print(os.getxattr('/home/user/meta.txt', "
                                 "'user.e2b.author').decode())\"").stdout
    assert xattr == "ann\n"
    assert sandbox.files.write("/home/user/meta.txt", "again").metadata is None
    assert sandbox.files.get_info("/home/user/meta.txt").metadata is None


def test_watching_a_directory(sandbox: Sandbox):
    sandbox.files.make_dir("/home/user/watched/sub")
    handle = sandbox.files.watch_dir("/home/user/watched", recursive=True)
    sandbox.files.write("/home/user/watched/a.txt", "a")
    sandbox.commands.run("echo more >> /home/user/watched/a.txt; mkdir /home/user/watched/sub/new; "
                         "sleep 0.2; touch /home/user/watched/sub/new/deep; rm /home/user/watched/a.txt")
    seen = {(e.name, e.type.value) for e in handle.get_new_events()}
    assert {("a.txt", "create"), ("a.txt", "write"), ("sub/new", "create"), ("sub/new/deep", "create"),
            ("a.txt", "remove")} <= seen, seen
    handle.stop()
    with pytest.raises(NotFoundException):
        sandbox.files.watch_dir("/home/user/not-there")


def test_a_call_in_flight_is_dropped_when_its_sandbox_is_killed(e2b_server):
    box = Sandbox.create(timeout=60)
    handle = box.commands.run("sleep 60", background=True)
    box.kill()
    with pytest.raises(SandboxNotRunningException, match="killed or reached its end of life"):
        handle.wait()
    log = e2b_server.log_path.read_text()
    assert f"dropped a call in flight: sandbox {box.sandbox_id} went away" in log
    assert "Exception in ASGI application" not in log


def test_a_filesystem_only_pause_ends_processes_keeps_files_and_boots_again():
    box = Sandbox.create(timeout=60)
    try:
        box.files.write("/home/user/kept.txt", "kept")
        boot = box.files.read("/proc/sys/kernel/random/boot_id")
        sleeper = box.commands.run("sleep 300", background=True, timeout=0)
        box.pause()  # full pause: frozen, same boot
        box = Sandbox.connect(box.sandbox_id)
        assert box.files.read("/proc/sys/kernel/random/boot_id") == boot
        assert sleeper.pid in [p.pid for p in box.commands.list()]
        assert box.pause(keep_memory=False)
        assert not box.is_running()
        box = Sandbox.connect(box.sandbox_id)
        assert box.files.read("/home/user/kept.txt") == "kept"
        assert box.commands.list() == []
        assert box.files.read("/proc/sys/kernel/random/boot_id") != boot
    finally:
        box.kill()
