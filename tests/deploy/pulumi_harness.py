"""Run the Pulumi program in-process under mocks and keep what it declared (no CLI, no plugins)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs
from pulumi.runtime.settings import get_root_resource, set_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from remote_agents_infra import program

PROJECT = "remote-agents"
# What RandomPassword "generates" under mocks (the engine would compute it once and keep it in state).
FAKE_WEBHOOK_SECRET = "mock-webhook-secret-d41d8cd98f00"
SECRETS = {
    "e2bApiKey": "e2b_mock_3f9a1c77e5",
    "githubToken": "ghp_mock_8b2e44d0a1",
    "openaiApiKey": "sk-mock-openai-5c6d7e",
    "financialDatasetsApiKey": "fd-mock-91ab02",
    "kubeconfig": "apiVersion: v1\nkind: Config\n# mock-kubeconfig-77aa\n",
}


class _RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[MockResourceArgs] = []

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict]:
        self.resources.append(args)
        state = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = FAKE_WEBHOOK_SECRET
        return f"{args.name}-id", state

    def call(self, args) -> tuple[dict, None]:
        return {}, None


class _ProtectRecordingMonitor(MockMonitor):
    """MockResourceArgs has no `protect`; the registration request does."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.protect: dict[tuple[str, str], bool] = {}

    def RegisterResource(self, request):
        self.protect[(request.type, request.name)] = request.protect
        return super().RegisterResource(request)


def unwrap(value: Any) -> Any:
    """Plain data: secrets unwrapped, integral floats (how numbers cross the mock boundary) as ints."""
    if rpc.is_rpc_secret(value):
        return unwrap(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {key: unwrap(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass
class Run:
    resources: list[MockResourceArgs]
    protect: dict[tuple[str, str], bool]
    outputs: dict[str, tuple[Any, bool]]  # name -> (value, is_secret)

    def of_type(self, typ: str) -> list[MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name: str | None = None) -> MockResourceArgs:
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {typ} {name or ''}, got {[r.name for r in found]}"
        return found[0]

    def kubernetes(self) -> list[MockResourceArgs]:
        return [r for r in self.resources if r.typ.startswith("kubernetes:") and r.custom
                and not r.typ.startswith("pulumi:providers:")]

    def manifests(self) -> list[dict[str, Any]]:
        return [unwrap(r.inputs) for r in self.kubernetes()]


def base_config(**overrides: Any) -> dict[str, Any]:
    return {**SECRETS, "repositories": ["acme/research-agent", "acme/dexter-fork", "other-org/tools"],
            "webhookUrl": "https://hooks.example.com/github", **overrides}


def _resolve(value: Any) -> tuple[Any, bool]:
    output = pulumi.Output.from_input(value)
    return _sync_await(output.future()), _sync_await(output.is_secret())


_LOOP = asyncio.new_event_loop()


def run_program(config: dict[str, Any]) -> Run:
    mocks = _RecordingMocks()
    monitor = _ProtectRecordingMonitor(mocks)
    set_root_resource(None)  # a fresh Stack per run, so exports of an earlier run do not linger
    # Pulumi's mocks run on the thread's current event loop; an earlier asyncio.run() (the client's
    # ref lookup, in the e2e tests) leaves none behind.
    asyncio.set_event_loop(_LOOP)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="test", preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(
        {f"{PROJECT}:{key}": value if isinstance(value, str) else json.dumps(value) for key, value in config.items()},
        [f"{PROJECT}:{key}" for key in config if key in SECRETS])
    _sync_await(run_pulumi_func(program.run))
    outputs = {name: _resolve(value) for name, value in get_root_resource().outputs.items()}
    return Run(mocks.resources, monitor.protect, outputs)
