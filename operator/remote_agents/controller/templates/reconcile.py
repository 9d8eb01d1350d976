"""Build an E2BTemplate in E2B: resolve what goes into it (git commits, ConfigMap files), ask for a
build when that content changed (decide.py), follow the build to its end, and report phase,
ids, content hash, the log's tail, conditions and Events.

Kopf-free: failures that should be retried later surface as `RetryLater`. A build is followed by
a task of its own (the handler returns at once); after a restart the recorded buildID is followed
again. The files for a build are put together in a scratch directory that lives only while the
SDK uploads them; no Secret value ever goes into it, into the steps or into status.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from remote_agents.api.models import E2BTemplateSpec, SecretKeySelector
from remote_agents.api.names import TEMPLATES
from remote_agents.controller.agents import decide as agent_decide
from remote_agents.controller.agents.inputs import AgentInputs
from remote_agents.controller.clients.e2b import E2BAuthFailed, E2BError, E2BRejected, E2BUnavailable
from remote_agents.controller.clients.e2b_templates import BuildRef, TemplateBuilds
from remote_agents.controller.clients.events import EventSink
from remote_agents.controller.clients.kube import Kube, SecretMissing
from remote_agents.controller.retry import RetryLater
from remote_agents.controller.sandboxes import E2BAccount
from remote_agents.controller.settings import OperatorSettings
from remote_agents.controller.sources import git
from remote_agents.controller.sources.refs import RefResolver
from remote_agents.controller.status import Outcome, status_update
from remote_agents.controller.templates import decide

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0  # between looks at a build in progress
UNAVAILABLE_POLL_SECONDS = 10.0  # between looks while E2B does not answer


class ConfigMapMissing(Exception):
    pass


class Resolved:
    """What a build of the spec is made of, resolved now."""

    def __init__(self, account: E2BAccount, commits: dict[int, str], tokens: dict[int, str | None],
                 files: dict[int, dict[str, str]]):
        self.account = account
        self.commits = commits  # step index -> commit of its git copy
        self.tokens = tokens  # step index -> its git token (never written anywhere)
        self.files = files  # step index -> relative path -> text of its ConfigMap copy


async def _write_status(kube: Kube, body: Mapping[str, Any], outcome: Outcome, **fields: Any) -> dict[str, Any]:
    """Patch the status when something visible changed; returns the status as it is now."""
    current = dict(body.get("status") or {})
    desired = status_update(current, outcome, body["metadata"].get("generation", 0), message=outcome.message, **fields)
    if desired is None:
        return current
    meta = body["metadata"]
    await kube.patch_status(TEMPLATES, meta["namespace"], meta["name"], desired)
    return {**current, **desired}


class TemplateReconciler:
    def __init__(self, builds: TemplateBuilds, kube: Kube, inputs: AgentInputs, settings: OperatorSettings,
                 cluster_id: str, emit: EventSink, refs: RefResolver):
        self.builds = builds
        self.kube = kube
        self.inputs = inputs
        self.settings = settings
        self.cluster_id = cluster_id
        self.emit = emit
        self.refs = refs
        self._locks: dict[str, asyncio.Lock] = {}
        self._followers: dict[str, tuple[str, asyncio.Task]] = {}  # uid -> (build id, task following it)

    def following(self, uid: str) -> str | None:
        """The build id being followed for this template, if any."""
        follower = self._followers.get(uid)
        return follower[0] if follower and not follower[1].done() else None

    async def stop(self) -> None:
        for _, task in self._followers.values():
            task.cancel()

    async def reconcile(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        async with self._locks.setdefault(meta["uid"], asyncio.Lock()):
            # Read afresh: a build's follower writes status outside the handler, after Kopf's copy.
            body = await self.kube.get(TEMPLATES, meta["namespace"], meta["name"])
            if body is None or body["metadata"].get("deletionTimestamp"):
                return  # gone or going: nothing may be built for it any more (delete() has it)
            try:
                spec = E2BTemplateSpec.model_validate(body["spec"])
            except ValidationError as error:
                await self._fail(body, Outcome(False, "InvalidSpec", f"the spec cannot be parsed: {error}",
                                               stalled=True), self.settings.stalled_retry_delay_seconds)
            try:
                await self._reconcile(body, spec)
            except SecretMissing as error:
                await self._fail(body, Outcome(False, "SecretNotFound", str(error), stalled=True),
                                 self.settings.retry_delay_seconds * 3)
            except ConfigMapMissing as error:
                await self._fail(body, Outcome(False, "ConfigMapNotFound", str(error), stalled=True),
                                 self.settings.retry_delay_seconds * 3)
            except git.RefNotFound as error:
                await self._fail(body, Outcome(False, "RefNotFound", str(error), stalled=True),
                                 self.settings.stalled_retry_delay_seconds / 5)
            except git.GitUnavailable as error:
                await self._fail(body, Outcome(False, "GitUnavailable", str(error), reconciling=True),
                                 self.settings.retry_delay_seconds)
            except E2BUnavailable as error:
                await self._fail(body, Outcome(False, error.reason, str(error), reconciling=True),
                                 self.settings.retry_delay_seconds)

    async def delete(self, body: Mapping[str, Any], attempt: int = 0) -> None:
        """Delete the template's E2B template (deletionPolicy Orphan: leave it) before the finalizer
        goes, in the account it was built in; sandboxes made from it keep running. Read leniently
        from the raw spec: an object whose spec no longer parses must still go. When the key cannot
        be read or E2B does not delete it, the finalizer stays and the deletion is retried with
        backoff, an Event saying why: never a template left behind unknown."""
        meta = body["metadata"]
        async with self._locks.setdefault(meta["uid"], asyncio.Lock()):
            self._unfollow(meta["uid"])  # E2B cancels the build with its template
            # Read afresh: a build started after Kopf's copy is recorded only in the stored status.
            body = await self.kube.get(TEMPLATES, meta["namespace"], meta["name"]) or body
            template_id = (body.get("status") or {}).get("templateID")
            if template_id and agent_decide.deletion_policy_of(body["spec"]) == "Orphan":
                self.emit(body, "Normal", "TemplateOrphaned", f"left E2B template {template_id} in E2B")
            elif template_id:
                await self._delete_in_e2b(body, template_id, attempt)
        self._locks.pop(meta["uid"], None)

    async def _delete_in_e2b(self, body: Mapping[str, Any], template_id: str, attempt: int) -> None:
        delay = agent_decide.deletion_retry_delay(attempt, self.settings.retry_delay_seconds,
                                                  self.settings.stalled_retry_delay_seconds)
        try:
            account = await self.inputs.account_of(body["metadata"]["namespace"],
                                                   agent_decide.key_secret_of(body["spec"]))
            deleted = await self.builds.delete(template_id, account)
        except SecretMissing as error:
            self.emit(body, "Warning", "E2BKeyMissing", f"cannot delete E2B template {template_id}: the E2B key "
                                                        f"cannot be read ({error}); restore it to finish")
            raise RetryLater(str(error), delay) from None
        except (E2BAuthFailed, E2BRejected) as error:
            self.emit(body, "Warning", error.reason, f"E2B does not delete template {template_id} ({error}); fix "
                                                     "the key, or set deletionPolicy: Orphan to leave it")
            raise RetryLater(str(error), delay) from None
        except E2BError as error:
            self.emit(body, "Normal", error.reason, f"cannot delete E2B template {template_id} yet: {error}")
            raise RetryLater(str(error), delay) from None
        self.emit(body, "Normal", "TemplateDeleted", f"deleted E2B template {template_id}" if deleted else
                  f"E2B template {template_id} was gone already")

    async def _fail(self, body: Mapping[str, Any], outcome: Outcome, delay: float, **fields: Any) -> None:
        await _write_status(self.kube, body, outcome, **fields)
        self.emit(body, "Warning" if outcome.stalled else "Normal", outcome.reason, outcome.message)
        raise RetryLater(outcome.message, delay)

    async def _resolve(self, namespace: str, spec: E2BTemplateSpec) -> Resolved:
        key = spec.e2b_api_key_secret_ref
        account = await self.inputs.account_of(namespace, (key.name, key.key) if key else None)
        commits: dict[int, str] = {}
        tokens: dict[int, str | None] = {}
        files: dict[int, dict[str, str]] = {}
        for index, step in enumerate(spec.steps):
            if step.copy_ is None:
                continue
            if source := step.copy_.git:
                tokens[index] = await self._secret(namespace, source.credentials_secret_ref)
                commits[index] = await self.refs.resolve(source.repo, source.ref, tokens[index])
            elif ref := step.copy_.config_map_ref:
                data = await self.kube.configmap_data(namespace, ref.name)
                items = [(item.key, item.path) for item in ref.items] if ref.items is not None else None
                found = decide.config_map_files(data, items) if data is not None else None
                if found is None:
                    raise ConfigMapMissing(f"steps[{index}].copy.configMapRef: ConfigMap {namespace}/{ref.name} "
                                           "or one of its items' keys not found")
                files[index] = found
        return Resolved(account, commits, tokens, files)

    async def _secret(self, namespace: str, ref: SecretKeySelector | None) -> str | None:
        return await self.kube.secret_value(namespace, ref.name, ref.key, ref.optional) if ref else None

    async def _reconcile(self, body: Mapping[str, Any], spec: E2BTemplateSpec) -> None:
        meta = body["metadata"]
        resolved = await self._resolve(meta["namespace"], spec)
        content = decide.content_hash(spec, resolved.commits, resolved.files)
        status = dict(body.get("status") or {})
        followed = self.following(meta["uid"])
        action = decide.plan_template(content, status, following=followed is not None and
                                      followed == status.get("buildID"))
        match action:
            case decide.StartBuild(content_hash=content_hash):
                await self._start(body, spec, resolved, content_hash)
            case decide.FollowBuild(template_id=template_id, build_id=build_id):
                self._follow(body, BuildRef(template_id, build_id), resolved.account)
            case None if status.get("observedGeneration") != meta.get("generation"):
                # An edit that changes nothing built (or a restart): status says so for this generation.
                phase, outcome = _settled(status)
                await _write_status(self.kube, body, outcome, phase=phase)

    async def _start(self, body: Mapping[str, Any], spec: E2BTemplateSpec, resolved: Resolved, content: str) -> None:
        meta = body["metadata"]
        self._unfollow(meta["uid"])  # a build of older content is of no use any more
        name = decide.e2b_name(meta["namespace"], meta["name"], self.cluster_id)
        try:
            with tempfile.TemporaryDirectory(prefix="e2b-template-") as context:
                await self._gather_files(spec, resolved, Path(context))
                build = await self.builds.start(decide.recipe(spec), name, Path(context), resolved.account)
        except (E2BAuthFailed, E2BRejected) as error:
            # Not retried until the content changes: recorded as this content's failed build.
            self.emit(body, "Warning", "BuildFailed", str(error))
            await _write_status(self.kube, body, Outcome(False, "BuildFailed", str(error), stalled=True),
                                phase="Failed", contentHash=content, buildID=None, buildLog=None)
            return
        self.emit(body, "Normal", "BuildStarted", f"building template {name} (content {content}, build "
                                                  f"{build.build_id})")
        current = await _write_status(
            self.kube, body, Outcome(False, "Building", f"building content {content}", reconciling=True),
            phase="Building", templateID=build.template_id, buildID=build.build_id, contentHash=content, buildLog="")
        self._follow({**body, "status": current}, build, resolved.account)

    async def _gather_files(self, spec: E2BTemplateSpec, resolved: Resolved, context: Path) -> None:
        """Each copy step's files, in its own directory of the build's file context."""
        for index, step in enumerate(spec.steps):
            if step.copy_ is None:
                continue
            directory = context / decide.context_dir(index)
            directory.mkdir()
            if index in resolved.commits:
                source = step.copy_.git
                await git.export(source.repo, resolved.commits[index], source.path.strip("/"), str(directory),
                                 resolved.tokens[index], self.settings.git_timeout_seconds)
            else:
                for path, text in resolved.files[index].items():
                    target = directory / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(text)

    # ---- following a build -----------------------------------------------------------------------
    def _follow(self, body: Mapping[str, Any], build: BuildRef, account: E2BAccount) -> None:
        uid = body["metadata"]["uid"]
        self._unfollow(uid)
        task = asyncio.get_running_loop().create_task(self._watch_build(body, build, account),
                                                      name=f"build-{build.build_id}")
        self._followers[uid] = (build.build_id, task)

    def _unfollow(self, uid: str) -> None:
        follower = self._followers.pop(uid, None)
        if follower:
            follower[1].cancel()

    async def _watch_build(self, body: Mapping[str, Any], build: BuildRef, account: E2BAccount) -> None:
        meta = body["metadata"]
        offset, log_text = 0, ""
        while True:
            try:
                progress = await self.builds.progress(build, offset, account)
            except E2BUnavailable as error:
                log.info("template %s/%s: build %s status unavailable (%s)", meta["namespace"], meta["name"],
                         build.build_id, error)
                await asyncio.sleep(UNAVAILABLE_POLL_SECONDS)
                continue
            except E2BError as error:
                progress = decide.BuildProgress(state="error", reason=str(error))
            offset += len(progress.log_lines)
            log_text = decide.log_tail(log_text, progress.log_lines)
            current = await self.kube.get(TEMPLATES, meta["namespace"], meta["name"])
            if current is None or current["metadata"]["uid"] != meta["uid"] or \
                    (current.get("status") or {}).get("buildID") != build.build_id:
                return  # deleted, or superseded by a newer build
            phase, outcome = decide.outcome_of(progress)
            ready = {"readyContentHash": current["status"].get("contentHash")} if phase == "Ready" else {}
            await _write_status(self.kube, current, outcome, phase=phase, buildLog=log_text, **ready)
            if decide.finished(progress):
                reason = outcome.reason
                self.emit(current, "Normal" if phase == "Ready" else "Warning", reason, outcome.message)
                return
            await asyncio.sleep(POLL_SECONDS)


def _settled(status: dict[str, Any]) -> tuple[str, Outcome]:
    """Phase and conditions of a template whose latest build is over (or being followed)."""
    phase = status.get("phase") or "Pending"
    state = {"Ready": "ready", "Failed": "error"}.get(phase, "building")
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    _, outcome = decide.outcome_of(decide.BuildProgress(state=state))
    if phase == "Failed":  # keep the build's own reason
        outcome = Outcome(False, "BuildFailed", ready.get("message") or outcome.message, stalled=True)
    return phase, outcome
