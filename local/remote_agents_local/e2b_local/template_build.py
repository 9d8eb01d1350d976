"""Running a template build: its steps in a build sandbox, whose trees become the build's layer.

The build sandbox is an ordinary sandbox boundary (sandbox_exec + bubblewrap, cgroups, the
template's memory) whose /home, /root and /tmp are the layer's own directories: what the steps
write there is the layer. Based on another template, the layer starts as a copy of that one's.
The rest of the filesystem is the host's, read-only, as in every e2b-local sandbox: it is the
only base e2b-local has (E2B's `e2bdev/base` image, or the template `base`). Another image
(`fromImage: python:3.12`) fails the build: there is no container runtime to pull it with."""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
import secrets
import shlex
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from protobuf import Oneof

from e2b.envd.process import process_pb
from remote_agents_local.e2b_local.isolation import DEFAULT_PATH, USERS, SandboxFiles, SandboxInit, resolve_user
from remote_agents_local.e2b_local.processes import ProcessTable
from remote_agents_local.e2b_local.sandboxes import ApiError, SandboxManager
from remote_agents_local.e2b_local.templates import BUILDING, BuildRecord, TemplateRegistry, remove

log = logging.getLogger("e2b_local")

# The images that mean "E2B's base", which e2b-local provides as the host system.
BASE_IMAGES = {"e2bdev/base", "e2bdev/base:latest", "docker.io/e2bdev/base", "docker.io/e2bdev/base:latest"}
BASE_TEMPLATES = {"base"}
STEP_TIMEOUT_SECONDS = 3600  # one RUN step; a hung one fails the build instead of holding it forever
READY_TIMEOUT_SECONDS = 120  # a build's start command must pass its ready check within this
READY_POLL_SECONDS = 0.2
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


class StepFailed(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


def expand(value: str, env: dict[str, str]) -> str:
    """$VAR / ${VAR} as Docker's ENV expands them (unknown ones become empty)."""
    return _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


async def run_command(table: ProcessTable, command: str, user: str, cwd: str, envs: dict[str, str],
                      on_line: Callable[[str], None] | None = None, deadline: float | None = None,
                      tag: str | None = None, background: bool = False) -> int | None:
    """`bash -l -c command` in the table's sandbox as `user`; each output line to `on_line`.
    Returns its exit code (None for a background command, left running)."""
    name, uid, home = resolve_user(user)
    config = process_pb.ProcessConfig(cmd="/bin/bash", args=["-l", "-c", command], envs=envs, cwd=cwd or home)
    managed = await table.start(config, tag, False, None if background else deadline, uid, home, name)
    if background:
        return None
    pending = {"stdout": b"", "stderr": b""}
    code = None
    async for event in managed.events(None):
        match event.event:
            case Oneof(field="data", value=data):
                stream, chunk = data.output.field, data.output.value
                *lines, pending[stream] = (pending[stream] + chunk).split(b"\n")
                for line in lines:
                    if on_line:
                        on_line(line.decode(errors="replace"))
            case Oneof(field="end", value=end):
                code = end.exit_code
    for rest in pending.values():
        if rest and on_line:
            on_line(rest.decode(errors="replace"))
    if managed.deadline_exceeded:
        return -1
    return code


async def wait_ready(table: ProcessTable, ready_cmd: str, user: str, cwd: str, envs: dict[str, str],
                     timeout: float) -> bool:
    """Run the ready check until it exits 0 (True) or `timeout` passes (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await run_command(table, ready_cmd, user, cwd, envs, deadline=max(deadline - loop.time(), 1)) == 0:
            return True
        await asyncio.sleep(READY_POLL_SECONDS)
    return False


async def start_and_wait(table: ProcessTable, build: BuildRecord, envs: dict[str, str], timeout: float) -> bool:
    """The template's start command, as a background process of the sandbox (as on E2B), then its
    ready check until it passes (True) or `timeout` passes (False)."""
    if build.start_cmd:
        await run_command(table, build.start_cmd, build.user, build.workdir, envs, tag="start-cmd", background=True)
    return not build.ready_cmd or await wait_ready(table, build.ready_cmd, build.user, build.workdir, envs, timeout)


class Builder:
    """Runs builds as tasks of the server's loop, at most `parallel` at once."""

    def __init__(self, manager: SandboxManager, registry: TemplateRegistry, parallel: int = 2) -> None:
        self.manager = manager
        self.registry = registry
        self.tasks: dict[str, asyncio.Task] = {}
        self._slots = asyncio.Semaphore(parallel)

    def start(self, build: BuildRecord, spec: dict) -> None:
        task = asyncio.get_running_loop().create_task(self._run(build, spec))
        self.tasks[build.build_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(build.build_id, None))

    def cancel(self, build_ids: list[str]) -> None:
        for build_id in build_ids:
            task = self.tasks.get(build_id)
            if task is not None:
                task.cancel()

    async def _run(self, build: BuildRecord, spec: dict) -> None:
        async with self._slots:
            build.status = BUILDING
            self.registry.save()
            name = f"build-{build.build_id}"
            layer = self.registry.layer(build.build_id)
            init = None
            try:
                try:
                    base = self._base(build, spec)
                    layer.mkdir(mode=0o700)
                    if base is not None:
                        await _copy_tree(self.registry.layer(base.build_id), layer)
                    files = SandboxFiles(layer, rootfs=True)
                    files.create(self.manager.boundary)
                    init = SandboxInit(self.manager.boundary, files,
                                       self.manager.cgroups.create(name, build.memory_mb << 20), name)
                    table = ProcessTable(init, env=lambda: {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"})
                    await self._steps(build, spec, table, layer)
                except StepFailed as failed:
                    build.log(f"Build failed: {failed.message}", "error", failed.step)
                    step_logs = [e for e in build.logs if e.get("step") == failed.step][-50:]
                    self.registry.finish(build, {"message": failed.message, "step": failed.step,
                                                 "logEntries": step_logs})
                else:
                    build.log("Build finished: the template is ready", step="finalize")
                    self.registry.finish(build, None)
            except Exception as error:  # a bug or host failure ends this build, never the server
                log.exception("template build %s failed", build.build_id)
                build.log(f"e2b-local failed to build: {error}", "error")
                self.registry.finish(build, {"message": f"e2b-local failed to build: {error}"})
            finally:
                if init is not None:
                    self.manager.cgroups.kill(name)
                    await init.stop()
                    await asyncio.to_thread(self.manager.cgroups.remove, name)
                await asyncio.to_thread(shutil.rmtree, layer / "work", True)  # overlayfs's, not the layer's
                await asyncio.to_thread(remove, self.registry.collect(self.manager.store))
                log.info("template %s build %s: %s%s", build.template_id, build.build_id, build.status,
                         f" ({build.reason['message']})" if build.reason else "")

    def _base(self, build: BuildRecord, spec: dict) -> BuildRecord | None:
        """The ready build this one starts from, or None for the host system."""
        image, template = spec.get("fromImage"), spec.get("fromTemplate")
        if template:
            build.log(f"Base: template {template}", step="base")
            if template in BASE_TEMPLATES and self.registry.find(template) is None:
                build.log("E2B's base template is this host's system, read-only", step="base")
                return None
            try:
                found = self.registry.ready_build(template)
            except ApiError as error:
                raise StepFailed("base", f"base template: {error.message}") from None
            if not found:
                raise StepFailed("base", f"base template '{template}' not found on e2b-local")
            _, base = found
            build.env, build.workdir, build.user = dict(base.env), base.workdir, base.user
            build.start_cmd, build.ready_cmd = base.start_cmd, base.ready_cmd
            return base
        build.log(f"Base: image {image}", step="base")
        if image not in BASE_IMAGES:
            raise StepFailed("base", f"e2b-local cannot provide the base image '{image}': it has no container "
                                     f"runtime to pull images with; its only base is the host system, as "
                                     f"E2B's base image (from_base_image()) or the template 'base'")
        build.log("E2B's base image is this host's system, read-only", step="base")
        return None

    async def _steps(self, build: BuildRecord, spec: dict, table: ProcessTable, layer: Path) -> None:
        steps = spec.get("steps") or []
        for index, step in enumerate(steps, start=1):
            number = str(index)
            kind, args = str(step.get("type", "")).upper(), [str(a) for a in step.get("args") or []]
            build.log(f"[builder {index}/{len(steps)}] {kind} {' '.join(args)}", step=number)
            if kind == "RUN":
                await self._run_step(build, table, number, args[0] if args else "",
                                     args[1] if len(args) > 1 and args[1] else build.user)
            elif kind == "ENV":
                for key, value in zip(args[::2], args[1::2]):
                    build.env[key] = expand(value, {"PATH": DEFAULT_PATH, **build.env})
            elif kind == "WORKDIR":
                # Created by root, as Docker does, but given to the current user (E2B's default
                # user is not root) when it is new.
                workdir = os.path.normpath(os.path.join(build.workdir or USERS[build.user][1], args[0]))
                quoted = shlex.quote(workdir)
                await self._run_step(build, table, number,
                                     f"[ -d {quoted} ] || {{ mkdir -p {quoted} && chown {build.user}: {quoted}; }}", "root")
                build.workdir = workdir
            elif kind == "USER":
                if not args or args[0] not in USERS:
                    raise StepFailed(number, f"USER {args[0] if args else ''}: e2b-local sandboxes have only the "
                                             f"users {', '.join(USERS)}")
                build.user = args[0]
            elif kind == "COPY":
                await self._copy_step(build, table, number, step, args, layer)
            else:
                raise StepFailed(number, f"unknown step type {kind!r}")
        if spec.get("startCmd"):
            build.start_cmd = spec["startCmd"]
        if spec.get("readyCmd"):
            build.ready_cmd = spec["readyCmd"]
        if build.start_cmd or build.ready_cmd:
            await self._finalize(build, table)

    def _envs(self, build: BuildRecord) -> dict[str, str]:
        return {"PATH": DEFAULT_PATH, **build.env}

    async def _run_step(self, build: BuildRecord, table: ProcessTable, step: str, command: str, user: str) -> None:
        if user not in USERS:
            raise StepFailed(step, f"user '{user}' does not exist: e2b-local sandboxes have only {', '.join(USERS)}")
        code = await run_command(table, command, user, build.workdir, self._envs(build),
                                 on_line=lambda line: build.log(line, step=step), deadline=STEP_TIMEOUT_SECONDS)
        if code != 0:
            what = "timed out" if code == -1 else f"exited with code {code}"
            raise StepFailed(step, f"step {step} ({command}) {what}")

    async def _copy_step(self, build: BuildRecord, table: ProcessTable, step: str, spec: dict, args: list[str],
                         layer: Path) -> None:
        src, dest = args[0], args[1]
        owner = (args[2] if len(args) > 2 and args[2] else build.user).partition(":")[0]
        mode = args[3] if len(args) > 3 and args[3] else ""
        if owner not in USERS:
            raise StepFailed(step, f"COPY owner '{owner}': e2b-local sandboxes have only the users {', '.join(USERS)}")
        archive = self.registry.file_path(str(spec.get("filesHash", "")))
        if not archive.is_file():
            raise StepFailed(step, f"the files of step {step} ({src}) were not uploaded")
        # Unpacked where no sandbox can reach, owned by the step's user, then moved into the build
        # sandbox's /tmp under a name nothing there can guess, and copied in place from inside it
        # as that user (so the sandbox's permissions decide where it may write).
        staging_name = f".e2b-copy-{secrets.token_hex(8)}"
        staging = self.registry.root / staging_name
        try:
            sources = await asyncio.to_thread(_unpack, archive, staging, src,
                                              self.manager.boundary.host_uid(USERS[owner][0]),
                                              self.manager.settings.max_upload_bytes)
        except (tarfile.TarError, OSError, ValueError) as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise StepFailed(step, f"cannot unpack the files of step {step} ({src}): {error}") from None
        if not sources:
            shutil.rmtree(staging, ignore_errors=True)
            raise StepFailed(step, f"no files match {src!r} in the uploaded files of step {step}")
        os.rename(staging, layer / "tmp" / staging_name)
        inside = f"/tmp/{staging_name}"
        into_dir = dest.endswith("/") or len(sources) > 1
        commands = []
        for relative, is_dir in sources:
            source = shlex.quote(f"{inside}/{relative}")
            if is_dir:
                commands.append(f"mkdir -p {shlex.quote(dest)} && cp -a {source}/. {shlex.quote(dest)}/")
            elif into_dir:
                commands.append(f"mkdir -p {shlex.quote(dest)} && cp -a {source} {shlex.quote(dest)}/")
            else:
                commands.append(f"mkdir -p \"$(dirname {shlex.quote(dest)})\" && cp -a {source} {shlex.quote(dest)}")
            if mode:
                target = shlex.quote(dest if is_dir or not into_dir else f"{dest.rstrip('/')}/{os.path.basename(relative)}")
                commands.append(f"find {target} -type f -exec chmod {shlex.quote(mode)} {{}} +" if is_dir
                                else f"chmod {shlex.quote(mode)} {target}")
        try:
            await self._run_step(build, table, step, " && ".join(commands), owner)
        finally:
            await run_command(table, f"rm -rf {shlex.quote(inside)}", "root", "/", {"PATH": DEFAULT_PATH})

    async def _finalize(self, build: BuildRecord, table: ProcessTable) -> None:
        """E2B starts the template's start command at the end of the build and waits for its ready
        check; a template whose check never passes fails here rather than in every sandbox."""
        build.log(f"Start command: {build.start_cmd or '-'}; ready check: {build.ready_cmd or '-'}", step="finalize")
        if not await start_and_wait(table, build, self._envs(build), READY_TIMEOUT_SECONDS):
            raise StepFailed("finalize", f"the ready check ({build.ready_cmd}) did not pass within "
                                         f"{READY_TIMEOUT_SECONDS} s of the start command")


def _unpack(archive: Path, staging: Path, src: str, owner_uid: int, cap: int) -> list[tuple[str, bool]]:
    """Unpack the step's archive into `staging` (refusing anything outside it, and more than `cap`
    bytes unpacked), owned by `owner_uid`; returns the (relative path, is dir) matches of `src`."""
    with tarfile.open(archive, "r:*") as tar:
        total = 0
        for member in tar:
            total += member.size
            if total > cap:
                raise ValueError(f"more than {cap} bytes once unpacked")
        staging.mkdir(mode=0o700)
        tar.extractall(staging, filter="data")
    for directory, dirnames, filenames in os.walk(staging):
        os.lchown(directory, owner_uid, owner_uid)
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(directory, name), owner_uid, owner_uid)
    os.chmod(staging, 0o755)
    pattern = os.path.join(glob.escape(str(staging)), src.rstrip("/") or ".")
    matches = sorted(glob.glob(pattern))
    return [(os.path.relpath(match, staging), os.path.isdir(match) and not os.path.islink(match))
            for match in matches]


async def _copy_tree(source: Path, target: Path) -> None:
    """The base template's layer as the start of this one (ownership, modes, links kept)."""
    process = await asyncio.create_subprocess_exec("cp", "-a", "--reflink=auto", f"{source}/.", f"{target}/",
                                                   stderr=asyncio.subprocess.PIPE)
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"cannot copy the base layer: {stderr.decode(errors='replace').strip()}")
