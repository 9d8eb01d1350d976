"""The sandbox boundary, attacked from inside a sandbox through the real `e2b` SDK: each escape
of issue 17 must fail (EPERM, ENOENT, 401, a killed process), and E2B's user model must hold.
Each test also checks the thing it attacks exists, so that it fails if the boundary breaks rather
than passing because the attack was aimed at nothing."""

from __future__ import annotations

import gzip
import os
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from e2b import CommandExitException, Sandbox
from e2b.exceptions import InvalidArgumentException, NotFoundException, SandboxException

from remote_agents_local.e2b_local import launcher
from tests.e2b_local.helpers import MAX_UPLOAD_MB, MEMORY_MB, PIDS_MAX, wait_for


def run(box: Sandbox, command: str, user: str = "user", timeout: float = 30):
    """(exit code, stdout + stderr) of a command, failing or not."""
    try:
        result = box.commands.run(command, user=user, timeout=timeout)
    except CommandExitException as failed:
        return failed.exit_code, failed.stdout + failed.stderr
    return result.exit_code, result.stdout + result.stderr


def host_pids(command_line: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == command_line:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def neighbour():
    """A second sandbox holding secrets: in its environment, its home, a running process."""
    secret = f"neighbour-secret-{uuid.uuid4().hex}"
    box = Sandbox.create(timeout=120, envs={"NEIGHBOUR_SECRET": secret})
    box.files.write("/home/user/secret.txt", secret)
    marker = f"{311 + int(uuid.uuid4().int % 1000) / 1000:.3f}"
    box.commands.run(f"sleep {marker}", background=True, timeout=0)
    pid = wait_for(lambda: host_pids(b"sleep\0" + marker.encode() + b"\0"))[0]
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert secret.encode() in environ  # the secret is there to be stolen
    yield box, secret, pid
    box.kill()


# -- authentication -------------------------------------------------------------------------

def test_every_envd_route_needs_the_sandboxs_token_and_the_control_api_its_key(e2b_server, sandbox):
    url, sandbox_id = e2b_server.api_url, sandbox.sandbox_id
    start = {"process": {"cmd": "/bin/bash", "args": ["-c", "id"]}}
    calls = [("POST", "/process.Process/Start", {"json": start}), ("POST", "/process.Process/List", {"json": {}}),
             ("GET", "/files", {"params": {"path": "/etc/hostname"}}), ("POST", "/files", {"content": b"x"}),
             ("POST", "/filesystem.Filesystem/ListDir", {"json": {"path": "/"}}), ("GET", "/health", {})]
    for token in (None, "", "0" * 32, sandbox._envd_access_token[:-1]):
        headers = {"E2b-Sandbox-Id": sandbox_id, "Content-Type": "application/json"}
        if token is not None:
            headers["X-Access-Token"] = token
        for method, path, extra in calls:
            answer = httpx.request(method, url + path, headers=headers, timeout=10, **extra)
            assert answer.status_code == 401, (method, path, token, answer.text)
    good = {"E2b-Sandbox-Id": sandbox_id, "X-Access-Token": sandbox._envd_access_token}
    assert httpx.get(url + "/health", headers=good, timeout=10).status_code == 204
    for key in (None, "", "e2b_local_dev_key", e2b_server.api_key[:-1]):
        headers = {} if key is None else {"X-API-KEY": key}
        assert httpx.get(url + "/v2/sandboxes", headers=headers, timeout=10).status_code == 401
        assert httpx.post(url + "/v2/sandboxes", json={"templateID": "base"}, headers=headers,
                          timeout=10).status_code == 401


def test_the_key_is_in_no_command_line_and_the_state_is_private(e2b_server):
    server_argv = Path(f"/proc/{e2b_server.pid}/cmdline").read_bytes()
    assert e2b_server.api_key.encode() not in server_argv
    for path in [e2b_server.state_dir, e2b_server.state_dir / "sandboxes"]:
        assert path.stat().st_mode & 0o777 == 0o700, path
    for name in ("sandboxes.json", "api-key", "e2b-local.log"):
        assert (e2b_server.state_dir / name).stat().st_mode & 0o777 == 0o600, name


# -- files API -------------------------------------------------------------------------------

def test_files_api_paths_and_symlinks_stay_inside_the_sandbox(e2b_server, sandbox):
    state_file = e2b_server.state_dir / "sandboxes.json"
    assert sandbox._envd_access_token in state_file.read_text()  # what an escape would read
    for path in [f"/home/user/../../..{state_file}", f"../../../{state_file}", str(state_file),
                 f"/proc/{e2b_server.pid}/root{state_file}", f"/proc/{e2b_server.pid}/environ"]:
        with pytest.raises(NotFoundException):
            sandbox.files.read(path)
    # A symlink planted inside means what it means inside: the host's file is not there.
    run(sandbox, f"ln -s {state_file} /home/user/state; ln -s /proc/{e2b_server.pid}/root /home/user/server-root; "
                 f"ln -s /proc/1/root/etc/hostname /home/user/magic")
    for path in ("/home/user/state", f"/home/user/server-root{state_file}"):
        with pytest.raises(NotFoundException):
            sandbox.files.read(path)
    with pytest.raises(SandboxException):
        sandbox.files.read("/home/user/magic")  # a /proc magic link is never followed
    with pytest.raises(SandboxException):
        sandbox.files.write("/home/user/state", "overwrite")
    assert sandbox._envd_access_token in state_file.read_text()
    # Writes through a symlink to a host path land nowhere on the host.
    run(sandbox, "ln -s /etc/e2b-local-escape /home/user/out")
    with pytest.raises(SandboxException):
        sandbox.files.write("/home/user/out", "x")
    assert not Path("/etc/e2b-local-escape").exists()


def test_downloads_serve_regular_files_only(e2b_server, sandbox):
    run(sandbox, "mkfifo /home/user/fifo; mkdir -p /home/user/dir; echo hi > /home/user/ok")
    assert sandbox.files.read("/home/user/ok") == "hi\n"
    headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "X-Access-Token": sandbox._envd_access_token}
    for path in ("/dev/zero", "/dev/urandom", "/home/user/fifo", "/home/user/dir", "/proc/self/fd/0"):
        started = time.monotonic()
        answer = httpx.get(f"{e2b_server.api_url}/files", params={"path": path}, headers=headers, timeout=10)
        assert 400 <= answer.status_code < 500, (path, answer.status_code)
        assert time.monotonic() - started < 3, path
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read("/dev/zero")


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_uploads_are_capped_and_a_gzip_bomb_does_not_blow_up_memory(e2b_server, sandbox):
    cap = MAX_UPLOAD_MB << 20
    sandbox.files.write("/home/user/fits.bin", b"\1" * (cap - 1))
    assert sandbox.commands.run("stat -c %s /home/user/fits.bin").stdout.strip() == str(cap - 1)
    with pytest.raises(SandboxException, match="413"):
        sandbox.files.write("/home/user/big.bin", b"\1" * (cap + 1))
    headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "X-Access-Token": sandbox._envd_access_token,
               "Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}
    bomb = gzip.compress(b"\0" * (256 << 20), compresslevel=9)  # 256 MiB in about 250 KB
    assert len(bomb) < 1 << 20
    before = _peak_rss_kb(e2b_server.pid)
    answer = httpx.post(f"{e2b_server.api_url}/files", params={"path": "/home/user/bomb"}, content=bomb,
                        headers=headers, timeout=30)
    assert answer.status_code == 413
    assert _peak_rss_kb(e2b_server.pid) - before < 64 << 10, "the server's memory grew with the bomb"
    assert not sandbox.files.exists("/home/user/bomb")
    assert not sandbox.files.exists("/home/user/big.bin")


# -- neighbours, the host, the server ---------------------------------------------------------

def test_a_neighbours_environment_home_and_root_are_out_of_reach(e2b_server, sandbox, neighbour):
    other, secret, host_pid = neighbour
    for user in ("user", "root"):
        code, output = run(sandbox, f"cat /proc/{host_pid}/environ /proc/{host_pid}/root/home/user/secret.txt; "
                                    "cat /proc/[0-9]*/environ; cat /proc/[0-9]*/root/home/user/secret.txt; "
                                    "ls /home; cat /home/*/secret.txt", user=user)
        assert secret not in output, user
        # Only this sandbox's processes exist in its /proc: its init, its sleep, this command.
        code, listed = run(sandbox, "ls -d /proc/[0-9]* | wc -l", user=user)
        assert code == 0 and int(listed) < 10, listed
    sandboxes_dir = e2b_server.state_dir / "sandboxes" / other.sandbox_id
    assert (sandboxes_dir / "home/user/secret.txt").read_text() == secret
    code, output = run(sandbox, f"cat {sandboxes_dir}/home/user/secret.txt", user="root")
    assert code != 0 and "No such file" in output


def test_the_servers_state_and_namespaces_are_out_of_reach(e2b_server, sandbox):
    state_file = e2b_server.state_dir / "sandboxes.json"
    for user in ("user", "root"):
        code, output = run(sandbox, f"cat {state_file} {e2b_server.state_dir}/api-key", user=user)
        assert code != 0 and sandbox._envd_access_token not in output and e2b_server.api_key not in output
        for target in (e2b_server.pid, 1):
            code, output = run(sandbox, f"nsenter -t {target} -m -p -U cat {state_file}", user=user)
            assert code != 0 and sandbox._envd_access_token not in output, (user, target, output)
        code, output = run(sandbox, f"cat /proc/{e2b_server.pid}/environ /proc/{e2b_server.pid}/cmdline", user=user)
        assert code != 0 and e2b_server.api_key not in output


def test_a_canary_kubeconfig_in_the_users_state_dir_is_invisible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Outside /tmp and the homes (which sandboxes replace anyway), so hiding must do the work; a
    # sibling directory stays visible, which proves the path is reachable at all.
    root = Path("/var/lib") / f"e2b-local-canary-{uuid.uuid4().hex[:8]}"
    state, visible = root / "state" / "remote-agents" / "stack", root / "visible"
    state.mkdir(parents=True)
    visible.mkdir()
    canary = f"canary-token-{uuid.uuid4().hex}"
    (state / "kubeconfig").write_text(f"users: [{{name: admin, user: {{token: {canary}}}}}]\n")
    (visible / "note").write_text("visible\n")
    home_canary = Path.home() / f".e2b-local-canary-{uuid.uuid4().hex[:8]}"
    home_canary.write_text(canary)
    monkeypatch.setenv("XDG_STATE_HOME", str(root / "state"))
    try:
        with launcher.start(tmp_path / "canary") as server:
            for key, value in server.env.items():
                monkeypatch.setenv(key, value)
            box = Sandbox.create(timeout=60)
            try:
                assert box.commands.run(f"cat {visible}/note").stdout == "visible\n"
                for user in ("user", "root"):
                    code, output = run(box, f"cat {state}/kubeconfig {home_canary}; "
                                            f"grep -rs {canary} {root} /root", user=user)
                    assert canary not in output and code != 0, (user, output)
                with pytest.raises(NotFoundException):
                    box.files.read(f"{state}/kubeconfig")
            finally:
                box.kill()
    finally:
        home_canary.unlink()
        subprocess.run(["rm", "-rf", str(root)], check=True)


def test_the_host_filesystem_is_read_only_even_for_root(sandbox):
    for user in ("user", "root"):
        code, output = run(sandbox, "touch /usr/e2b-escape /etc/e2b-escape; echo x >> /etc/hostname", user=user)
        assert code != 0 and ("Read-only file system" in output or "Permission denied" in output)
    assert not Path("/usr/e2b-escape").exists() and not Path("/etc/e2b-escape").exists()
    code, output = run(sandbox, "mount -t tmpfs none /mnt; umount /tmp; cat /etc/shadow", user="root")
    assert code != 0 and "root:" not in output


# -- cgroups and kill -------------------------------------------------------------------------

def test_a_daemon_that_moves_to_the_root_cgroup_dies_with_its_sandbox():
    box = Sandbox.create(timeout=60)
    marker = f"{313 + int(uuid.uuid4().int % 1000) / 1000:.3f}"
    for user in ("user", "root"):
        code, output = run(box, "echo $$ > /sys/fs/cgroup/unified/cgroup.procs; "
                                "echo $$ > /sys/fs/cgroup/pids/cgroup.procs; "
                                "echo $$ > /sys/fs/cgroup/memory/cgroup.procs", user=user)
        assert code != 0 and ("Read-only file system" in output or "Permission denied" in output), output
    # Leaves its session and process group, double forks, tries every cgroup, then sleeps.
    box.commands.run(f"setsid sh -c 'for f in /sys/fs/cgroup/*/cgroup.procs; do echo $$ > $f; done 2>/dev/null; "
                     f"sleep {marker} & exit' </dev/null >/dev/null 2>&1", user="root", timeout=10)
    daemons = wait_for(lambda: host_pids(b"sleep\0" + marker.encode() + b"\0"))
    assert box.kill() is True
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in daemons) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in daemons), "a daemon outlived the sandbox's kill"


FORK_BOMB = """
import os, sys
children = 0
try:
    for _ in range(int(sys.argv[1])):
        if os.fork() == 0:
            os.execv("/bin/sleep", ["sleep", "60"])  # exec: no copy-on-write growth per child
        children += 1
except BlockingIOError:
    print("EAGAIN after", children, flush=True)
    sys.exit(0)
print("no limit after", children, flush=True)
"""


def test_a_bounded_fork_bomb_stops_at_pids_max_without_hurting_the_host_or_a_neighbour(e2b_server, sandbox):
    other = Sandbox.create(timeout=60)
    try:
        sandbox.files.write("/home/user/bomb.py", FORK_BOMB)
        output = sandbox.commands.run(f"python3 /home/user/bomb.py {PIDS_MAX * 2}", timeout=60).stdout
        assert output.startswith("EAGAIN after"), output
        assert int(output.split()[-1]) < PIDS_MAX
        # The neighbour and the host still start processes while the bomb's children live.
        assert other.commands.run("echo fine").stdout == "fine\n"
        assert subprocess.run(["true"]).returncode == 0
    finally:
        other.kill()


def test_memory_max_is_enforced(sandbox):
    assert sandbox.get_info().memory_mb == MEMORY_MB  # what the sandbox reports is its limit
    code, output = run(sandbox, "python3 -c \"b = b'x' * (512 << 20); print(len(b))\"")
    assert code != 0 and "536870912" not in output
    assert sandbox.commands.run("python3 -c \"b = b'x' * (16 << 20); print(len(b))\"").stdout == "16777216\n"


# -- E2B's user model ---------------------------------------------------------------------------

def test_commands_run_as_user_by_default_and_as_root_when_asked(sandbox):
    assert sandbox.commands.run("whoami").stdout == "user\n"
    assert sandbox.commands.run("whoami", user="root").stdout == "root\n"
    assert sandbox.commands.run("echo $HOME; pwd").stdout == "/home/user\n/home/user\n"
    assert sandbox.commands.run("id -u; echo $HOME", user="root").stdout == "0\n/root\n"
    status = sandbox.commands.run("grep -E '^(CapEff|NoNewPrivs)' /proc/self/status").stdout.split()
    assert status == ["CapEff:", "0000000000000000", "NoNewPrivs:", "1"]
    # Root in the sandbox is root of its own user namespace only, mapped to an unprivileged host uid.
    assert sandbox.commands.run("cat /proc/self/uid_map", user="root").stdout.split()[:2] == ["0", "200000"]
    code, output = run(sandbox, "su -c id root </dev/null; sudo id", user="user")
    assert code != 0 and "uid=0" not in output


def test_files_as_user_outside_home_fail_like_on_e2b(sandbox):
    sandbox.files.write("/home/user/mine.txt", "mine")
    sandbox.files.write("/tmp/shared.txt", "tmp")
    assert sandbox.commands.run("stat -c %U /home/user/mine.txt /tmp/shared.txt").stdout == "user\nuser\n"
    for path in ("/etc/e2b-file", "/root/x", "/usr/local/e2b-file"):
        with pytest.raises(SandboxException):
            sandbox.files.write(path, "x")
    assert sandbox.files.write("/root/by-root.txt", "r", user="root").path == "/root/by-root.txt"
    assert sandbox.commands.run("stat -c %U /root/by-root.txt", user="root").stdout == "root\n"
    with pytest.raises(SandboxException):
        sandbox.files.read("/root/by-root.txt")  # /root is 0700 root's
    assert not os.path.exists("/etc/e2b-file")
