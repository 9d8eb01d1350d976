"""The sessions as the task book shows them (tasks/sessions.py has the rules): read from the tasks
the operator holds, and mirrored into each agent's status.sessions (written only on a change)."""

from __future__ import annotations

from collections import defaultdict

from remote_agents.api.names import AGENTS
from remote_agents.controller.clients.kube import Kube
from remote_agents.controller.tasks import sessions
from remote_agents.controller.tasks.book import Task, TaskBook


def turn_of(task: Task) -> sessions.Turn:
    meta, status = task["metadata"], task["status"]
    return sessions.Turn(created=meta.get("creationTimestamp") or "", name=meta["name"], phase=status.get("phase"),
                         agent=status.get("agent"), sandbox=status.get("sandboxID"))


class SessionLedger:
    def __init__(self, book: TaskBook, kube: Kube):
        self.book = book
        self.kube = kube
        self._written: dict[tuple[str, str], int] = {}  # (namespace, agent) -> status.sessions as written

    def turns(self) -> dict[sessions.SessionKey, list[sessions.Turn]]:
        """Every session's tasks; one pass over the book (dispatch asks once per round, only when
        a waiting task has a session)."""
        found: dict[sessions.SessionKey, list[sessions.Turn]] = defaultdict(list)
        for task in self.book.tasks.values():
            name = task["spec"].get("session")
            if name:
                found[(task["metadata"]["namespace"], name)].append(turn_of(task))
        return found

    def holdings(self) -> dict[tuple[str, str], sessions.Holding]:
        return sessions.holdings(self.turns())

    def held_by(self, namespace: str, agent: str) -> list[str]:
        holding = self.holdings().get((namespace, agent))
        return sorted(holding.held) if holding else []

    async def mirror(self) -> None:
        """status.sessions of every agent that holds sessions, or held some when last written."""
        counts = {key: len(holding.held) for key, holding in self.holdings().items()}
        for key in set(counts) | set(self._written):
            count = counts.get(key, 0)
            if self._written.get(key) == count:
                continue
            if await self.kube.patch_status(AGENTS, *key, {"sessions": count}) is None or count == 0:
                self._written.pop(key, None)  # gone, or nothing left to say
            else:
                self._written[key] = count
