"""Wiring: the one set of long-lived collaborators (Kubernetes client, E2B gateway, reconcilers,
fleet checks) that the Kopf handlers delegate to."""

from __future__ import annotations

from collections import Counter

from remote_agents.controller import metrics
from remote_agents.controller.agent_reconciler import AgentReconciler, EventSink
from remote_agents.controller.e2b_gateway import SandboxGateway
from remote_agents.controller.fleet import Fleet
from remote_agents.controller.kube import Kube, load_config
from remote_agents.controller.object_watch import ObjectWatch
from remote_agents.controller.pool_reconciler import PoolReconciler
from remote_agents.controller.ref_resolver import RefResolver
from remote_agents.controller.sightings import Sightings
from remote_agents.controller.task_controller import PLURAL as TASKS_PLURAL
from remote_agents.controller.task_controller import TaskController
from remote_agents.controller.settings import OperatorSettings


class Runtime:
    def __init__(self, settings: OperatorSettings):
        self.settings = settings
        self.kube: Kube
        self.gateway: SandboxGateway
        self.agents: AgentReconciler
        self.fleet: Fleet
        self.pools: PoolReconciler
        self.tasks: TaskController
        self.task_watch: ObjectWatch

    async def start(self) -> None:
        load_config()
        self.kube = Kube()
        emit: EventSink = self.kube.post_event
        cluster_id = self.settings.cluster_id or await self.kube.cluster_id()
        self.gateway = SandboxGateway(self.settings.gateway, observe=metrics.observe_e2b)
        sightings = Sightings(max_age_seconds=self.settings.health_interval_seconds * 1.5)
        refs = RefResolver(self.settings.git_timeout_seconds)
        self.agents = AgentReconciler(self.gateway, self.kube, self.settings, cluster_id, emit, sightings, refs)
        self.fleet = Fleet(self.gateway, self.kube, self.settings, cluster_id, sightings, refs)
        self.tasks = TaskController(self.kube, self.gateway, self.agents, self.fleet, emit)
        self.task_watch = ObjectWatch(self.kube, TASKS_PLURAL, self.settings.namespaces, self.tasks.observe)
        self.pools = PoolReconciler(self.kube, emit, running_counts=self.tasks.running_counts)


    def refresh_metrics(self) -> None:
        """Gauges computed at scrape time from what is in memory anyway: no extra API calls."""
        metrics.set_agent_phases(Counter(view.phase for view in self.fleet.agents.values()))
        metrics.RATE_LIMIT_WAIT.labels("calls").set(self.gateway.calls_bucket.waited_seconds)
        metrics.RATE_LIMIT_WAIT.labels("creates").set(self.gateway.creates_bucket.waited_seconds)


_current: Runtime | None = None


def install(current: Runtime) -> None:
    global _current
    _current = current


def runtime() -> Runtime:
    if _current is None:
        raise RuntimeError("the operator runtime is not installed (start it with `remote-agents operator`)")
    return _current
