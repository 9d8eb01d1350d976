"""Checks across all agents at once: one E2B list per health interval finds lost, duplicated,
wrongly paused or unknown sandboxes and refreshes timeouts; a slower loop resolves each tracked
branch once and pokes the agents whose code is behind. Both only *request* reconciles."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from remote_agents.api.conditions import condition
from remote_agents.api.names import AGENTS, POOL_LABEL, SANDBOX_CLUSTER_KEY, SANDBOX_NAME_KEY, SANDBOX_NAMESPACE_KEY
from remote_agents.controller import metrics
from remote_agents.controller.agents import decide
from remote_agents.controller.agents.inputs import AgentInputs
from remote_agents.controller.agents.sightings import Sightings
from remote_agents.controller.clients.e2b import E2BError, SandboxGateway
from remote_agents.controller.clients.kube import Kube, SecretMissing
from remote_agents.controller.redaction import Redactor
from remote_agents.controller.sandboxes import OPERATOR_ACCOUNT, ObservedSandbox, SandboxAddress
from remote_agents.controller.settings import OperatorSettings
from remote_agents.controller.sources import git
from remote_agents.controller.sources.refs import RefResolver
from remote_agents.controller.sources.repos import repo_key
from remote_agents.controller.sources.webhook import PushEvent

log = logging.getLogger(__name__)

REF_CHECK_CONCURRENCY = 8  # ls-remote processes at once
# How long a push that arrives before the first list of agents waits for it: GitHub gives up on a
# delivery after 10 s; past this the answer is 503, a failed delivery that can be redelivered.
PUSH_WAIT_SECONDS = 8.0


class ViewIncomplete(Exception):
    """The operator has not seen every agent yet: nothing can be said about which ones exist."""


def view_of(body: Mapping[str, Any]) -> decide.AgentView:
    spec, problem = decide.parse_spec(body["spec"])
    status = body.get("status") or {}
    meta = body["metadata"]
    key_secret = decide.key_secret_of(body["spec"])
    common = dict(uid=meta["uid"], namespace=meta["namespace"], name=meta["name"],
                  sandbox_id=status.get("sandboxID"), revision=status.get("revision"),
                  own_api_key=key_secret is not None, e2b_key_secret=key_secret[0] if key_secret else None,
                  deleting=bool(meta.get("deletionTimestamp")), phase=status.get("phase"),
                  pool=(meta.get("labels") or {}).get(POOL_LABEL),
                  stalled=condition(body, "Stalled").get("status") == "True", usage=status.get("usage"))
    if spec is None:
        # Still an agent (never an orphan), but nothing about it can be judged: no drift, no
        # timeout refresh, no task starts or goes on (paused) until its spec parses again.
        return decide.AgentView(**common, paused=True, repo="", ref="", config_hash="", timeout_seconds=0,
                                invalid_spec=problem)
    ready = condition(body, "Ready")
    return decide.AgentView(
        **common, paused=spec.paused or bool(status.get("idlePaused")), repo=spec.source.repo,
        ref=spec.source.ref, config_hash=decide.config_hash(spec), timeout_seconds=spec.sandbox_timeout_seconds,
        spec=spec, ready=ready.get("status") == "True" and ready.get("observedGeneration") == meta.get("generation"),
        idle_paused=bool(status.get("idlePaused")), last_activity_time=status.get("lastActivityTime"),
        ready_since=ready.get("lastTransitionTime"), workdir=status.get("workdir") or decide.workdir(spec),
        server_outdated=decide.server_outdated(spec, status), sessions=int(status.get("sessions") or 0),
    )


async def _no_templates() -> set[tuple[str, str]]:
    return set()


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_coro().__qualname__, exc_info=task.exception())


class Fleet:
    def __init__(self, gateway: SandboxGateway, kube: Kube, settings: OperatorSettings, cluster_id: str,
                 sightings: Sightings, refs: RefResolver, listed: asyncio.Event, inputs: AgentInputs | None = None):
        """`listed`: set once every agent has been delivered to `observe` (the watch's first list)."""
        self.gateway = gateway
        self.inputs = inputs or AgentInputs(kube)
        self.refs = refs
        self.kube = kube
        self.settings = settings
        self.cluster_id = cluster_id
        self.sightings = sightings
        self.listed = listed
        self.agents: dict[str, decide.AgentView] = {}
        self.by_repo: dict[str, set[str]] = defaultdict(set)  # normalised repo -> agent uids (webhook lookups)
        self._orphans_first_seen: dict[str, float] = {}
        self._background: set[asyncio.Task] = set()
        self._ref_checks: dict[tuple, asyncio.Task] = {}  # (repo, ref, credentials) being resolved
        self._ref_check_slots = asyncio.Semaphore(REF_CHECK_CONCURRENCY)
        # The E2B key Secrets E2BTemplates name, once their stream is listed (main.py sets it).
        self.template_key_secrets: Callable[[], Awaitable[set[tuple[str, str]]]] = _no_templates

    def find(self, namespace: str, name: str) -> decide.AgentView | None:
        return next((v for v in self.agents.values() if v.namespace == namespace and v.name == name), None)

    def members(self, namespace: str, pool: str) -> list[decide.AgentView]:
        return [v for v in self.agents.values() if v.namespace == namespace and v.pool == pool and not v.deleting]

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        previous = self.agents.pop(uid, None)
        if previous is not None:
            self.by_repo[repo_key(previous.repo)].discard(uid)
        view = None if event_type == "DELETED" else view_of(body)
        if view is not None:
            self.agents[uid] = view
            self.by_repo[repo_key(view.repo)].add(uid)
        unprotect = decide.unreferenced_key_secret(previous, view, self.agents.values())
        if unprotect is not None:
            self._in_background(self.release_key_secret(unprotect))

    async def release_key_secret(self, key: tuple[str, str]) -> None:
        """Lift an E2B key Secret's protection unless an agent or an E2BTemplate uses it (asked once
        both views are whole: deleting the Secret must never strand a sandbox or a template)."""
        await self.listed.wait()
        templates = await self.template_key_secrets()
        if not decide.key_secret_in_use(key, self.agents.values(), templates):
            await self.kube.unprotect_secret(*key)

    def tracking(self, repo_keys: frozenset[str]) -> list[decide.AgentView]:
        """Agents whose source is one of these repositories (by index, not by a scan)."""
        return [self.agents[uid] for key in repo_keys for uid in self.by_repo.get(key, ()) if uid in self.agents]

    async def _request(self, view: decide.AgentView, why: str) -> None:
        log.info("requesting reconcile of %s/%s: %s", view.namespace, view.name, why)
        await self.kube.request_reconcile(AGENTS, view.namespace, view.name)

    async def check_sandboxes(self) -> None:
        async with self.sightings.listing():
            sandboxes = await self.gateway.list({SANDBOX_CLUSTER_KEY: self.cluster_id}, OPERATOR_ACCOUNT)
            by_uid = self.sightings.record(sandboxes)
        # Listed at once, even on the first round: a restarted operator's resumes wait for this list
        # instead of making one each. Judged only against every agent: drift and orphans alike.
        await self.listed.wait()
        # Sandboxes of namespaces this instance does not serve are not ours to judge.
        sandboxes = [s for s in sandboxes if decide.serves(self.settings.namespaces, s)]
        now = time.time()
        for view in list(self.agents.values()):
            observed = by_uid.get(view.uid, [])
            reason = decide.drift(view, observed)
            if reason:
                await self._request(view, reason)
            elif observed and not view.invalid_spec and decide.needs_timeout_refresh(observed[0], now,
                                                                                    view.timeout_seconds):
                await self.gateway.set_timeout(SandboxAddress(observed[0].sandbox_id), view.timeout_seconds)
        await self._sweep_orphans([s for s in sandboxes if s.uid not in self.agents], now)

    async def _sweep_orphans(self, untracked: list[ObservedSandbox], now: float) -> None:
        """Kill sandboxes tagged with this cluster and a served namespace whose object is gone, once
        they stay untracked for the grace period (covers the operator's own start-up, before every
        object is seen)."""
        if untracked:
            # Only asked when there is something to judge.
            released = await self.kube.orphaned_sandboxes(self.settings.namespaces)
            untracked = [s for s in untracked if s.sandbox_id not in released]
        seen = {s.sandbox_id for s in untracked}
        self._orphans_first_seen = {k: v for k, v in self._orphans_first_seen.items() if k in seen}
        for sandbox in untracked:
            first = self._orphans_first_seen.setdefault(sandbox.sandbox_id, now)
            if now - first >= self.settings.orphan_grace_seconds:
                log.warning("killing orphaned sandbox %s (object %s/%s no longer exists)", sandbox.sandbox_id,
                            sandbox.metadata.get(SANDBOX_NAMESPACE_KEY), sandbox.metadata.get(SANDBOX_NAME_KEY))
                await self.gateway.kill(SandboxAddress(sandbox.sandbox_id))
                self._orphans_first_seen.pop(sandbox.sandbox_id, None)
                metrics.ORPHANS_KILLED.inc()

    async def on_push(self, event: PushEvent) -> int:
        """A verified push: every agent tracking that branch of that repository re-resolves its ref now."""
        self.refs.pushed(event.repo_keys)  # the reconciles it pokes must not reuse a lookup from before it
        if not self.listed.is_set():  # "no agent tracks it" would be a guess: wait for the list, or refuse
            try:
                await asyncio.wait_for(self.listed.wait(), PUSH_WAIT_SECONDS)
            except asyncio.TimeoutError:
                raise ViewIncomplete("the operator is starting and has not listed its agents yet") from None
        matched = [v for v in self.tracking(event.repo_keys) if not v.deleting and event.concerns(v.repo, v.ref)]
        behind = [v for v in matched if v.revision != event.commit]
        # Answer GitHub at once (it gives up after 10 s); the pokes go on in the background, and the
        # periodic ref check catches anything they miss.
        self._in_background(self._poke_all(behind, event.commit))
        log.info("push of %s to %s: %d agents track it", event.commit[:12], event.branch, len(matched))
        return len(matched)

    async def _poke_all(self, views: list[decide.AgentView], commit: str) -> None:
        slots = asyncio.Semaphore(16)

        async def poke(view: decide.AgentView) -> None:
            async with slots:
                await self.kube.request_reconcile(AGENTS, view.namespace, view.name, pushed_revision=commit)
        results = await asyncio.gather(*(poke(v) for v in views), return_exceptions=True)
        for view, result in zip(views, results):
            if isinstance(result, Exception):
                log.warning("could not poke %s/%s after a push: %s", view.namespace, view.name, result)

    async def poll_refs(self) -> None:
        """Start one ls-remote per (repo, ref, credentials) that is not already being asked, and do
        not wait for them: a server that accepts connections and never answers holds back only the
        agents tracking it (until the git timeout), never the next round for every other branch."""
        await self.listed.wait()  # every tracked branch, not those of the agents seen so far
        tracked: dict[tuple[str, str, tuple | None], list[decide.AgentView]] = defaultdict(list)
        for view in self.agents.values():
            if view.revision and not view.deleting and view.ref != view.revision and view.spec:
                # private repos are asked with their own credentials (a token's Secret or a GitHub App)
                source = view.spec.source
                credentials = ((view.namespace, source.model_dump_json(include={"credentials_secret_ref", "github_app"}))
                               if source.credentials_secret_ref or source.github_app else None)
                tracked[(view.repo, view.ref, credentials)].append(view)
        for key, views in tracked.items():
            if key not in self._ref_checks:
                self._ref_checks[key] = self._in_background(self._check_ref(*key, views))
                self._ref_checks[key].add_done_callback(lambda _, key=key: self._ref_checks.pop(key, None))

    async def _check_ref(self, repo: str, ref: str, credentials: tuple | None,
                         views: list[decide.AgentView]) -> None:
        async with self._ref_check_slots:
            try:
                token = (await self.inputs.git_token(views[0].namespace, views[0].spec.source, Redactor())
                         if credentials else None)
                commit = await self.refs.resolve(repo, ref, token)
            except (git.GitUnavailable, git.RefNotFound, SecretMissing) as error:
                log.info("ref poll of %s@%s failed: %s", repo, ref, error)
                return
        for view in views:
            if view.revision != commit:
                await self._request(view, f"{ref} moved to {commit[:12]}")

    def _in_background(self, work) -> asyncio.Task:
        """A task kept referenced until it ends (the event loop holds tasks only weakly); a failure
        is logged with its trace, as the loops log theirs."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)
        return task

    async def run(self) -> None:
        """Both loops, forever (cancelled at shutdown). A failed round is logged and retried next interval."""
        await asyncio.gather(self._every(self.settings.health_interval_seconds, self.check_sandboxes),
                             self._every(self.settings.ref_poll_interval_seconds, self.poll_refs))

    async def _every(self, interval: float, check) -> None:
        """Run `check` now and then every `interval` (the first look right away: a restarted
        operator's reconciles can use it instead of a list call each)."""
        while True:
            try:
                await check()
            except (E2BError, OSError) as error:
                log.warning("%s failed: %s", check.__name__, error)
            except Exception:  # keep the loop alive whatever one round hit; it is logged with its trace
                log.exception("%s failed", check.__name__)
            await asyncio.sleep(interval)
