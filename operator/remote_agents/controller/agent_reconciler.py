"""Carry out the plan for one RemoteAgent: resolve its Secrets and ref, look its sandboxes up in
E2B, plan (decisions.py), act, and report progress in status, conditions and Events.

Kopf-free: failures that should be retried later surface as `RetryLater`, which the handlers
translate for Kopf.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from remote_agents.api.models import RemoteAgentSpec
from remote_agents.controller import decisions, git_source, metrics
from remote_agents.controller.conditions import Outcome, status_update
from remote_agents.controller.e2b_gateway import (
    CLUSTER_KEY, CONFIG_KEY, NAME_KEY, NAMESPACE_KEY, UID_KEY, E2BAuthFailed, E2BError, E2BRejected,
    ObservedSandbox, SandboxGateway, SandboxGone,
)
from remote_agents.controller.kube import Kube, SecretMissing
from remote_agents.controller.ref_resolver import RefResolver
from remote_agents.controller.sightings import Sightings
from remote_agents.controller.settings import OperatorSettings

log = logging.getLogger(__name__)
PLURAL = "remoteagents"
OUTPUT_TAIL_CHARS = 2000

# emit(body, type, reason, message): posts a Kubernetes Event about the object.
EventSink = Callable[[Mapping[str, Any], str, str, str], None]


class RetryLater(Exception):
    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.delay = delay


class StepFailed(Exception):
    """A command in the sandbox (checkout or a setup step) exited non-zero."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Redactor:
    """Knows the secret values of one reconcile and blanks them out of anything we report."""

    values: set[str] = field(default_factory=set)

    def add(self, value: str | None) -> None:
        if value and len(value) >= 4:
            self.values.add(value)

    def __call__(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, "***")
        return text


@dataclass
class ResolvedInputs:
    env: dict[str, str]
    git_token: str | None
    api_key: str | None


class StatusWriter:
    """Writes the status subresource only when something visible changed (no churn)."""

    def __init__(self, kube: Kube, body: Mapping[str, Any], redact: Redactor):
        self.kube = kube
        self.namespace = body["metadata"]["namespace"]
        self.name = body["metadata"]["name"]
        self.generation = body["metadata"].get("generation", 0)
        self.current: dict[str, Any] = dict(body.get("status") or {})
        self.redact = redact

    async def write(self, outcome: Outcome, **fields: Any) -> None:
        outcome = Outcome(outcome.ready, outcome.reason, self.redact(outcome.message), outcome.reconciling,
                          outcome.stalled)
        desired = status_update(self.current, outcome, self.generation, message=outcome.message or None, **fields)
        if desired is None:
            return
        await self.kube.patch_status(PLURAL, self.namespace, self.name, desired)
        self.current = {**self.current, **desired}


def _working(reason: str, message: str) -> Outcome:
    return Outcome(ready=False, reason=reason, message=message, reconciling=True)


class AgentReconciler:
    def __init__(self, gateway: SandboxGateway, kube: Kube, settings: OperatorSettings, cluster_id: str,
                 emit: EventSink, sightings: Sightings, refs: RefResolver):
        self.gateway = gateway
        self.refs = refs
        self.kube = kube
        self.settings = settings
        self.cluster_id = cluster_id
        self.emit = emit
        self.sightings = sightings
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, uid: str) -> asyncio.Lock:
        """One lock per object: handlers, the health loop and task dispatch never overlap on it."""
        return self._locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)

    async def resolve_inputs(self, namespace: str, spec: RemoteAgentSpec, redact: Redactor) -> ResolvedInputs:
        env: dict[str, str] = {}
        for variable in spec.env:
            if variable.value_from is None:
                env[variable.name] = variable.value or ""
                continue
            ref = variable.value_from.secret_key_ref
            value = await self.kube.secret_value(namespace, ref.name, ref.key, ref.optional)
            if value is not None:
                env[variable.name] = value
                redact.add(value)
        token = api_key = None
        if spec.source.credentials_secret_ref:
            ref = spec.source.credentials_secret_ref
            token = await self.kube.secret_value(namespace, ref.name, ref.key, ref.optional)
            redact.add(token)
        if spec.e2b_api_key_secret_ref:
            ref = spec.e2b_api_key_secret_ref
            api_key = await self.kube.secret_value(namespace, ref.name, ref.key, ref.optional)
            redact.add(api_key)
        return ResolvedInputs(env=env, git_token=token, api_key=api_key)

    def _metadata(self, body: Mapping[str, Any], spec: RemoteAgentSpec) -> dict[str, str]:
        meta = body["metadata"]
        return {UID_KEY: meta["uid"], CLUSTER_KEY: self.cluster_id, NAMESPACE_KEY: meta["namespace"],
                NAME_KEY: meta["name"], CONFIG_KEY: decisions.config_hash(spec)}

    async def reconcile(self, body: Mapping[str, Any]) -> None:
        spec = RemoteAgentSpec.model_validate(body["spec"])
        redact = Redactor()
        status = StatusWriter(self.kube, body, redact)
        async with self.lock(body["metadata"]["uid"]):
            try:
                await self._reconcile(body, spec, status, redact)
            except SecretMissing as error:
                await self._fail(status, Outcome(False, "SecretNotFound", str(error), stalled=True), body,
                                 self.settings.retry_delay_seconds * 3)
            except git_source.RefNotFound as error:
                await self._fail(status, Outcome(False, "RefNotFound", str(error), stalled=True), body,
                                 self.settings.stalled_retry_delay_seconds / 5)
            except git_source.GitUnavailable as error:
                await self._fail(status, Outcome(False, "GitUnavailable", str(error), reconciling=True), body,
                                 self.settings.retry_delay_seconds)
            except StepFailed as error:
                await self._fail(status, Outcome(False, error.reason, str(error), stalled=True), body,
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
        inputs = await self.resolve_inputs(body["metadata"]["namespace"], spec, redact)
        target = await self.refs.resolve(spec.source.repo, spec.source.ref, inputs.git_token)
        def plan_with(sandboxes: list[ObservedSandbox]) -> decisions.AgentPlan:
            return decisions.plan_agent(uid=uid, spec=spec, recorded_sandbox_id=status.current.get("sandboxID"),
                                        recorded_revision=status.current.get("revision"), sandboxes=sandboxes,
                                        target_revision=target, idle_paused=bool(status.current.get("idlePaused")))

        seen = None if inputs.api_key else await self.sightings.look(uid)  # own-key agents are not in the fleet list
        plan = plan_with(seen) if seen is not None else None
        if plan is None or any(isinstance(a, (decisions.Create, decisions.Kill)) for a in plan.actions):
            self.sightings.forget(uid)  # creating or killing: decide on a fresh look only
            plan = plan_with(await self.gateway.list({UID_KEY: uid}, inputs.api_key))
        current = plan.keep
        created = False
        if any(not isinstance(a, decisions.Checkout) for a in plan.actions):
            # Creating, killing, pausing or resuming makes the last sighting stale; a checkout
            # changes nothing the list shows (and pushes come in bursts: keep planning from it).
            self.sightings.forget(uid)
        for action in plan.actions:
            match action:
                case decisions.Kill(sandbox_id=sandbox_id, reason=reason):
                    await self.gateway.kill(sandbox_id, inputs.api_key)
                    self.emit(body, "Normal", "SandboxKilled", f"killed sandbox {sandbox_id} ({reason})")
                case decisions.Create(idempotency_key=key, replaces_lost=lost):
                    if lost:
                        self.emit(body, "Warning", "SandboxLost", f"sandbox {lost} is gone; recreating it from git")
                    await status.write(_working("Creating", "creating the sandbox"), phase="Creating")
                    current = await self.gateway.create(
                        template=spec.template, timeout_seconds=spec.sandbox_timeout_seconds,
                        metadata=self._metadata(body, spec), idempotency_key=key, api_key=inputs.api_key)
                    created = True
                    self.emit(body, "Normal", "SandboxCreated", f"created sandbox {current}")
                    await status.write(_working("SettingUp", "checking out the code"), phase="SettingUp",
                                       sandboxID=current, revision=None, shortRevision=None)
                case decisions.Resume():
                    await self.gateway.resume(current, spec.sandbox_timeout_seconds, inputs.api_key)
                    self.emit(body, "Normal", "SandboxResumed", f"resumed sandbox {current}")
                case decisions.Pause():
                    await self.gateway.pause(current, inputs.api_key)
                    self.emit(body, "Normal", "SandboxPaused", f"paused sandbox {current}")
                case decisions.Checkout(revision=revision):
                    phase = "SettingUp" if created or not status.current.get("revision") else "Updating"
                    await status.write(_working(phase, f"checking out {revision[:12]} and running setup"),
                                       phase=phase, sandboxID=current)
                    await self._checkout(current, spec, revision, inputs, redact)
                    self.emit(body, "Normal", "CodeUpdated", f"checked out {revision[:12]} and ran setup")
                    await status.write(_working(phase, "code is up to date"), phase=phase, sandboxID=current,
                                       revision=revision, shortRevision=revision[:12],
                                       workdir=decisions.workdir(spec))
        if current is None:
            await status.write(_working("RefNotResolved", "waiting for the ref to resolve"), phase="Pending")
            return
        if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.current.get("conditions") or []) \
                and body["metadata"].get("generation") == 1 and not spec.paused:
            metrics.observe_time_to_ready(body["metadata"].get("creationTimestamp"))
        if spec.paused:
            phase, reason, message = "Paused", "Paused", "sandbox is paused (spec.paused)"
        elif status.current.get("idlePaused"):
            phase, reason, message = "Paused", "IdlePaused", "sandbox is paused while idle; the next task resumes it"
        else:
            phase, reason, message = "Ready", "Ready", "sandbox is running"
        await status.write(Outcome(ready=True, reason=reason, message=message), phase=phase, sandboxID=current,
                           workdir=decisions.workdir(spec))

    async def _checkout(self, sandbox_id: str, spec: RemoteAgentSpec, revision: str, inputs: ResolvedInputs,
                        redact: Redactor) -> None:
        script = git_source.checkout_script(spec.source.repo, revision, decisions.AGENT_HOME)
        outcome = await self.gateway.run(sandbox_id, script, envs=git_source.auth_env(inputs.git_token), cwd=None,
                                         timeout_seconds=self.settings.git_timeout_seconds, api_key=inputs.api_key)
        if outcome.exit_code != 0:
            raise StepFailed("CheckoutFailed", f"checkout of {revision[:12]} failed (exit {outcome.exit_code}): "
                                               f"{redact(outcome.stderr[-OUTPUT_TAIL_CHARS:])}")
        for index, command in enumerate(spec.setup, start=1):
            outcome = await self.gateway.run(sandbox_id, command, envs=inputs.env, cwd=decisions.workdir(spec),
                                             timeout_seconds=self.settings.setup_timeout_seconds,
                                             api_key=inputs.api_key)
            if outcome.exit_code != 0:
                raise StepFailed("SetupFailed", f"setup step {index} exited {outcome.exit_code}: "
                                                f"{redact(outcome.stderr[-OUTPUT_TAIL_CHARS:])}")

    async def delete(self, body: Mapping[str, Any]) -> None:
        spec = RemoteAgentSpec.model_validate(body["spec"])
        uid = body["metadata"]["uid"]
        async with self.lock(uid):
            status = StatusWriter(self.kube, body, Redactor())
            await status.write(_working("Terminating", "deleting"), phase="Terminating")
            try:
                api_key = (await self.resolve_inputs(body["metadata"]["namespace"], spec, Redactor())).api_key
            except SecretMissing:
                api_key = None  # the Secret went first: the operator's own key may still reach the sandbox
            sandboxes = await self.gateway.list({UID_KEY: uid}, api_key)
            for action in decisions.plan_deletion(deletion_policy=spec.deletion_policy, sandboxes=sandboxes):
                await self.gateway.kill(action.sandbox_id, api_key)
                self.emit(body, "Normal", "SandboxKilled", f"killed sandbox {action.sandbox_id} (object deleted)")
            if spec.deletion_policy == "Orphan":
                for sandbox in sandboxes:
                    await self.kube.record_orphan(body["metadata"]["namespace"], sandbox.sandbox_id,
                                                  body["metadata"]["name"])
                    self.emit(body, "Normal", "SandboxOrphaned", f"left sandbox {sandbox.sandbox_id} running")
        self.forget(uid)
