"""The sessions as the task book shows them (tasks/sessions.py has the rules): read from the tasks
the operator holds, and mirrored into each agent's status.sessions (written only on a change)."""

from __future__ import annotations

from collections import defaultdict

from remote_agents.api.names import AGENTS
from remote_agents.controller.agents.fleet import Fleet
from remote_agents.controller.clients.kube import Kube
from remote_agents.controller.tasks import sessions
from remote_agents.controller.tasks.book import Task, TaskBook


def turn_of(task: Task) -> sessions.Turn:
    meta, status = task["metadata"], task["status"]
    return sessions.Turn(created=meta.get("creationTimestamp") or "", name=meta["name"], phase=status.get("phase"),
                         agent=status.get("agent"), sandbox=status.get("sandboxID"))


class SessionLedger:
    def __init__(self, book: TaskBook, kube: Kube, fleet: Fleet):
        self.book = book
        self.kube = kube
        self.fleet = fleet

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
        """Bring every agent's status.sessions to the count of sessions it holds (compared with
        what the fleet's view of it shows: nothing to remember, also across restarts)."""
        counts = {key: len(holding.held) for key, holding in self.holdings().items()}
        for view in list(self.fleet.agents.values()):
            count = counts.get((view.namespace, view.name), 0)
            if view.sessions != count and not view.deleting:
                await self.kube.patch_status(AGENTS, view.namespace, view.name, {"sessions": count})
