"""Sessions (AgentTask.spec.session): pure rules for where a session's task may run.

A session's tasks run one at a time, first created first, on the agent that holds the session:
the agent that ran its latest task (and the sandbox it ran in). Ownership is read from the tasks'
own statuses, never kept in memory, so an operator restart finds it again. The first task of a
session goes to any free agent of its target; a busy holder makes the next task wait rather than
go elsewhere; a holder that is gone, or whose sandbox was replaced, fails it (the conversation
cannot go on there).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

WAITING, RUNNING = ("Pending", None), "Running"
SESSION_BUSY = "SessionBusy"
SESSION_AGENT_GONE = "SessionAgentGone"
SESSION_LOST = "SessionLost"

SessionKey = tuple[str, str]  # (namespace, session name)


@dataclass(frozen=True)
class Turn:
    """One task of a session, as these rules see it."""

    created: str  # creationTimestamp (RFC 3339 sorts in time order)
    name: str
    phase: str | None
    agent: str | None = None  # status.agent: where it runs or ran
    sandbox: str | None = None  # status.sandboxID

    @property
    def order(self) -> tuple[str, str]:
        return self.created, self.name  # the task queue's FIFO order (ties by name)


@dataclass(frozen=True)
class Placement:
    """Where a session's task may go: `agent` (None: any free agent of its target), or it waits
    (`wait`) or fails (`fail`), with the reason and a message."""

    agent: str | None = None
    wait: str = ""
    fail: str = ""
    message: str = ""


def holder(turns: Iterable[Turn]) -> Turn | None:
    """The session's latest task that was given an agent: its agent holds the session."""
    placed = [t for t in turns if t.agent]
    return max(placed, key=lambda t: t.order) if placed else None


def place(session: str, this: Turn, turns: Iterable[Turn], agents: Mapping[str, str | None]) -> Placement:
    """Where `this` (a waiting task of `session`) may run; `turns` are all of the session's tasks,
    `agents` the target's agents now (name -> sandbox id, None while being created)."""
    turns = list(turns)
    ahead = [t for t in turns if t.name != this.name and (t.phase == RUNNING or
                                                           (t.phase in WAITING and t.order < this.order))]
    if ahead:
        first = min(ahead, key=lambda t: t.order)
        return Placement(wait=SESSION_BUSY, message=f"waiting for task {first.name} of session {session} "
                                                    f"({'running' if first.phase == RUNNING else 'queued'})")
    held = holder(t for t in turns if t.name != this.name)
    if held is None:
        return Placement()
    if held.agent not in agents:
        return Placement(fail=SESSION_AGENT_GONE,
                         message=f"session {session} was held by agent {held.agent}, which is gone: its "
                                 f"conversation cannot go on (start a new session)")
    now = agents[held.agent]
    if held.sandbox and now and now != held.sandbox:
        return Placement(fail=SESSION_LOST,
                         message=f"session {session} lived in sandbox {held.sandbox} of agent {held.agent}, which "
                                 f"was replaced by {now}: its conversation is lost (start a new session)")
    return Placement(agent=held.agent)


@dataclass(frozen=True)
class Holding:
    """The sessions an agent holds, and those of them with a task queued or running."""

    held: frozenset[str] = frozenset()
    active: frozenset[str] = frozenset()


def holdings(sessions: Mapping[SessionKey, Iterable[Turn]]) -> dict[tuple[str, str], Holding]:
    """By (namespace, agent): the sessions it holds. An active session's waiting task will go
    there, so removing that agent loses the conversation."""
    held: dict[tuple[str, str], set[str]] = defaultdict(set)
    active: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (namespace, session), turns in sessions.items():
        turns = list(turns)
        owner = holder(turns)
        if owner is None:
            continue
        held[(namespace, owner.agent)].add(session)
        if any(t.phase in WAITING or t.phase == RUNNING for t in turns):
            active[(namespace, owner.agent)].add(session)
    return {key: Holding(frozenset(names), frozenset(active.get(key, ()))) for key, names in held.items()}
