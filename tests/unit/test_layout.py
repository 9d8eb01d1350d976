"""The rules the operator's tree keeps (docs/architecture.md), checked on the imports of its sources."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "remote_agents"
CONTROLLER = PACKAGE / "controller"
PURE = ["api/models.py", "api/names.py", "api/schema.py", "api/timestamps.py", "controller/status.py",
        "controller/sandboxes.py", "controller/redaction.py", "controller/retry.py", "controller/agents/decide.py",
        "controller/pools/decide.py", "controller/pools/autoscale.py", "controller/tasks/decide.py",
        "controller/tasks/index.py", "controller/tasks/runner.py", "controller/tasks/progress.py",
        "controller/sources/repos.py", "controller/templates/decide.py", "controller/templates/users.py"]
CLIENT_LIBRARIES = {"kopf", "kubernetes", "e2b", "aiohttp", "github"}
OUR_CLIENTS = "remote_agents.controller.clients"


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources(under: Path) -> list[Path]:
    return sorted(under.rglob("*.py"))


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_client_and_no_kopf(module):
    assert (PACKAGE / module).exists()
    assert not [name for name in imports(PACKAGE / module)
                if name.split(".")[0] in CLIENT_LIBRARIES or name.startswith(OUR_CLIENTS)]


@pytest.mark.parametrize("kind", ["agents", "pools", "tasks", "templates"])
def test_no_kind_imports_another_kinds_reconciler(kind):
    others = {"agents", "pools", "tasks", "templates"} - {kind}
    reconcilers = {f"remote_agents.controller.{other}.{module}" for other in others
                   for module in ("reconcile", "controller", "dispatch", "runs")}
    offending = {(path.name, name) for path in sources(CONTROLLER / kind) for name in imports(path)
                 if any(name == r or name.startswith(r + ".") for r in reconcilers)}
    assert not offending


def test_only_the_e2b_client_imports_the_e2b_sdk_and_only_main_and_handlers_import_kopf():
    e2b_users = {path.relative_to(PACKAGE).as_posix() for path in sources(PACKAGE)
                 if any(name.split(".")[0] == "e2b" for name in imports(path))}
    kopf_users = {path.relative_to(PACKAGE).as_posix() for path in sources(PACKAGE)
                  if any(name.split(".")[0] == "kopf" for name in imports(path))}
    # The operator's E2B calls go through its gateway (sandboxes) and its template builder; the client
    # reads a run's output through live_output.
    assert e2b_users == {"controller/clients/e2b.py", "controller/clients/e2b_templates.py", "live_output.py"}
    assert kopf_users == {"controller/main.py", "controller/handlers.py"}
