"""Which agents and pools use which E2BTemplate (spec.templateRef), kept from the streams of them, so
that a template's change reaches exactly its users without looking at every agent. Pure."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

Key = tuple[str, str]  # (namespace, E2BTemplate name)


def template_ref_of(agent_spec: object) -> str | None:
    """spec.templateRef.name of a RemoteAgent spec (or a pool template's), read leniently."""
    ref = agent_spec.get("templateRef") if isinstance(agent_spec, dict) else None
    return ref.get("name") if isinstance(ref, dict) and ref.get("name") else None


class TemplateUsers:
    def __init__(self) -> None:
        self._agents: dict[Key, set[str]] = defaultdict(set)
        self._pools: dict[Key, set[str]] = defaultdict(set)
        self._agent_uses: dict[Key, Key] = {}  # (namespace, agent) -> the template key it uses
        self._pool_uses: dict[Key, Key] = {}
        self._served: dict[Key, tuple] = {}  # what each template serves, as last seen

    @staticmethod
    def _track(users: dict[Key, set[str]], uses: dict[Key, Key], namespace: str, name: str,
               template: str | None) -> None:
        before = uses.pop((namespace, name), None)
        if before:
            users[before].discard(name)
        if template:
            uses[(namespace, name)] = (namespace, template)
            users[(namespace, template)].add(name)

    def agent_changed(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        template = None if event_type == "DELETED" else template_ref_of(body.get("spec"))
        self._track(self._agents, self._agent_uses, meta["namespace"], meta["name"], template)

    def pool_seen(self, namespace: str, name: str, template: str | None) -> None:
        """A pool's template names this E2BTemplate (None: none, or the pool is gone)."""
        self._track(self._pools, self._pool_uses, namespace, name, template)

    def template_changed(self, event_type: str | None, body: dict[str, Any]) -> tuple[list[str], list[str]] | None:
        """The (agents, pools) to tell when what the template serves changed (its Ready build, or it
        is gone); None when nothing they use changed, or on the first sighting (listed at start)."""
        meta, status = body["metadata"], body.get("status") or {}
        key = (meta["namespace"], meta["name"])
        served = ("gone",) if event_type == "DELETED" else \
            (status.get("phase"), status.get("templateID"), status.get("readyContentHash"))
        before = self._served.get(key)
        self._served[key] = served
        if event_type == "DELETED":
            self._served.pop(key, None)
        if event_type is None or before == served:
            return None
        return sorted(self._agents.get(key, ())), sorted(self._pools.get(key, ()))
