"""Templates as code against e2b-local: the unmodified SDK's Template / AsyncTemplate build API,
the build's layer under every sandbox of it (copy-on-write), failures with their reasons, and a
template across a server restart."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from e2b import AsyncSandbox, AsyncTemplate, Sandbox, Template, wait_for_file
from e2b.exceptions import BuildException

from remote_agents_local.e2b_local import launcher
from tests.e2b_local.helpers import MAX_UPLOAD_MB


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A build context: a directory and a loose file for COPY steps."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "greeting.txt").write_text("hello from the layer\n")
    (tmp_path / "app" / "nested").mkdir()
    (tmp_path / "app" / "nested" / "deep.txt").write_text("deep\n")
    (tmp_path / "tool.sh").write_text("#!/bin/sh\necho tool ran\n")
    return tmp_path


def _app_template(context: Path, cls=AsyncTemplate):
    return (cls(file_context_path=str(context)).from_base_image()
            .set_envs({"GREETING": "hi from env", "PATH": "/home/user/bin:$PATH"})
            .run_cmd("mkdir -p /home/user/bin && echo built-by-run > /home/user/built.txt && echo run-step-says-hi")
            .copy("app", "/home/user/app/")
            .copy("tool.sh", "/home/user/bin/tool", mode=0o755)
            .run_cmd("echo root-was-here > /root/by-root.txt", user="root")
            .set_workdir("/home/user/app"))


async def test_a_built_template_gives_its_sandboxes_files_env_and_workdir_and_streams_its_logs(context: Path):
    name = _name("app")
    logs = []
    info = await AsyncTemplate.build(_app_template(context), name, cpu_count=1, memory_mb=200,
                                     on_build_logs=logs.append)
    messages = [entry.message for entry in logs]
    # The server's build log arrives through on_build_logs: the RUN step's own output included.
    assert "run-step-says-hi" in messages
    assert any("[builder 2/6] RUN" in m for m in messages)
    assert await AsyncTemplate.exists(name)
    assert await AsyncTemplate.exists("base")  # E2B's public base: the host system here
    assert not await AsyncTemplate.exists(_name("never-built"))
    box = await AsyncSandbox.create(name, timeout=120)
    try:
        seen = await box.commands.run("pwd; cat greeting.txt nested/deep.txt ~/built.txt; echo $GREETING; tool")
        assert seen.stdout.splitlines() == ["/home/user/app", "hello from the layer", "deep", "built-by-run",
                                            "hi from env", "tool ran"]
        assert (await box.commands.run("cat /root/by-root.txt", user="root")).stdout == "root-was-here\n"
        assert (await box.commands.run("stat -c %U greeting.txt")).stdout.strip() == "user"
        details = await box.get_info()
        assert (details.template_id, details.name) == (info.template_id, name)
        assert (details.cpu_count, details.memory_mb) == (1, 200)
    finally:
        await box.kill()
    # The id works as well as the name.
    by_id = await AsyncSandbox.create(info.template_id, timeout=120)
    try:
        assert (await by_id.files.read("/home/user/app/greeting.txt")) == "hello from the layer\n"
    finally:
        await by_id.kill()


def test_sandbox_writes_never_reach_the_template_or_each_other(context: Path, e2b_server: launcher.LocalE2B):
    name = _name("cow")
    info = Template.build(_app_template(context, Template), name)
    first, second = Sandbox.create(name, timeout=120), Sandbox.create(name, timeout=120)
    try:
        first.commands.run("echo changed > greeting.txt && rm -r nested && echo mine > first.txt")
        first.files.write("/home/user/app/written.txt", "through envd")
        first.commands.run("echo gone > /root/by-root.txt", user="root")
        assert first.commands.run("cat greeting.txt; ls").stdout == "changed\nfirst.txt\ngreeting.txt\nwritten.txt\n"
        # The neighbour started from the same layer sees none of it.
        assert second.commands.run("cat greeting.txt; ls").stdout == "hello from the layer\ngreeting.txt\nnested\n"
        assert second.commands.run("cat /root/by-root.txt", user="root").stdout == "root-was-here\n"
        # Nor does the layer itself, on disk or in a new sandbox.
        layer = e2b_server.log_path.parent / "templates" / "layers" / info.build_id
        assert (layer / "home/user/app/greeting.txt").read_text() == "hello from the layer\n"
        assert sorted(p.name for p in (layer / "home/user/app").iterdir()) == ["greeting.txt", "nested"]
        third = Sandbox.create(name, timeout=120)
        try:
            assert third.commands.run("cat greeting.txt nested/deep.txt").stdout == "hello from the layer\ndeep\n"
        finally:
            third.kill()
    finally:
        first.kill()
        second.kill()


def test_a_template_adds_to_the_hosts_root_without_changing_it(context: Path, e2b_server: launcher.LocalE2B):
    """WORKDIR /app and a COPY into it: the template's own `/` holds what the host's lacks, each
    sandbox writes over it alone, and the host's files stay out of reach."""
    name = _name("app-root")
    info = Template.build(Template(file_context_path=str(context)).from_base_image()
                          .set_workdir("/app").copy("app", "/app/").run_cmd("echo by-user > made.txt"), name)
    first, second = Sandbox.create(name, timeout=120), Sandbox.create(name, timeout=120)
    try:
        assert first.commands.run("pwd; stat -c %U .; cat made.txt greeting.txt").stdout == (
            "/app\nuser\nby-user\nhello from the layer\n")
        first.commands.run("echo mine > made.txt && echo new > new.txt")
        assert first.commands.run("mkdir /added && echo root-may", user="root").stdout == "root-may\n"
        denied = first.commands.run("mkdir /added-by-user; touch /usr/x /etc/x; cat /etc/shadow; true")
        assert denied.stderr.count("Permission denied") == 4
        assert first.commands.run("touch /usr/x /etc/x 2>&1 | grep -c 'Permission denied'", user="root").stdout == "2\n"
        assert second.commands.run("cat made.txt; ls /app; ls -d /added 2>&1 || true").stdout == (
            "by-user\ngreeting.txt\nmade.txt\nnested\nls: cannot access '/added': No such file or directory\n")
        layer = e2b_server.log_path.parent / "templates" / "layers" / info.build_id
        assert (layer / "rootfs/app/made.txt").read_text() == "by-user\n"
        assert not Path("/app").exists() and not Path("/added").exists()  # the host's / is untouched
    finally:
        first.kill()
        second.kill()


def test_a_template_sandbox_cannot_uncover_or_name_its_layer(context: Path):
    name = _name("sealed")
    Template.build(Template(file_context_path=str(context)).from_base_image().run_cmd("echo x > ~/x"), name)
    box = Sandbox.create(name, timeout=120)
    try:
        # root (no CAP_SYS_ADMIN) can neither take its overlays apart nor mount one of its own.
        attempts = box.commands.run("umount /home; umount -l /tmp; mount -t overlay o -o lowerdir=/usr /mnt; "
                                    "cat ~user/x", user="root")
        assert attempts.stdout == "x\n"
        assert "must be superuser" in attempts.stderr and "permission denied" in attempts.stderr
        mounts = box.commands.run("cat /proc/self/mountinfo").stdout
        overlays = {line.split()[4] for line in mounts.splitlines() if " - overlay e2b-layer " in line}
        assert {"/home", "/root", "/tmp"} <= overlays
        assert "templates/layers" not in mounts  # the layers' host paths are not named
    finally:
        box.kill()


def test_a_failing_step_fails_the_build_with_its_log_and_reason(context: Path):
    template = (Template(file_context_path=str(context)).from_base_image()
                .run_cmd("echo fine")
                .run_cmd("echo about-to-fail; echo on-stderr >&2; exit 3"))
    logs = []
    with pytest.raises(BuildException, match=r"step 2 .* exited with code 3"):
        Template.build(template, _name("failing"), on_build_logs=logs.append)
    messages = [entry.message for entry in logs]
    assert "about-to-fail" in messages and "on-stderr" in messages
    # Polled the way build_in_background's callers do: status error, the failed step and its lines.
    info = Template.build_in_background(template, _name("failing"))
    status = Template.get_build_status(info)
    while status.status.value in ("building", "waiting"):
        status = Template.get_build_status(info)
    assert status.status.value == "error"
    assert status.reason.step == "2"
    assert "about-to-fail" in [entry.message for entry in status.reason.log_entries]
    with pytest.raises(Exception, match="no ready build"):
        Sandbox.create(info.name, timeout=60)


def test_a_base_e2b_local_cannot_provide_fails_the_build_saying_so(context: Path):
    template = Template(file_context_path=str(context)).from_image("python:3.12").run_cmd("true")
    with pytest.raises(BuildException, match=r"cannot provide the base image 'python:3\.12'.*no container runtime"):
        Template.build(template, _name("docker-base"))


def test_a_template_based_on_another_and_its_start_command_and_ready_check(context: Path):
    base_name = _name("base")
    Template.build(_app_template(context, Template), base_name)
    child = (Template(file_context_path=str(context)).from_template(base_name)
             .run_cmd("echo child >> greeting.txt")
             .set_start_cmd("echo started > /tmp/started; echo $GREETING > /tmp/env-of-start; sleep infinity",
                            wait_for_file("/tmp/started")))
    child_name = _name("child")
    Template.build(child, child_name)
    box = Sandbox.create(child_name, timeout=120)
    try:
        # The base's files, env and workdir, the child's step, and a start command that already
        # passed its ready check when create returned, still running in the sandbox.
        assert box.commands.run("cat greeting.txt /tmp/env-of-start").stdout == (
            "hello from the layer\nchild\nhi from env\n")
        assert any("sleep infinity" in " ".join(p.args) for p in box.commands.list())
    finally:
        box.kill()
    plain = Sandbox.create(base_name, timeout=120)
    try:  # building the child did not change its base
        assert plain.commands.run("cat greeting.txt").stdout == "hello from the layer\n"
    finally:
        plain.kill()


def test_the_templates_last_user_is_its_sandboxes_default_user(context: Path):
    name = _name("root-user")
    template = (Template(file_context_path=str(context)).from_base_image()
                .run_cmd("whoami > /home/user/first")
                .set_user("root")
                .run_cmd("whoami > who && pwd >> who"))
    Template.build(template, name)
    box = Sandbox.create(name, timeout=120)
    try:
        assert box.commands.run("whoami; pwd").stdout == "root\n/root\n"
        assert box.files.read("/root/who") == "root\n/root\n"  # the files API's default user too
        assert box.files.read("/home/user/first") == "user\n"  # steps before USER ran as `user`
        assert box.commands.run("whoami", user="user").stdout == "user\n"
    finally:
        box.kill()
    with pytest.raises(BuildException, match="only the users root, user"):
        Template.build(Template(file_context_path=str(context)).from_base_image().set_user("guest"), _name("guest"))


def test_tags_name_builds_and_the_template_memory_is_the_sandbox_limit(context: Path):
    name = _name("tagged")
    small = Template(file_context_path=str(context)).from_template("base").run_cmd("echo v1 > /home/user/v")
    Template.build(small, f"{name}:v1", memory_mb=64)
    Template.build(Template(file_context_path=str(context)).from_base_image().run_cmd("echo v2 > /home/user/v"),
                   name, tags=["v2"])
    assert {t.tag for t in Template.get_tags(name)} == {"v1", "v2", "default"}
    assigned = Template.assign_tags(f"{name}:v1", "stable")
    assert assigned.tags == ["stable"]
    stable = Sandbox.create(f"{name}:stable", timeout=120)
    try:
        assert stable.files.read("/home/user/v") == "v1\n"
    finally:
        stable.kill()
    Template.remove_tags(name, "stable")
    with pytest.raises(Exception, match="no ready build tagged 'stable'"):
        Sandbox.create(f"{name}:stable", timeout=60)
    v1, latest = Sandbox.create(f"{name}:v1", timeout=120), Sandbox.create(name, timeout=120)
    try:
        assert v1.files.read("/home/user/v") == "v1\n"
        assert latest.files.read("/home/user/v") == "v2\n"
        allocate = "python3 -c 'b = bytearray(128 << 20); print(len(b))'"
        # 64 MiB (v1's memory) cannot hold it; the server's default (256 MiB) can.
        assert v1.commands.run(f"{allocate} || echo killed").stdout.strip() == "killed"
        assert latest.commands.run(allocate).stdout.strip() == str(128 << 20)
    finally:
        v1.kill()
        latest.kill()


def test_an_upload_above_the_cap_answers_413_and_uploads_need_their_signature(e2b_server: launcher.LocalE2B):
    headers = {"X-API-KEY": e2b_server.api_key}
    requested = httpx.post(f"{e2b_server.api_url}/v3/templates", json={"name": _name("upload")}, headers=headers)
    link = httpx.get(f"{e2b_server.api_url}/templates/{requested.json()['templateID']}/files/{'a' * 64}",
                     headers=headers).json()
    assert link["present"] is False
    too_big = httpx.put(link["url"], content=b"x" * ((MAX_UPLOAD_MB << 20) + 1))
    assert too_big.status_code == 413
    unsigned = httpx.put(link["url"].split("?")[0], content=b"x")
    assert unsigned.status_code == 401
    assert httpx.get(f"{e2b_server.api_url}/templates", headers={"X-API-KEY": "e2b_wrong"}).status_code == 401


def test_a_template_survives_a_restart_and_deleting_it_frees_its_layer(
        tmp_path: Path, context: Path, monkeypatch: pytest.MonkeyPatch):
    state = tmp_path / "state"
    name = _name("kept")
    with launcher.start(state) as server:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        info = Template.build(_app_template(context, Template), name)
        kept = Sandbox.create(name, timeout=300)
        kept.files.write("/home/user/app/mine.txt", "mine")
    layer = state / "templates" / "layers" / info.build_id
    assert (state / "templates.json").stat().st_mode & 0o777 == 0o600
    assert (state / "templates" / "logs" / f"{info.build_id}.json").stat().st_mode & 0o777 == 0o600
    assert (state / "templates").stat().st_mode & 0o777 == 0o700
    with launcher.start(state) as server:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        box = Sandbox.create(name, timeout=120)
        assert box.commands.run("cat greeting.txt").stdout == "hello from the layer\n"
        status = Template.get_build_status(info, logs_offset=0)
        assert status.status.value == "ready"
        assert "run-step-says-hi" in [entry.message for entry in status.log_entries]
        # The sandbox made before the restart still has its own writes over the layer.
        again = Sandbox.connect(kept.sandbox_id)
        assert again.commands.run("cat mine.txt greeting.txt").stdout == "minehello from the layer\n"
        headers = {"X-API-KEY": server.api_key}
        assert httpx.delete(f"{server.api_url}/templates/{info.template_id}", headers=headers).status_code == 204
        assert not Template.exists(name)
        # Still used by two sandboxes: kept until the last one goes.
        assert layer.is_dir()
        box.kill()
        again.kill()
        assert not layer.exists()


def test_an_unreadable_templates_file_is_set_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state = tmp_path / "state"
    with launcher.start(state):
        pass
    (state / "templates.json").write_bytes(b'{"templates": {"t": {"templ')
    with launcher.start(state) as server:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        assert not Template.exists("anything")  # started, with no templates
    assert len(list(state.glob("templates.json.unreadable-*"))) == 1  # kept for whoever looks
