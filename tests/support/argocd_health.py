"""Run our Argo CD health checks the way Argo CD does: a Lua 5.1 chunk, the object in `obj`."""

from __future__ import annotations

from typing import Any

from lupa import lua51

from remote_agents.deploy import argocd


def health(obj: dict[str, Any]) -> dict[str, str]:
    """{"status": ..., "message": ...} as Argo CD would show it for `obj`."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    returned = lua.execute(argocd.SCRIPTS[obj["kind"]])
    return {"status": returned["status"], "message": returned["message"]}
