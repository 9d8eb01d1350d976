"""Which waiting task runs where: the heads of the per-target FIFO queues get agents with a free
slot (reserved in memory as they are handed out), and the runs start in the background; tasks
that must wait are told why when that is news to their owner."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from remote_agents.api.models import AgentTaskSpec
from remote_agents.api.timestamps import epoch, now_rfc3339
from remote_agents.controller.agents.decide import AgentView
from remote_agents.controller.agents.fleet import Fleet
from remote_agents.controller.agents.idle import AgentActivity
from remote_agents.controller.status import Outcome
from remote_agents.controller.tasks import decide, retry, sessions
from remote_agents.controller.tasks.book import Task, TaskBook
from remote_agents.controller.tasks.index import Target
from remote_agents.controller.tasks.runs import Runs
from remote_agents.controller.tasks.session_ledger import SessionLedger, turn_of
from remote_agents.controller.tasks.scheduler import Scheduler

# "Why it waits" notes in flight at once: a burst of waiting tasks must not queue the claims and
# results (the work itself) behind a thousand notes on the API connections.
PENDING_NOTES_IN_FLIGHT = 4


class Dispatcher:
    def __init__(self, book: TaskBook, scheduler: Scheduler, fleet: Fleet, activity: AgentActivity, runs: Runs,
                 ledger: SessionLedger):
        self.book = book
        self.scheduler = scheduler
        self.fleet = fleet
        self.activity = activity
        self.runs = runs
        self.ledger = ledger
        self._notes_in_flight = 0
        self._round_turns: dict[sessions.SessionKey, list[sessions.Turn]] | None = None

    def dispatch(self) -> None:
        """Start what can start now. Each call looks at the head of every queue: callers let the
        reasons to call gather (a round) rather than call once per freed slot."""
        self.scheduler.dispatch_due = False
        self._round_turns = None
        load = self.scheduler.running_counts()
        for target in self.book.index.targets():
            self._dispatch_queue(target, load)

    def _dispatch_queue(self, target: Target, load: Counter) -> None:
        """Give the target's tasks agents in queue order (priority, then FIFO) until none has a free
        slot. The rest wait; a retried task waits out its backoff without holding up the others."""
        namespace = target[0]
        now = time.time()
        pairs: list[tuple[decide.Candidate, AgentView]] | None = None  # the target's agents, kept current
        waiting = self.book.index.waiting(target)
        for uid in waiting:
            if uid in self.scheduler.busy:
                continue  # being claimed, or its note is being written
            task = self.book.tasks[uid]
            if (epoch(task["status"].get("nextAttemptTime")) or 0) > now:
                continue
            spec = self.book.spec(task)
            if pairs is None:
                pairs = self._candidates(namespace, spec, load)
            candidates = [c for c, _ in pairs]
            if spec.session:  # a session's task waits for its turn and its holder, never blocking others
                placement = self._place(task, spec.session, pairs)
                if placement.fail or placement.wait:
                    self._settle_session_task(task, placement)
                    continue
                candidates = [c for c in candidates if placement.agent in (None, c.name)]
            choice = decide.choose_agent(candidates, by_ref=spec.agent_ref is not None)
            if choice.agent is None:
                if spec.session:
                    self._explain(target, (uid,), choice)
                    continue
                self._explain(target, itertools.chain((uid,), waiting), choice)
                return
            index, view = next((i, v) for i, (c, v) in enumerate(pairs) if c.name == choice.agent)
            if choice.wake:  # one task wakes the agent; the others wait for it
                self.scheduler.spawn(uid, self._wake_agent(task, view))
                if spec.session:
                    continue
                self._explain(target, waiting,
                              decide.Dispatch(None, reason="WakingAgent", message=f"resuming idle agent {view.name}"))
                return
            if not view.sandbox_id:
                return  # Ready without a sandbox id: the agent's status is being written; next round
            load[(namespace, view.name)] += 1
            pairs[index] = (dataclasses.replace(pairs[index][0], running_tasks=load[(namespace, view.name)]), view)
            self.scheduler.starting[uid] = (namespace, view.name)
            self.scheduler.spawn(uid, self._start(task, view))

    def _candidates(self, namespace: str, spec: AgentTaskSpec,
                    load: Counter) -> list[tuple[decide.Candidate, AgentView]]:
        if spec.agent_ref:
            view = self.fleet.find(namespace, spec.agent_ref.name)
            views = [view] if view and not view.deleting else []
        else:
            views = self.fleet.members(namespace, spec.pool_ref.name)
        held = self._held_counts() if spec.session and spec.pool_ref else {}
        return [(decide.Candidate(
            name=v.name, ready=v.ready and not v.server_outdated, user_paused=bool(v.spec and v.spec.paused),
            idle_paused=v.idle_paused, running_tasks=load.get((namespace, v.name), 0),
            sessions=held.get((namespace, v.name), 0),
            max_concurrent_tasks=v.spec.max_concurrent_tasks if v.spec else 1,
            has_query_command=bool(v.spec and (v.spec.query.command or v.spec.server))), v) for v in views]

    # ---- sessions -----------------------------------------------------------------------------
    def _turns(self) -> dict[sessions.SessionKey, list[sessions.Turn]]:
        """The sessions' tasks, read once per round (and only by a round that meets a session)."""
        if self._round_turns is None:
            self._round_turns = self.ledger.turns()
        return self._round_turns

    def _held_counts(self) -> dict[tuple[str, str], int]:
        return {key: len(h.held) for key, h in sessions.holdings(self._turns()).items()}

    def _place(self, task: Task, session: str, pairs: list[tuple[decide.Candidate, AgentView]]) -> sessions.Placement:
        turns = self._turns().get((task["metadata"]["namespace"], session), [])
        return sessions.place(session, turn_of(task), turns, {v.name: v.sandbox_id for _, v in pairs})

    def _settle_session_task(self, task: Task, placement: sessions.Placement) -> None:
        """Fail a task whose session cannot go on, or say why it waits for its turn."""
        if placement.wait:
            self._note_pending(task, decide.Dispatch(None, reason=placement.wait, message=placement.message))
            return

        async def fail() -> None:
            await self.book.write(task, Outcome(False, placement.fail, placement.message, stalled=True),
                                  phase="Failed", finished=False, completionTime=now_rfc3339(),
                                  session=self.book.spec(task).session)
            self.runs.emit(task, "Warning", placement.fail, placement.message)
        self.scheduler.spawn(task["metadata"]["uid"], fail())

    async def _start(self, task: Task, view: AgentView) -> None:
        meta = task["metadata"]
        attempt = (task["status"].get("attempts") or 0) + 1
        # The claim first (status says Running on this agent, with the run's id): after a crash the
        # run is found, not repeated, and a delete from now on stops it (tasks/cancel.py).
        try:
            claimed = await self.book.write(
                task, Outcome(False, "Running", f"running on {view.name}", reconciling=True), phase="Running",
                agent=view.name, startTime=now_rfc3339(), runId=retry.run_id(meta["uid"], attempt),
                sandboxID=view.sandbox_id, attempts=attempt, nextAttemptTime=None,
                session=self.book.spec(task).session)
        finally:
            self.scheduler.starting.pop(meta["uid"], None)
        self.activity.note(meta["namespace"], view.name)
        if claimed and self.book.tasks.get(meta["uid"]) is task and not meta.get("deletionTimestamp"):
            await self.runs.launch(task, view)  # (deleted from here on: its DELETED event stops the run)

    async def _wake_agent(self, task: Task, view: AgentView) -> None:
        await self.activity.wake(view, for_task=task)
        await self.book.write(task, Outcome(False, "WakingAgent", f"resuming idle agent {view.name}",
                                            reconciling=True), phase="Pending")

    # ---- why tasks wait -----------------------------------------------------------------------
    def _explain(self, target: Target, waiting: Iterable[str], why: decide.Dispatch) -> None:
        """Notes for tasks that wait for `why`. In the ordinary queue only tasks that show another
        reason need one (see decide.worth_a_note): found in the index, not by reading the queue."""
        for uid in self.book.index.explained(target) if why.reason == decide.QUEUED else waiting:
            if self._notes_in_flight >= PENDING_NOTES_IN_FLIGHT:
                return  # the rest at later rounds
            if uid not in self.scheduler.busy:
                self._note_pending(self.book.tasks[uid], why)

    def _note_pending(self, task: dict[str, Any], why: decide.Dispatch) -> None:
        """Say in the task's status why it waits (if it is worth a write)."""
        status = task["status"]
        if status.get("phase") == "Pending" and status.get("message") == why.message:
            return  # said already (the cheap test first)
        if not decide.worth_a_note(why.reason, has_conditions=bool(status.get("conditions"))):
            return
        desired = self.book.status_patch(task, Outcome(False, why.reason, why.message, reconciling=True),
                                         phase="Pending")
        if desired is None:
            return

        async def note() -> None:
            try:
                await self.book.apply(task, desired)
            finally:
                self._notes_in_flight -= 1
        self._notes_in_flight += 1  # now, not when the note starts: the round goes on counting
        self.scheduler.spawn(task["metadata"]["uid"], note())
