"""Runs whose task was deleted while no operator was watching (tasks/cancel.py stops the others).

Only a sandbox that was there before this operator started can hold one: every run started since
then was claimed by this operator, which sees its task's DELETED event. So each of those sandboxes
is swept once, when it is running (a paused one's runs are frozen with it: swept after its
resume): the runner's files list the runs not yet ended, and those whose id no task in the
operator's view carries are stopped like any cancelled run. Listing first and judging after is
what makes it safe: a run is started only after its claim is in the view, so a run the list shows
is never one whose claim the view has yet to see.
"""

from __future__ import annotations

import asyncio
import logging
import shlex

from remote_agents.controller.agents.decide import AgentView
from remote_agents.controller.agents.fleet import Fleet
from remote_agents.controller.agents.inputs import AgentInputs
from remote_agents.controller.clients.e2b import E2BError, SandboxGateway, SandboxGone
from remote_agents.controller.clients.kube import SecretMissing
from remote_agents.controller.tasks import runner
from remote_agents.controller.tasks.book import TaskBook
from remote_agents.controller.tasks.cancel import Cancellations

log = logging.getLogger(__name__)
# The run ids of the runner's runs that have taken their lock but have no exit line yet.
UNFINISHED_RUNS = f"""cd {shlex.quote(runner.RUNS_DIR)} 2>/dev/null || exit 0
for lock in *.lock; do run=${{lock%.lock}}; [ -e "$lock" ] && [ ! -e "$run.exit_code" ] && echo "$run"; done; true
"""


class OrphanRuns:
    def __init__(self, book: TaskBook, fleet: Fleet, gateway: SandboxGateway, inputs: AgentInputs,
                 cancellations: Cancellations):
        self.book = book
        self.fleet = fleet
        self.gateway = gateway
        self.inputs = inputs
        self.cancellations = cancellations
        self._unswept: dict[tuple[str, str], str] | None = None  # (namespace, agent) -> its sandbox at startup

    async def sweep(self) -> None:
        """Sweep the sandboxes due (both views must be listed: the caller's rounds wait for them)."""
        if self._unswept is None:
            self._unswept = {(v.namespace, v.name): v.sandbox_id for v in self.fleet.agents.values() if v.sandbox_id}
        due = []
        for key, sandbox_id in list(self._unswept.items()):
            view = self.fleet.find(*key)
            if view is None or view.sandbox_id != sandbox_id or view.spec is None:
                del self._unswept[key]  # gone, or a new sandbox: nothing of before is left to stop
            elif not view.paused:
                due.append(view)
        for view, swept in zip(due, await asyncio.gather(*(self._sweep(view) for view in due))):
            if swept:
                del self._unswept[(view.namespace, view.name)]

    async def _sweep(self, view: AgentView) -> bool:
        """True once the agent's sandbox is swept (or gone); False to try again at a later round."""
        namespace, agent, sandbox_id = view.namespace, view.name, view.sandbox_id
        try:
            sandbox = await self.inputs.address(namespace, view.spec, sandbox_id)
            listed = await self.gateway.run(sandbox, UNFINISHED_RUNS, envs={}, cwd=None, timeout_seconds=30)
        except SandboxGone:
            return True
        except (E2BError, SecretMissing) as error:
            log.info("could not look for orphaned runs on agent %s/%s: %s", namespace, agent, error)
            return False
        known = {task["status"].get("runId") for task in self.book.tasks.values()}
        orphans = [run for run in (listed.stdout or "").split() if run not in known]
        for run in orphans:
            if not await self.cancellations.stop_in(sandbox, run):
                return False
            log.info("stopped run %s on agent %s/%s: its task was deleted while no operator ran", run,
                     namespace, agent)
        return True
