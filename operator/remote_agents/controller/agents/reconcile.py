"""Carry out the plan for one RemoteAgent: resolve its Secrets and ref, look its sandboxes up in
E2B, plan (decide.py), act, and report progress in status, conditions and Events.

Kopf-free: failures that should be retried later surface as `RetryLater`, which the handlers
translate for Kopf.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from remote_agents.api.models import RemoteAgentSpec
from remote_agents.api.names import (
    AGENTS, POOL_LABEL, SANDBOX_CLUSTER_KEY, SANDBOX_CONFIG_KEY, SANDBOX_NAME_KEY, SANDBOX_NAMESPACE_KEY,
    SANDBOX_TEMPLATE_KEY, SANDBOX_UID_KEY, TEMPLATES,
)
from remote_agents.controller import metrics
from remote_agents.controller.agents import decide, ledger
from remote_agents.controller.agents.inputs import AgentInputs, ResolvedInputs
from remote_agents.controller.agents.resident import ResidentServers, ServerNotReady
from remote_agents.controller.agents.sightings import Sightings
from remote_agents.controller.clients.e2b import E2BAuthFailed, E2BError, E2BRejected, SandboxGateway, SandboxGone
from remote_agents.controller.clients.events import EventSink
from remote_agents.controller.clients.kube import Kube, SecretMissing
from remote_agents.controller.redaction import Redactor
from remote_agents.controller.retry import RetryLater
from remote_agents.controller.sandboxes import ObservedSandbox, SandboxAddress
from remote_agents.controller.settings import OperatorSettings
from remote_agents.controller.sources import git
from remote_agents.controller.sources.refs import RefResolver
from remote_agents.controller.status import Outcome, status_update

log = logging.getLogger(__name__)
OUTPUT_TAIL_CHARS = 2000


class StepFailed(Exception):
    """A command in the sandbox (checkout or a setup step) exited non-zero."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _template_condition(template: decide.TemplateState | None, kept: ObservedSandbox | None,
                        pooled: bool) -> tuple[tuple[str, bool, str], ...]:
    """The TemplateReady condition of an agent with a templateRef: its template has a Ready build
    and the agent's sandbox is of it."""
    if template is None:
        return ()
    if template.problem:
        return (("TemplateReady", False, template.problem[0]),)
    if kept is not None and decide.outdated_template(kept, template):
        return (("TemplateReady", False, "TemplateOutdated" if pooled else "TemplateUpdatePending"),)
    return (("TemplateReady", True, "TemplateReady"),)


def _template_note(template: decide.TemplateState, reason: str) -> str:
    """Why the sandbox is kept as it is although its template is not what it was made from."""
    if reason == "TemplateOutdated":
        return "its template has a new build; the pool replaces the agent by its update strategy"
    if reason == "TemplateUpdatePending":
        return "its template has a new build; the sandbox is replaced once no task runs on it"
    return f"{template.problem[1]}; the sandbox is kept as it is"


class StatusWriter:
    """Writes the status subresource only when something visible changed (no churn)."""

    def __init__(self, kube: Kube, body: Mapping[str, Any], redact: Redactor):
        self.kube = kube
        self.namespace = body["metadata"]["namespace"]
        self.name = body["metadata"]["name"]
        self.generation = body["metadata"].get("generation", 0)
        self.current: dict[str, Any] = dict(body.get("status") or {})
        self.redact = redact

    async def write(self, outcome: Outcome, extra: tuple[tuple[str, bool, str], ...] = (), **fields: Any) -> None:
        outcome = Outcome(outcome.ready, outcome.reason, self.redact(outcome.message), outcome.reconciling,
                          outcome.stalled)
        desired = status_update(self.current, outcome, self.generation, extra, message=outcome.message or None,
                                **fields)
        now = time.time()
        if desired is None and not ledger.due(self.current.get("usage"), now):
            return
        # The ledger rides on writes made anyway (or one every ledger.REFRESH_SECONDS).
        desired = {**(desired or {}), "usage": ledger.accrue(self.current.get("usage"),
                                                            fields.get("phase", self.current.get("phase")), now)}
        await self.kube.patch_status(AGENTS, self.namespace, self.name, desired)
        self.current = {**self.current, **desired}


def _working(reason: str, message: str) -> Outcome:
    return Outcome(ready=False, reason=reason, message=message, reconciling=True)


class AgentReconciler:
    def __init__(self, gateway: SandboxGateway, kube: Kube, inputs: AgentInputs, settings: OperatorSettings,
                 cluster_id: str, emit: EventSink, sightings: Sightings, refs: RefResolver):
        self.gateway = gateway
        self.inputs = inputs
        self.refs = refs
        self.kube = kube
        self.settings = settings
        self.cluster_id = cluster_id
        self.emit = emit
        self.sightings = sightings
        self.servers = ResidentServers(gateway, kube, emit)
        self._locks: dict[str, asyncio.Lock] = {}
        # Tasks running now by (namespace, agent): main.py hands over the task controller's count.
        self.running_counts: Callable[[], Counter] = Counter
        # An E2BTemplate by (namespace, name): main.py hands over the template watch's view.
        self.template_of: Callable[[str, str], Awaitable[dict | None]] = \
            lambda namespace, name: kube.get(TEMPLATES, namespace, name)

    def lock(self, uid: str) -> asyncio.Lock:
        """One lock per object: handlers, the health loop and task dispatch never overlap on it."""
        return self._locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)
        self.servers.forget(uid)

    def _metadata(self, body: Mapping[str, Any], spec: RemoteAgentSpec,
                  template: decide.TemplateState | None) -> dict[str, str]:
        meta = body["metadata"]
        tags = {SANDBOX_UID_KEY: meta["uid"], SANDBOX_CLUSTER_KEY: self.cluster_id,
                SANDBOX_NAMESPACE_KEY: meta["namespace"], SANDBOX_NAME_KEY: meta["name"],
                SANDBOX_CONFIG_KEY: decide.config_hash(spec)}
        return {**tags, SANDBOX_TEMPLATE_KEY: template.content_hash} if template else tags

    async def _template(self, body: Mapping[str, Any], spec: RemoteAgentSpec) -> decide.TemplateState | None:
        """The E2BTemplate of spec.templateRef, as it is now (None: the agent names none)."""
        if spec.template_ref is None:
            return None
        meta = body["metadata"]
        found = await self.template_of(meta["namespace"], spec.template_ref.name)
        standalone = POOL_LABEL not in (meta.get("labels") or {})  # a pool rolls its agents itself
        idle = not self.running_counts().get((meta["namespace"], meta["name"])) and \
            not (body.get("status") or {}).get("activeTasks")
        return decide.template_state(found, spec.template_ref.name, may_replace=standalone and idle)

    def _idle_paused(self, body: Mapping[str, Any], status: StatusWriter) -> bool:
        """Whether the agent is to stay idle-paused. Its body may be older than the wake of a task:
        then the task room runs (or is starting) a task on it, whose start call resumes the sandbox,
        and a pause now would freeze that run. An agent with a task on it is not idle."""
        meta = body["metadata"]
        return bool(status.current.get("idlePaused")) and \
            not self.running_counts().get((meta["namespace"], meta["name"]))

    async def reconcile(self, body: Mapping[str, Any]) -> None:
        spec, problem = decide.parse_spec(body["spec"])
        redact = Redactor()
        status = StatusWriter(self.kube, body, redact)
        async with self.lock(body["metadata"]["uid"]):
            if spec is None:
                # Stored under a looser schema than this operator's: its sandbox stays as it is until
                # the spec is fixed (an edit brings the handler back; so does the slow retry).
                await self._fail(status, Outcome(False, "InvalidSpec", f"the spec cannot be parsed: {problem}",
                                                 stalled=True), body, self.settings.stalled_retry_delay_seconds)
            try:
                await self._reconcile(body, spec, status, redact)
            except SecretMissing as error:
                await self._fail(status, Outcome(False, "SecretNotFound", str(error), stalled=True), body,
                                 self.settings.retry_delay_seconds * 3)
            except git.RefNotFound as error:
                await self._fail(status, Outcome(False, "RefNotFound", str(error), stalled=True), body,
                                 self.settings.stalled_retry_delay_seconds / 5)
            except git.GitUnavailable as error:
                await self._fail(status, Outcome(False, "GitUnavailable", str(error), reconciling=True), body,
                                 self.settings.retry_delay_seconds)
            except StepFailed as error:
                await self._fail(status, Outcome(False, error.reason, str(error), stalled=True), body,
                                 self.settings.stalled_retry_delay_seconds, phase="Failed")
            except ServerNotReady as error:
                await self._fail(status, Outcome(False, "ServerNotReady", redact(str(error)), stalled=True), body,
                                 self.settings.stalled_retry_delay_seconds, phase="Failed")
            except (E2BAuthFailed, E2BRejected) as error:
                await self._fail(status, Outcome(False, error.reason, str(error), stalled=True), body,
                                 self.settings.stalled_retry_delay_seconds, phase="Failed")
            except SandboxGone as error:
                # Lost between our look and our action: the next round looks again and recreates it.
                self.sightings.forget(body["metadata"]["uid"])
                await self._fail(status, _working("SandboxGone", f"sandbox disappeared: {error}"), body, 1)
            except E2BError as error:
                await self._fail(status, _working(error.reason, str(error)), body, self.settings.retry_delay_seconds)

    async def _fail(self, status: StatusWriter, outcome: Outcome, body: Mapping[str, Any], delay: float,
                    phase: str | None = None) -> None:
        fields = {"phase": phase} if phase else {}
        await status.write(outcome, **fields)
        kind = "Warning" if outcome.stalled else "Normal"
        self.emit(body, kind, outcome.reason, status.redact(outcome.message))
        raise RetryLater(status.redact(outcome.message), delay)

    async def _reconcile(self, body: Mapping[str, Any], spec: RemoteAgentSpec, status: StatusWriter,
                         redact: Redactor) -> None:
        uid = body["metadata"]["uid"]
        inputs = await self.inputs.resolve(body["metadata"]["namespace"], spec, redact)
        git_token = await self.inputs.git_token(body["metadata"]["namespace"], spec.source, redact)
        target = await self.refs.resolve(spec.source.repo, spec.source.ref, git_token)
        template = await self._template(body, spec)

        def plan_with(sandboxes: list[ObservedSandbox]) -> decide.AgentPlan:
            return decide.plan_agent(uid=uid, spec=spec, recorded_sandbox_id=status.current.get("sandboxID"),
                                     recorded_revision=status.current.get("revision"), sandboxes=sandboxes,
                                     target_revision=target, idle_paused=self._idle_paused(body, status),
                                     template=template)

        seen = None if inputs.account.is_own else await self.sightings.look(uid)  # own-key agents are not in the fleet list
        plan = plan_with(seen) if seen is not None else None
        if plan is None or any(isinstance(a, (decide.Create, decide.Kill)) for a in plan.actions):
            self.sightings.forget(uid)  # creating or killing: decide on a fresh look only
            seen = await self.gateway.list({SANDBOX_UID_KEY: uid}, inputs.account)
            plan = plan_with(seen)
        kept = next((s for s in seen if s.sandbox_id == plan.keep), None)
        current = SandboxAddress(plan.keep, inputs.account) if plan.keep else None
        created = False
        if any(not isinstance(a, decide.Checkout) for a in plan.actions):
            # Creating, killing, pausing or resuming makes the last sighting stale; a checkout
            # changes nothing the list shows (and pushes come in bursts: keep planning from it).
            self.sightings.forget(uid)
        for action in plan.actions:
            match action:
                case decide.Kill(sandbox_id=sandbox_id, reason=reason):
                    await self.gateway.kill(SandboxAddress(sandbox_id, inputs.account))
                    self.emit(body, "Normal", "SandboxKilled", f"killed sandbox {sandbox_id} ({reason})")
                case decide.Create(idempotency_key=key, replaces_lost=lost):
                    if lost:
                        self.emit(body, "Warning", "SandboxLost", f"sandbox {lost} is gone; recreating it from git")
                    await status.write(_working("Creating", "creating the sandbox"), phase="Creating")
                    current = await self.gateway.create(
                        template=template.template_id if template else spec.template,
                        timeout_seconds=spec.sandbox_timeout_seconds,
                        metadata=self._metadata(body, spec, template), idempotency_key=key, account=inputs.account)
                    created = True
                    self.emit(body, "Normal", "SandboxCreated", f"created sandbox {current.sandbox_id}")
                    await status.write(_working("SettingUp", "checking out the code"), phase="SettingUp",
                                       sandboxID=current.sandbox_id, revision=None, shortRevision=None)
                case decide.Resume():
                    await self.gateway.resume(current, spec.sandbox_timeout_seconds)
                    self.emit(body, "Normal", "SandboxResumed", f"resumed sandbox {current.sandbox_id}")
                case decide.Pause():
                    await self.gateway.pause(current)
                    self.emit(body, "Normal", "SandboxPaused", f"paused sandbox {current.sandbox_id}")
                case decide.Checkout(revision=revision):
                    phase = "SettingUp" if created or not status.current.get("revision") else "Updating"
                    await status.write(_working(phase, f"checking out {revision[:12]} and running setup"),
                                       phase=phase, sandboxID=current.sandbox_id)
                    await self._checkout(current, spec, revision, inputs, git_token, redact)
                    self.emit(body, "Normal", "CodeUpdated", f"checked out {revision[:12]} and ran setup")
                    await status.write(_working(phase, "code is up to date"), phase=phase,
                                       sandboxID=current.sandbox_id,
                                       revision=revision, shortRevision=revision[:12],
                                       workdir=decide.workdir(spec))
        template_condition = _template_condition(template, kept, POOL_LABEL in (body["metadata"].get("labels") or {}))
        if current is None:
            if template is not None and not template.usable:
                # The template's watch brings the agent back when it has a Ready build.
                why = template.problem[1] if template.problem else "it has no Ready build yet"
                await status.write(_working("TemplateNotReady", f"waiting for the template: {why}"),
                                   template_condition, phase="Pending")
                return
            await status.write(_working("RefNotResolved", "waiting for the ref to resolve"), phase="Pending")
            return
        if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.current.get("conditions") or []) \
                and body["metadata"].get("generation") == 1 and not spec.paused:
            metrics.observe_time_to_ready(body["metadata"].get("creationTimestamp"))
        if spec.paused:
            phase, reason, message = "Paused", "Paused", "sandbox is paused (spec.paused)"
        elif self._idle_paused(body, status):
            phase, reason, message = "Paused", "IdlePaused", "sandbox is paused while idle; the next task resumes it"
        else:
            phase, reason, message = "Ready", "Ready", "sandbox is running"
        if template_condition and template_condition[0][1] is False:
            message += f"; {_template_note(template, template_condition[0][2])}"
        server = {}
        if spec.server and phase == "Ready":
            server["server"] = await self.servers.ensure(
                body, spec, current, inputs.env, status.current.get("revision"), status.current.get("server") or {})
        await status.write(Outcome(ready=True, reason=reason, message=message), template_condition, phase=phase,
                           sandboxID=current.sandbox_id,
                           workdir=decide.workdir(spec), **server)
        deferred = server.get("server", {}).get("revision")
        if deferred is not None and deferred != status.current.get("revision"):
            # The upgrade waits for the running tasks. The end of the last one requests a reconcile,
            # but it may come before this agent's new revision reaches the task room: look again.
            raise RetryLater("waiting for the running tasks to end before restarting the resident process "
                             "on the new code", self.settings.retry_delay_seconds)
        if template_condition and template_condition[0][2] == "TemplateUpdatePending":
            # A standalone agent takes its template's new build once no task runs on it.
            raise RetryLater("waiting for the running tasks to end before taking the new template",
                             self.settings.retry_delay_seconds)

    async def _checkout(self, sandbox: SandboxAddress, spec: RemoteAgentSpec, revision: str, inputs: ResolvedInputs,
                        git_token: str | None, redact: Redactor) -> None:
        script = git.checkout_script(spec.source.repo, revision, decide.AGENT_HOME)
        outcome = await self.gateway.run(sandbox, script, envs=git.auth_env(git_token), cwd=None,
                                         timeout_seconds=self.settings.git_timeout_seconds)
        if outcome.exit_code != 0:
            raise StepFailed("CheckoutFailed", f"checkout of {revision[:12]} failed (exit {outcome.exit_code}): "
                                               f"{redact(outcome.stderr)[-OUTPUT_TAIL_CHARS:]}")
        for index, command in enumerate(spec.setup, start=1):
            outcome = await self.gateway.run(sandbox, command, envs=inputs.env, cwd=decide.workdir(spec),
                                             timeout_seconds=self.settings.setup_timeout_seconds)
            if outcome.exit_code != 0:
                raise StepFailed("SetupFailed", f"setup step {index} exited {outcome.exit_code}: "
                                                f"{redact(outcome.stderr)[-OUTPUT_TAIL_CHARS:]}")

    async def delete(self, body: Mapping[str, Any], attempt: int = 0) -> None:
        """Kill the agent's sandboxes (or leave them, deletionPolicy Orphan) before the finalizer goes.
        Read leniently from the raw spec: an object whose spec no longer parses must still go. Only
        with the agent's own account: when its key cannot be read or E2B rejects it (and a sandbox
        was recorded), the finalizer stays and the deletion is retried with backoff."""
        meta = body["metadata"]
        policy = decide.deletion_policy_of(body["spec"])
        async with self.lock(meta["uid"]):
            status = StatusWriter(self.kube, body, Redactor())
            await status.write(_working("Terminating", "deleting"), phase="Terminating")
            delay = decide.deletion_retry_delay(attempt, self.settings.retry_delay_seconds,
                                                self.settings.stalled_retry_delay_seconds)
            try:
                account = await self.inputs.account_of(meta["namespace"], decide.key_secret_of(body["spec"]))
                sandboxes = await self.gateway.list({SANDBOX_UID_KEY: meta["uid"]}, account)
            except SecretMissing as error:
                await self._fail(status, Outcome(False, "E2BKeyMissing", f"cannot delete the sandboxes: the E2B "
                                                 f"key cannot be read ({error}); restore it to finish", stalled=True),
                                 body, delay, phase="Terminating")
            except E2BAuthFailed:
                if not status.current.get("sandboxID"):
                    self.emit(body, "Warning", "E2BAuthFailed", "E2B rejects the agent's key and no sandbox was "
                                                                "ever recorded: nothing to delete")
                    self.forget(meta["uid"])
                    return
                await self._fail(status, Outcome(False, "E2BAuthFailed", f"cannot delete sandbox "
                                                 f"{status.current['sandboxID']}: E2B rejects the agent's key; fix "
                                                 f"the key Secret to finish", stalled=True),
                                 body, delay, phase="Terminating")
            except E2BError as error:
                await self._fail(status, _working(error.reason, f"cannot list the sandboxes: {error}"), body, delay,
                                 phase="Terminating")
            for action in decide.plan_deletion(deletion_policy=policy, sandboxes=sandboxes):
                await self.gateway.kill(SandboxAddress(action.sandbox_id, account))
                self.emit(body, "Normal", "SandboxKilled", f"killed sandbox {action.sandbox_id} (object deleted)")
            if policy == "Orphan":
                for sandbox in sandboxes:
                    await self.kube.record_orphan(meta["namespace"], sandbox.sandbox_id, meta["name"])
                    self.emit(body, "Normal", "SandboxOrphaned", f"left sandbox {sandbox.sandbox_id} running")
        self.forget(meta["uid"])
