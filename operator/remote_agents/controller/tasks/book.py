"""The operator's view of every AgentTask, and the one writer of their status.

Kept from the task stream (clients/watch.py) and from our own writes, which are applied here
first: an older watch event never rolls them back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from remote_agents.api.models import AgentTaskSpec
from remote_agents.api.names import API_VERSION, TASKS
from remote_agents.controller.clients.kube import Kube
from remote_agents.controller.status import Outcome, status_update
from remote_agents.controller.tasks.index import Target, TaskIndex

Task = dict[str, Any]  # an AgentTask's body: metadata, spec, status (always present)


def resource_version(body: Mapping[str, Any]) -> int:
    """The object's resourceVersion as a number (an etcd revision in every kube-apiserver)."""
    version = str(body["metadata"].get("resourceVersion") or "0")
    return int(version) if version.isdigit() else 0


class TaskBook:
    def __init__(self, kube: Kube):
        self.kube = kube
        self.tasks: dict[str, Task] = {}  # uid -> latest body (status updated as we write)
        self.index = TaskIndex()  # the waiting ones by target, the running ones
        self._specs: dict[str, AgentTaskSpec] = {}

    def observe(self, body: Mapping[str, Any]) -> tuple[Task | None, bool]:
        """Take a listed, added or modified task in. Returns it (None for a stale event) and whether
        its phase changed (the echoes of our own writes do not)."""
        uid = body["metadata"]["uid"]
        known = self.tasks.get(uid)
        if known and resource_version(known) > resource_version(body):
            return None, False
        fresh = {"apiVersion": API_VERSION, "kind": "AgentTask", "metadata": dict(body["metadata"]),
                 "spec": dict(body["spec"]), "status": dict(body.get("status") or {})}
        phase_changed = known is None or known["status"].get("phase") != fresh["status"].get("phase")
        if known:
            known.update(fresh)  # in place: operations in flight hold this very dict
        else:
            self.tasks[uid] = fresh
        self.index.update(uid, self.target(fresh), self.tasks[uid], self.spec(fresh).priority)
        return self.tasks[uid], phase_changed

    def forget(self, uid: str) -> Task | None:
        """The task was deleted; returns what was known of it."""
        gone = self.tasks.pop(uid, None)
        if gone:
            self.index.update(uid, self.target(gone), None)
        self._specs.pop(uid, None)
        return gone

    def spec(self, task: Mapping[str, Any]) -> AgentTaskSpec:
        """Parsed once per task: the spec is immutable (CEL), and rounds look at every pending task."""
        uid = task["metadata"]["uid"]
        if uid not in self._specs:
            self._specs[uid] = AgentTaskSpec.model_validate(task["spec"])
        return self._specs[uid]

    def target(self, task: Mapping[str, Any]) -> Target:
        spec = self.spec(task)
        return (task["metadata"]["namespace"], "agent" if spec.agent_ref else "pool",
                (spec.agent_ref or spec.pool_ref).name)

    def finished(self) -> list[Task]:
        return [t for t in self.tasks.values() if t["status"].get("phase") in ("Succeeded", "Failed")]

    # ---- status -------------------------------------------------------------------------------
    @staticmethod
    def status_patch(task: Mapping[str, Any], outcome: Outcome, phase: str, finished: bool | None = None,
                     **fields: Any) -> dict[str, Any] | None:
        """The status patch for `outcome`, or None when it would change nothing."""
        # Job-like terminal conditions (Complete or Failed) for tools that know Jobs.
        terminal = () if finished is None else (("Complete" if finished else "Failed", True, outcome.reason),)
        return status_update(task["status"], outcome, task["metadata"].get("generation", 0), terminal, phase=phase,
                             message=outcome.message or None, **fields)

    async def write(self, task: Task, outcome: Outcome, phase: str, finished: bool | None = None,
                    **fields: Any) -> bool:
        """False when the task is gone (nothing needed writing: True)."""
        desired = self.status_patch(task, outcome, phase, finished, **fields)
        return desired is None or await self.apply(task, desired)

    async def apply(self, task: Task, desired: dict[str, Any]) -> bool:
        """Write `desired` into the task's status, and into what we hold of it; False when the task is gone."""
        meta = task["metadata"]
        updated = await self.kube.patch_status(TASKS, meta["namespace"], meta["name"], desired)
        # Merged into what the task holds now: a watch event may have refreshed it meanwhile.
        task["status"] = {k: v for k, v in {**task["status"], **desired}.items() if v is not None}
        if self.tasks.get(meta["uid"]) is task:  # (not deleted meanwhile)
            self.index.update(meta["uid"], self.target(task), task, self.spec(task).priority)
        if updated and resource_version(updated) > resource_version(task):
            meta["resourceVersion"] = updated["metadata"]["resourceVersion"]
        return updated is not None

    async def delete(self, task: Task) -> None:
        await self.kube.delete(TASKS, task["metadata"]["namespace"], task["metadata"]["name"])
