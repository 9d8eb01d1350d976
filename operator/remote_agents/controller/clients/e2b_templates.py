"""E2B template builds, through the SDK's own template API (`AsyncTemplate`: the builder, then
`build_in_background` and `get_build_status`), and their deletion through the SDK's generated API
client (AsyncTemplate has no delete): no HTTP of our own.

Each call goes through the sandbox gateway's bounds, rate limit, retries and error translation
(clients/e2b.py); builds have a tighter bound of their own, as a build request uploads the
template's files.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from e2b import AsyncTemplate
from e2b.api import encode_path_param, handle_api_exception
from e2b.api.client.api.templates import delete_templates_template_id
from e2b.api.client_async import get_api_client
from e2b.connection_config import ConnectionConfig
from e2b.exceptions import BuildException, SandboxException
from e2b.template.main import TemplateClass
from e2b.template.types import BuildInfo

from remote_agents.controller.clients.e2b import E2BRejected, SandboxGateway, api_options
from remote_agents.controller.sandboxes import E2BAccount
from remote_agents.controller.templates.decide import (
    BuildProgress, CopyFiles, Recipe, RunCommand, SetEnv, SetWorkdir,
)

_STATUS_CODE = re.compile(r"^(\d{3}):")


@dataclass(frozen=True)
class BuildRef:
    template_id: str
    build_id: str


def builder(recipe: Recipe, context: Path) -> TemplateClass:
    """The SDK's template for `recipe` (what AsyncTemplate.build takes), its copies read from `context`."""
    template = AsyncTemplate(file_context_path=str(context))
    steps = template.from_template(recipe.from_template) if recipe.from_template else \
        template.from_image(recipe.from_image)
    for instruction in recipe.instructions:
        match instruction:
            case RunCommand(command=command, user=user):
                steps.run_cmd(command, user=user)
            case CopyFiles(source=source, destination=destination, user=user):
                steps.copy(source, destination, user=user)
            case SetEnv(values=values):
                steps.set_envs(values)
            case SetWorkdir(path=path):
                steps.set_workdir(path)
    if recipe.start_command:
        return steps.set_start_cmd(recipe.start_command, recipe.ready_command)
    if recipe.ready_command:
        return steps.set_ready_cmd(recipe.ready_command)
    return steps


def _translated(error: BuildException) -> Exception:
    """The SDK's BuildException carries the HTTP status in its message: 4xx is E2B refusing the
    build (retrying won't help), anything else a connection-like failure the gateway retries."""
    code = _STATUS_CODE.match(str(error))
    if code and 400 <= int(code[1]) < 500:
        return E2BRejected(f"build: {error}")
    return ConnectionError(f"build: {error}")


class TemplateBuilds:
    def __init__(self, gateway: SandboxGateway, max_builds: int = 2):
        self.gateway = gateway
        self._slots = asyncio.Semaphore(max_builds)  # build requests (with their uploads) at once

    async def start(self, recipe: Recipe, name: str, context: Path, account: E2BAccount) -> BuildRef:
        """Ask E2B to build `recipe` as template `name`; returns once the build is started."""
        try:
            template = builder(recipe, context)
        except (SandboxException, ValueError) as error:  # the SDK's own checks of the steps
            raise E2BRejected(f"build: {error}") from error

        async def request() -> BuildRef:
            try:
                info = await AsyncTemplate.build_in_background(
                    template, name, cpu_count=recipe.cpu_count, memory_mb=recipe.memory_mb,
                    **api_options(account))
            except BuildException as error:
                raise _translated(error) from error
            return BuildRef(info.template_id, info.build_id)
        async with self._slots:
            return await self.gateway.call("build", request)

    async def progress(self, build: BuildRef, logs_offset: int, account: E2BAccount) -> BuildProgress:
        """The build's state, and its log lines from `logs_offset` on."""
        info = BuildInfo(template_id=build.template_id, build_id=build.build_id, name="", alias="")

        async def look() -> BuildProgress:
            try:
                status = await AsyncTemplate.get_build_status(info, logs_offset=logs_offset,
                                                              **api_options(account))
            except BuildException as error:
                raise _translated(error) from error
            reason = status.reason
            return BuildProgress(state=status.status.value, log_lines=[entry.message for entry in status.log_entries],
                                 reason=reason.message if reason else None, step=reason.step if reason else None)
        return await self.gateway.call("build_status", look)

    async def delete(self, template_id: str, account: E2BAccount) -> bool:
        """Delete template `template_id` of `account` (E2B cancels its builds; sandboxes made from it
        keep running); False when it was gone already."""
        async def request() -> bool:
            # The client AsyncTemplate.get_build_status builds, for the generated call it lacks.
            client = get_api_client(ConnectionConfig(**api_options(account)))
            response = await delete_templates_template_id.asyncio_detailed(encode_path_param(template_id),
                                                                          client=client)
            if response.status_code == 404:
                return False
            if response.status_code >= 300:  # the SDK's errors, which the gateway translates and retries
                raise handle_api_exception(response)
            return True
        return await self.gateway.call("template_delete", request)
