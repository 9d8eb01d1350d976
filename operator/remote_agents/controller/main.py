"""`remote-agents operator`: the one place the operator is put together and started.

`Operator` builds every long-lived collaborator from the settings; Kopf's handlers (handlers.py)
reach it through kopf.Memo, and the loops, streams and HTTP servers it starts end with it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kopf
import kubernetes

from remote_agents.api.names import AGENTS, FINALIZER, GROUP, POOL_LABEL, TASKS, TEMPLATES
from remote_agents.controller import metrics, tracing
from remote_agents.controller.agents import decide as agent_decide
from remote_agents.controller.agents import ledger
from remote_agents.controller.agents.fleet import Fleet
from remote_agents.controller.agents.idle import AgentActivity
from remote_agents.controller.agents.inputs import AgentInputs
from remote_agents.controller.agents.reconcile import AgentReconciler
from remote_agents.controller.agents.sightings import Sightings
from remote_agents.controller.clients.e2b import SandboxGateway
from remote_agents.controller.clients.e2b_templates import TemplateBuilds
from remote_agents.controller.clients.events import EventRecorder, EventSink
from remote_agents.controller.clients.github_app import InstallationTokens
from remote_agents.controller.clients.kube import API_THREADS, Kube, load_config
from remote_agents.controller.clients.lease import LeaderElector
from remote_agents.controller.clients.watch import ObjectWatch
from remote_agents.controller.pools.reconcile import PoolReconciler
from remote_agents.controller.settings import LeaderElectionSettings, OperatorSettings
from remote_agents.controller.sources import webhook
from remote_agents.controller.sources.refs import RefResolver
from remote_agents.controller.tasks.controller import TaskController
from remote_agents.controller.templates.reconcile import TemplateReconciler
from remote_agents.controller.templates.users import TemplateUsers

log = logging.getLogger(__name__)
LOST_LEASE_EXIT = 3  # the exit status of a leader that lost its Lease
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class Operator:
    def __init__(self, settings: OperatorSettings, kube: Kube, cluster_id: str,
                 gateway: SandboxGateway | None = None, emit: EventSink | None = None,
                 builds: TemplateBuilds | None = None):
        """`gateway`, `emit` and `builds` are built from the settings and `kube` unless given (tests give fakes)."""
        self.settings = settings
        self.kube = kube
        self.gateway = gateway if gateway is not None else SandboxGateway(
            settings.gateway, observe=metrics.observe_e2b, observe_wait=metrics.observe_rate_limit_wait)
        events = emit if emit is not None else EventRecorder(kube.http)
        sightings = Sightings(max_age_seconds=settings.health_interval_seconds * 1.5)
        refs = RefResolver(settings.git_timeout_seconds)
        # The fleet's view of RemoteAgents and the tasks are streams of their own (Kopf only reconciles).
        # Each knows when its first list is in (`synced`): whatever judges by a view is handed that
        # event and waits for it, as nothing may be taken for absent before the view is whole.
        self.agent_watch = ObjectWatch(kube, AGENTS, settings.namespaces, self.agent_changed)
        self.task_watch = ObjectWatch(kube, TASKS, settings.namespaces, self.task_changed)
        # E2BTemplates: a change of their Ready build reaches the agents and pools naming them.
        self.template_watch = ObjectWatch(kube, TEMPLATES, settings.namespaces, self.template_changed)
        self.template_users = TemplateUsers()
        self.template_bodies: dict[tuple[str, str], dict[str, Any]] = {}  # the watch's latest of each
        app_tokens = InstallationTokens()  # one cache of GitHub App tokens for sources and publishing
        inputs = AgentInputs(kube, app_tokens, settings.github_api_hosts)
        self.agents = AgentReconciler(self.gateway, kube, inputs, settings, cluster_id, events, sightings, refs)
        self.fleet = Fleet(self.gateway, kube, settings, cluster_id, sightings, refs, listed=self.agent_watch.synced,
                           inputs=inputs)
        self.fleet.template_key_secrets = self.template_key_secrets
        activity = AgentActivity(kube, self.fleet, events)
        self.tasks = TaskController(kube, self.gateway, inputs, self.fleet, activity, events,
                                    settings.github_api_hosts, listed=self.task_watch.synced,
                                    progress_interval_seconds=settings.progress_interval_seconds)
        self.agents.running_counts = self.tasks.running_counts
        self.agents.template_of = self.template_of
        self.pools = PoolReconciler(kube, events, running_counts=self.tasks.running_counts,
                                    tasks_listed=self.task_watch.synced, template_users=self.template_users,
                                    template_of=self.template_of,
                                    session_holdings=self.tasks.sessions.holdings,
                                    queued=self.tasks.queued, members=activity)
        self.templates = TemplateReconciler(builds if builds is not None else TemplateBuilds(self.gateway), kube,
                                            inputs, settings, cluster_id, events, refs)
        # Resident processes are upgraded only between tasks, and say which sessions a death lost.
        self.agents.servers.running_tasks = lambda namespace, name: self.tasks.running_counts()[(namespace, name)]
        self.agents.servers.sessions_held = self.tasks.sessions.held_by
        self._background: list[asyncio.Task] = []
        # What a template's change set off, under way: its agents' reconciles, its key's release.
        self._pokes: set[asyncio.Task] = set()
        self._servers: list[Any] = []
        self.leading = False  # nothing is reconciled, dispatched, swept or paused before start()
        self.stop_requested = asyncio.Event()  # Kopf's stop flag; set by a signal or by stop()

    def agent_changed(self, event_type: str | None, body: dict[str, Any]) -> None:
        self.fleet.observe(event_type, body)
        self.template_users.agent_changed(event_type, body)
        self.tasks.agent_changed()
        pool = (body["metadata"].get("labels") or {}).get(POOL_LABEL)
        if pool:
            self.pools.poke(body["metadata"]["namespace"], pool)  # a member changed: the pool recounts

    def task_changed(self, event_type: str | None, body: dict[str, Any]) -> None:
        self.tasks.observe(event_type, body)

    async def template_of(self, namespace: str, name: str) -> dict[str, Any] | None:
        """An E2BTemplate as the watch saw it last (None: there is none); asked of the API until
        the watch's first list is in."""
        if self.template_watch.synced.is_set():
            return self.template_bodies.get((namespace, name))
        return await self.kube.get(TEMPLATES, namespace, name)

    async def template_key_secrets(self) -> set[tuple[str, str]]:
        """(namespace, Secret) of the E2B keys the E2BTemplates name, once their stream is listed."""
        await self.template_watch.synced.wait()
        return {(namespace, secret[0]) for (namespace, _), body in self.template_bodies.items()
                if (secret := agent_decide.key_secret_of(body.get("spec")))}

    def template_changed(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            self.template_bodies.pop(key, None)
            if secret := agent_decide.key_secret_of(body.get("spec")):  # the build protected it
                self._pokes.add(asyncio.get_running_loop().create_task(
                    self.fleet.release_key_secret((key[0], secret[0])), name=f"release-key-{key[1]}"))
        else:
            self.template_bodies[key] = body
        users = self.template_users.template_changed(event_type, body)
        if users is None:
            return
        namespace = body["metadata"]["namespace"]
        agents, pools = users
        for pool in pools:
            self.pools.poke(namespace, pool)
        for agent in agents:
            self._pokes.add(asyncio.get_running_loop().create_task(
                self.kube.request_reconcile(AGENTS, namespace, agent), name=f"poke-{agent}"))
        self._pokes = {poke for poke in self._pokes if not poke.done()}

    async def serve_http(self) -> None:
        """The webhook and metrics endpoints, up from the start: a standby answers them too (it
        says it is one; its webhook forwards nothing)."""
        if self.settings.webhook_port is not None:
            self._servers.append(await metrics.serve(
                webhook.webhook_app(self.settings.webhook_secret, self.fleet.on_push, leading=lambda: self.leading),
                self.settings.webhook_port))
        if self.settings.metrics_port is not None:
            self._servers.append(await metrics.serve(
                metrics.app(healthy=lambda: not any(t.done() for t in self._background),
                            leading=lambda: self.leading, refresh=self.refresh_metrics),
                self.settings.metrics_port))

    async def start(self) -> None:
        """Start acting: the streams and loops (Kopf's reconciles are started next to it)."""
        self.leading = True
        metrics.LEADER.set(1)
        loop = asyncio.get_running_loop()
        self.agent_watch.start(loop)
        self.task_watch.start(loop)
        self.template_watch.start(loop)
        self._background = [loop.create_task(self.fleet.run(), name="fleet-checks"),
                            loop.create_task(self.tasks.run(), name="task-loop"),
                            loop.create_task(self.pools.autoscale(), name="pool-autoscaler")]

    async def stop(self) -> None:
        self.stop_requested.set()
        self.leading = False
        metrics.LEADER.set(0)
        self.agent_watch.stop()
        self.task_watch.stop()
        self.template_watch.stop()
        await self.templates.stop()
        for task in self._background:
            task.cancel()

    async def close(self) -> None:
        for server in self._servers:
            await server.cleanup()
        await self.kube.http.close()

    def refresh_metrics(self) -> None:
        """Gauges computed at scrape time from what is in memory anyway: no extra API calls."""
        metrics.set_agent_phases(Counter(view.phase for view in self.fleet.agents.values()))
        metrics.AGENTS_STALLED.set(sum(view.stalled for view in self.fleet.agents.values()))
        metrics.set_task_queue(*self.tasks.book.index.queue_size())
        metrics.set_agent_usage(ledger.totals(self.fleet.agents.values(), time.time()))
        metrics.set_pool_queues(self.tasks.pool_queues())


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # Fixed on day one: changing these later would make every object look new to Kopf.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.INFO
    settings.networking.request_timeout = 60
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.peering.standalone = True
    # Kopf holds each object's events for this long to batch a burst (default 0.1 s): every wake-up
    # of an idle-paused agent (a reconcile request) waited that long. Our handlers are level-triggered
    # and status-only echoes run none, so a short window batches enough.
    settings.batching.batch_window = 0.01
    return settings


async def _act(operator: Operator, settings: OperatorSettings) -> None:
    """Reconcile (Kopf) and run the operator's loops until Kopf ends: on a signal (Kopf's own
    handlers, while it runs), or when the operator's stop is requested."""
    await operator.start()
    try:
        await kopf.operator(settings=kopf_settings(), memo=kopf.Memo(operator=operator),
                            stop_flag=operator.stop_requested,
                            clusterwide=not settings.namespaces, namespaces=settings.namespaces, standalone=True)
    finally:
        await operator.stop()


async def _act_while_leading(operator: Operator, settings: OperatorSettings, lease_namespace: str) -> None:
    """Stand by until this replica holds the Lease, then act until told to stop; release it then.

    A leader that loses the Lease exits the process at once (LOST_LEASE_EXIT): no reconcile, E2B
    call or status write of its may follow, and in-process state (watches, Kopf's view, the
    fleet) would be stale anyway. Its Deployment restarts it, as a standby."""
    loop = asyncio.get_running_loop()
    stop = operator.stop_requested
    for signum in (signal.SIGINT, signal.SIGTERM):  # Kopf replaces these with its own while it runs
        loop.add_signal_handler(signum, stop.set)
    elected = asyncio.Event()
    releasing = False

    def lost(reason: str) -> None:  # from the election's thread, or the deadline watch
        if releasing:
            return  # our own release ends the renewals
        log.critical("lost the leader Lease (%s): exiting now, so that this replica does nothing more", reason)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(LOST_LEASE_EXIT)

    elector = LeaderElector(settings.leader_election, lease_namespace, f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
                            on_leading=lambda: loop.call_soon_threadsafe(elected.set), on_lost=lost)
    elector.start()
    waits = [loop.create_task(elected.wait()), loop.create_task(stop.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    if not elected.is_set():
        return  # a standby told to stop: nothing to hand over
    log.info("leading: Lease %s/%s is ours", lease_namespace, settings.leader_election.lease_name)
    deadline = loop.create_task(_watch_renewals(elector, lost), name="lease-deadline")
    try:
        await _act(operator, settings)
    finally:
        releasing = True
        deadline.cancel()
        await asyncio.to_thread(elector.release)


async def _watch_renewals(elector: LeaderElector, lost: Callable[[str], None]) -> None:
    """The renew deadline, kept while a renewal hangs too (the library checks it between attempts)."""
    interval = elector.settings.retry_period_seconds / 4
    while not elector.expired():
        await asyncio.sleep(interval)
    lost(f"not renewed for {elector.settings.renew_deadline_seconds:g} s")


async def serve(settings: OperatorSettings, lease_namespace: str | None = None) -> None:
    from remote_agents.controller import handlers  # noqa: F401  (registers the handlers with Kopf)

    # The Kubernetes client is synchronous and runs in threads: enough of them for pools and pushes.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=API_THREADS))
    load_config()
    kube = Kube()
    operator = Operator(settings, kube, settings.cluster_id or await kube.cluster_id())
    await operator.serve_http()
    try:
        if settings.leader_election.enabled:
            await _act_while_leading(operator, settings, lease_namespace)
        else:
            await _act(operator, settings)
    finally:
        await operator.close()


def _own_namespace() -> str | None:
    """The pod's namespace, as its service account token's mount tells it; None outside a pod."""
    try:
        return Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip() or None
    except OSError:
        return None


def _configure_logging(verbose: bool, log_format: str) -> None:
    # Kopf's formatter puts the object's namespace/name on every per-object line: as a prefix in
    # text, as an "object" field in JSON.
    kopf.configure(verbose=verbose, log_prefix=True, log_refkey="object",
                   log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL)
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per E2B request otherwise
        # One line per attempt to acquire or renew otherwise; clients/lease.py logs the changes.
        logging.getLogger("leaderelection").setLevel(logging.WARNING)


def _webhook_secret(args: argparse.Namespace) -> bytes:
    if args.webhook_secret_from:
        namespace, name, *key = args.webhook_secret_from.split("/")
        load_config()
        secret = kubernetes.client.CoreV1Api().read_namespaced_secret(name, namespace)
        encoded = (secret.data or {}).get(key[0] if key else "secret", "")
        return base64.b64decode(encoded)
    return os.environ.get("GITHUB_WEBHOOK_SECRET", "").encode()


def run(args: argparse.Namespace) -> int:
    _configure_logging(args.verbose, args.log_format)
    tracing.configure()  # off unless OTEL_* asks for traces
    secret = _webhook_secret(args) if args.webhook_port is not None else b""
    if args.webhook_port is not None and not secret.strip():  # whitespace is no secret either
        print("refusing to serve webhooks without a secret: set GITHUB_WEBHOOK_SECRET or --webhook-secret-from",
              file=sys.stderr)
        return 2
    election = LeaderElectionSettings(
        enabled=args.leader_election, lease_name=args.lease_name, lease_namespace=args.lease_namespace,
        lease_duration_seconds=args.lease_duration, renew_deadline_seconds=args.renew_deadline,
        retry_period_seconds=args.retry_period)
    lease_namespace = election.lease_namespace or _own_namespace()
    if election.enabled and not lease_namespace:
        print("--leader-election outside a pod needs --lease-namespace", file=sys.stderr)
        return 2
    settings = OperatorSettings.from_env(leader_election=election, cluster_id=args.cluster_id,
                                         health_interval_seconds=args.health_interval,
                                         ref_poll_interval_seconds=args.ref_poll_interval,
                                         orphan_grace_seconds=args.orphan_grace, metrics_port=args.metrics_port,
                                         webhook_port=args.webhook_port, webhook_secret=secret,
                                         namespaces=tuple(args.namespace),
                                         github_api_hosts=tuple(args.github_api_host),
                                         progress_interval_seconds=args.progress_interval)
    asyncio.run(serve(settings, lease_namespace))
    return 0
