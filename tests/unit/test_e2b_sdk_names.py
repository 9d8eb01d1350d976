"""The operator against the pinned E2B SDK's own names: every SDK name its code spells must exist
(an `except` clause naming a missing attribute raises AttributeError only when something is
raised through it, so nothing else would notice), and a command's non-zero exit, raised by the
SDK as e2b.CommandExitException, is an outcome of SandboxGateway.run."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import SimpleNamespace

import e2b

from remote_agents.controller.clients import e2b as gateway_module
from remote_agents.controller.clients.e2b import SandboxGateway
from remote_agents.controller.sandboxes import CommandOutcome, SandboxAddress
from remote_agents.controller.settings import GatewaySettings

OPERATOR_SOURCES = Path(gateway_module.__file__).resolve().parents[2]  # operator/remote_agents


def _dotted(node: ast.expr) -> list[str] | None:
    """["a", "b", "c"] for the expression a.b.c; None for anything that is not a plain chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def sdk_names(source: str) -> tuple[set[str], set[str]]:
    """The e2b names a module spells, fully qualified ("e2b.exceptions.RateLimitException"), and
    those of them that stand in `except` clauses."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> what it is in the SDK
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "e2b":
                    aliases[alias.asname or "e2b"] = alias.name if alias.asname else "e2b"
                    names.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "e2b":
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                names.add(f"{node.module}.{alias.name}")

    def qualified(node: ast.expr) -> str | None:
        chain = _dotted(node)
        if chain and chain[0] in aliases:
            return ".".join([aliases[chain[0]], *chain[1:]])
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (name := qualified(node)) is not None:
            names.add(name)  # (a.b.c and its prefix a.b both: each must exist)
    caught: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            for expr in node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]:
                if (name := qualified(expr)) is not None:
                    caught.add(name)
    return names, caught


def resolve(name: str) -> object:
    """The object a dotted SDK name stands for, importing submodules on the way; AttributeError or
    ImportError when it does not exist."""
    parts = name.split(".")
    found: object = importlib.import_module(parts[0])
    for index, part in enumerate(parts[1:], start=1):
        try:
            found = getattr(found, part)
        except AttributeError:
            found = importlib.import_module(".".join(parts[:index + 1]))
    return found


def exists(name: str) -> bool:
    try:
        resolve(name)
    except (AttributeError, ImportError):
        return False
    return True


def operator_sdk_names() -> tuple[set[str], set[str]]:
    names: set[str] = set()
    caught: set[str] = set()
    for path in OPERATOR_SOURCES.rglob("*.py"):
        found, excepted = sdk_names(path.read_text())
        names |= found
        caught |= excepted
    return names, caught


def test_every_sdk_name_the_operator_spells_exists_in_the_pinned_sdk():
    names, caught = operator_sdk_names()
    # The scan sees the gateway's names (else it would pass by seeing nothing).
    assert {"e2b.CommandExitException", "e2b.exceptions.RateLimitException", "e2b.AsyncSandbox"} <= names, names
    assert "e2b.exceptions.SandboxNotRunningException" in caught
    assert sorted(n for n in names if not exists(n)) == []
    not_exceptions = sorted(n for n in caught if not (isinstance(resolve(n), type)
                                                      and issubclass(resolve(n), BaseException)))
    assert not_exceptions == []


def test_the_scan_reports_an_except_clause_naming_what_the_sdk_does_not_define():
    # The defect of issue 23, as it was written: e2b.exceptions has no CommandExitException.
    names, caught = sdk_names(
        "from e2b import exceptions as e2b_errors\n"
        "try:\n    pass\nexcept (e2b_errors.CommandExitException, e2b_errors.TimeoutException):\n    pass\n")
    assert caught == {"e2b.exceptions.CommandExitException", "e2b.exceptions.TimeoutException"}
    assert sorted(n for n in names if not exists(n)) == ["e2b.exceptions.CommandExitException"]


class _SandboxWhoseCommandsExit:
    """What AsyncSandbox.connect gives: a sandbox whose every command exits 3, as the SDK says it."""

    commands_run: list[str] = []

    @classmethod
    async def connect(cls, sandbox_id: str, **_: object) -> SimpleNamespace:
        async def run(command: str, **__: object):
            cls.commands_run.append(command)
            raise e2b.CommandExitException(stderr="npm ERR! missing\n", stdout="installing\n", exit_code=3,
                                           error="exit status 3")
        return SimpleNamespace(commands=SimpleNamespace(run=run))


async def test_a_non_zero_exit_raised_as_the_sdk_raises_it_is_an_outcome(monkeypatch):
    monkeypatch.setattr(gateway_module, "AsyncSandbox", _SandboxWhoseCommandsExit)
    gateway = SandboxGateway(GatewaySettings(calls_per_second=100))
    outcome = await gateway.run(SandboxAddress("sbx-1"), "npm install", envs={}, cwd="/home/user", timeout_seconds=5)
    assert outcome == CommandOutcome(3, "installing\n", "npm ERR! missing\n")
    assert _SandboxWhoseCommandsExit.commands_run == ["npm install"]
