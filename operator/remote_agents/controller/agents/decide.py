"""What to do for one RemoteAgent, given what is desired and what E2B shows. Pure: no I/O, no Kopf.

The reconciler turns an `AgentPlan` into E2B calls in order; after a crash anywhere, planning
again from a fresh look at E2B (sandboxes found by the object's uid) converges to one sandbox.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from remote_agents.api.models import RemoteAgentSpec
from remote_agents.api.names import SANDBOX_CONFIG_KEY, SANDBOX_NAMESPACE_KEY, SANDBOX_TEMPLATE_KEY
from remote_agents.controller.sandboxes import ObservedSandbox

AGENT_HOME = "/home/user/agent"


@dataclass(frozen=True)
class Kill:
    sandbox_id: str
    reason: str  # Duplicate | ConfigChanged | TemplateChanged | Deleted


@dataclass(frozen=True)
class Create:
    idempotency_key: str
    replaces_lost: str | None = None  # the sandbox E2B lost, if that is why we create


# Resume, Pause and Checkout act on the agent's current sandbox: the kept one, or the one just created.
@dataclass(frozen=True)
class Resume:
    pass


@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Checkout:
    revision: str  # fetch + checkout + setup


Action = Kill | Create | Resume | Pause | Checkout


@dataclass(frozen=True)
class AgentPlan:
    actions: list[Action] = field(default_factory=list)
    keep: str | None = None  # the sandbox that stays (None when one is about to be created)


@dataclass(frozen=True)
class TemplateState:
    """The E2BTemplate an agent's spec.templateRef names, as the reconciler found it."""

    template_id: str | None  # what to create sandboxes from; None: no Ready build (yet, or any more)
    content_hash: str | None  # of that Ready build
    may_replace: bool  # a sandbox of older content may be replaced now (standalone, running no task)
    problem: tuple[str, str] | None = None  # (reason, message) when the template is not Ready

    @property
    def usable(self) -> bool:
        return self.template_id is not None and self.content_hash is not None


def template_state(template: dict | None, name: str, may_replace: bool) -> TemplateState:
    """What an E2BTemplate object (None: it does not exist) offers the agents naming it."""
    if template is None:
        return TemplateState(None, None, may_replace, ("TemplateNotFound", f"E2BTemplate {name} does not exist"))
    status = template.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    problem = None
    if ready.get("status") != "True":
        problem = ("TemplateNotReady", f"E2BTemplate {name} is not Ready: "
                                       f"{ready.get('message') or status.get('phase') or 'not built yet'}")
    content = status.get("readyContentHash")
    return TemplateState(status.get("templateID") if content else None, content, may_replace, problem)


def parse_spec(raw_spec: object) -> tuple[RemoteAgentSpec | None, str | None]:
    """The spec, or why it cannot be parsed (naming each field), for an object the API server
    stored under an older or looser schema than this operator's model."""
    try:
        return RemoteAgentSpec.model_validate(raw_spec), None
    except ValidationError as error:
        problems = ["spec" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in e["loc"])
                    + f": {e['msg']}" for e in error.errors()]
        return None, "; ".join(problems)


def config_hash(spec: RemoteAgentSpec) -> str:
    """Hash of the spec fields a running sandbox cannot take in place (template, env, credentials).
    It references Secrets by name only: no secret value ever goes into it. The content of an
    E2BTemplate is compared on its own (SANDBOX_TEMPLATE_KEY): only its Ready build replaces a sandbox."""
    relevant = {
        "template": spec.template,
        "env": [variable.model_dump(by_alias=True, exclude_none=True) for variable in spec.env],
        "e2bKey": spec.e2b_api_key_secret_ref.model_dump(by_alias=True) if spec.e2b_api_key_secret_ref else None,
    }
    if spec.template_ref:  # only then: the hashes of agents without one stay as they were
        relevant["templateRef"] = spec.template_ref.name
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def idempotency_key(uid: str, previous_sandbox_id: str | None) -> str:
    """Stable for one incarnation: a retried or repeated create after a crash returns the same
    sandbox; after a loss or a config change the previous sandbox id makes a fresh key."""
    digest = hashlib.sha256(f"{uid}/{previous_sandbox_id or ''}".encode()).hexdigest()[:32]
    return f"ra-{digest}"


def workdir(spec: RemoteAgentSpec) -> str:
    path = spec.source.path.strip("/")
    return f"{AGENT_HOME}/{path}" if path else AGENT_HOME


def _pick_keeper(sandboxes: list[ObservedSandbox], recorded_id: str | None, wanted_hash: str) -> ObservedSandbox:
    for sandbox in sandboxes:
        if sandbox.sandbox_id == recorded_id:
            return sandbox
    # No record (crash before status was written): prefer a current config, then the oldest.
    return sorted(sandboxes, key=lambda s: (s.metadata.get(SANDBOX_CONFIG_KEY) != wanted_hash, s.started_at))[0]


def outdated_template(sandbox: ObservedSandbox, template: TemplateState | None) -> bool:
    """The sandbox was made from older content of its E2BTemplate than the Ready build."""
    return template is not None and template.usable and \
        sandbox.metadata.get(SANDBOX_TEMPLATE_KEY) != template.content_hash


def plan_agent(*, uid: str, spec: RemoteAgentSpec, recorded_sandbox_id: str | None, recorded_revision: str | None,
               sandboxes: list[ObservedSandbox], target_revision: str | None, idle_paused: bool = False,
               template: TemplateState | None = None) -> AgentPlan:
    """Plan for a live (not deleting) agent. `sandboxes` are all E2B sandboxes tagged with `uid`.
    `idle_paused`: the operator paused it for idleness; it stays paused like `spec.paused`.
    `template`: its E2BTemplate (spec.templateRef), without whose Ready build nothing is created;
    a sandbox of older content is replaced only when `template.may_replace`."""
    paused = spec.paused or idle_paused
    wanted_hash = config_hash(spec)
    actions: list[Action] = []
    keeper = _pick_keeper(sandboxes, recorded_sandbox_id, wanted_hash) if sandboxes else None
    actions += [Kill(s.sandbox_id, "Duplicate") for s in sandboxes if keeper and s.sandbox_id != keeper.sandbox_id]

    can_create = template is None or template.usable  # never kill what cannot be replaced
    if keeper is not None and keeper.metadata.get(SANDBOX_CONFIG_KEY) != wanted_hash and can_create:
        actions.append(Kill(keeper.sandbox_id, "ConfigChanged"))
        previous, keeper = keeper.sandbox_id, None
    elif keeper is not None and outdated_template(keeper, template) and template.may_replace:
        actions.append(Kill(keeper.sandbox_id, "TemplateChanged"))
        previous, keeper = keeper.sandbox_id, None
    else:
        previous = recorded_sandbox_id

    revision = target_revision or (recorded_revision if keeper is not None else None)
    if keeper is None:
        lost = recorded_sandbox_id if not sandboxes else None
        if target_revision is None or not can_create:
            return AgentPlan(actions=actions, keep=None)
        actions.append(Create(idempotency_key(uid, previous), replaces_lost=lost))
        actions.append(Checkout(target_revision))
        if paused:
            actions.append(Pause())
        return AgentPlan(actions=actions, keep=None)

    fresh_adoption = keeper.sandbox_id != recorded_sandbox_id  # we do not know what it has checked out
    needs_checkout = revision is not None and (fresh_adoption or revision != recorded_revision)
    if paused:
        if keeper.state == "running":
            if needs_checkout:
                actions.append(Checkout(revision))
            actions.append(Pause())
        elif needs_checkout and fresh_adoption:
            # A paused sandbox we adopt after a crash: bring it up to date once, then pause it again.
            actions += [Resume(), Checkout(revision), Pause()]
        return AgentPlan(actions=actions, keep=keeper.sandbox_id)

    if keeper.state == "paused":
        actions.append(Resume())
    if needs_checkout:
        actions.append(Checkout(revision))
    return AgentPlan(actions=actions, keep=keeper.sandbox_id)


def plan_deletion(*, deletion_policy: str, sandboxes: list[ObservedSandbox]) -> list[Action]:
    if deletion_policy == "Orphan":
        return []
    return [Kill(s.sandbox_id, "Deleted") for s in sandboxes]


def needs_timeout_refresh(sandbox: ObservedSandbox, now_epoch: float, timeout_seconds: int) -> bool:
    """Refresh when less than half of the configured lifetime is left: two chances per lifetime."""
    return sandbox.state == "running" and sandbox.end_at.timestamp() - now_epoch < timeout_seconds / 2


@dataclass(frozen=True)
class AgentView:
    """What the fleet-wide checks need to know of one RemoteAgent (kept in memory from watch events)."""

    uid: str
    namespace: str
    name: str
    paused: bool
    sandbox_id: str | None
    revision: str | None
    repo: str
    ref: str
    config_hash: str
    timeout_seconds: int
    own_api_key: bool  # its sandboxes live in another E2B account: not in the fleet-wide list
    deleting: bool
    phase: str | None = None
    spec: RemoteAgentSpec | None = None
    pool: str | None = None
    ready: bool = False  # Ready condition true for the current generation
    stalled: bool = False  # Stalled condition true (the operator cannot make progress on its own)
    idle_paused: bool = False
    last_activity_time: str | None = None
    ready_since: str | None = None  # lastTransitionTime of Ready
    workdir: str = AGENT_HOME
    e2b_key_secret: str | None = None  # the Secret holding its own E2B key (protected while referenced)
    invalid_spec: str | None = None  # why its spec cannot be parsed: tracked, never judged by the fleet
    server_outdated: bool = False  # its resident process runs older code: it takes no task until restarted
    sessions: int = 0  # status.sessions as written
    usage: Mapping[str, Any] | None = None  # status.usage: the cost ledger (agents/ledger.py)


def server_outdated(spec: RemoteAgentSpec, status: dict) -> bool:
    """A resident agent whose process was started on another revision than the checked-out one
    (restarted once no task runs on it)."""
    server = status.get("server") or {}
    return bool(spec.server) and server.get("revision") != status.get("revision")


def drift(view: AgentView, observed: list[ObservedSandbox]) -> str | None:
    """Why an agent needs a reconcile, judged from the fleet-wide list alone; None when it is fine."""
    if view.deleting or view.own_api_key or view.sandbox_id is None or view.invalid_spec:
        return None
    if not observed:
        return "SandboxLost"
    if len(observed) > 1:
        return "DuplicateSandboxes"
    sandbox = observed[0]
    if sandbox.sandbox_id != view.sandbox_id:
        return "UnrecordedSandbox"
    if sandbox.metadata.get(SANDBOX_CONFIG_KEY) != view.config_hash:
        return "ConfigChanged"
    if view.paused and sandbox.state == "running":
        return "ShouldBePaused"
    if not view.paused and sandbox.state == "paused":
        return "ShouldBeRunning"
    return None


def should_idle_pause(idle_pause_seconds: int, running_tasks: int, idle_since_epoch: float | None,
                      already_paused: bool, now_epoch: float) -> bool:
    return (idle_pause_seconds > 0 and running_tasks == 0 and not already_paused and idle_since_epoch is not None
            and now_epoch - idle_since_epoch >= idle_pause_seconds)


def serves(namespaces: tuple[str, ...], sandbox: ObservedSandbox) -> bool:
    """Whether an operator serving `namespaces` (empty: all) may judge `sandbox` at all: another
    instance, serving other namespaces, shares the cluster tag. A sandbox without a namespace tag is
    judged only by a cluster-wide instance."""
    return not namespaces or sandbox.metadata.get(SANDBOX_NAMESPACE_KEY) in namespaces


def unreferenced_key_secret(gone: AgentView | None, now: AgentView | None,
                            views: Iterable[AgentView]) -> tuple[str, str] | None:
    """The (namespace, Secret) whose protection to lift when an agent changed from `gone` to `now`
    (None: deleted): the E2B key Secret `gone` used, once neither `now` nor any of `views` uses it
    (E2BTemplates may still: the caller asks key_secret_in_use with them before lifting it)."""
    if gone is None or gone.e2b_key_secret is None:
        return None
    key = (gone.namespace, gone.e2b_key_secret)
    return None if key_secret_in_use(key, [v for v in (now, *views) if v is not None]) else key


def key_secret_in_use(key: tuple[str, str], views: Iterable[AgentView],
                      templates: Collection[tuple[str, str]] = ()) -> bool:
    """Whether an agent of `views` or an E2BTemplate (`templates`: the (namespace, Secret) of the
    keys they name) uses the E2B key Secret `key`."""
    return key in templates or any((v.namespace, v.e2b_key_secret) == key for v in views)


def deletion_policy_of(raw_spec: object) -> str:
    """deletionPolicy read leniently from a stored spec that may not parse: "Delete" when it says so
    or says nothing (the default); anything else keeps what the deletion would remove (the agent's
    sandbox, the E2BTemplate's E2B template): never delete on a guess."""
    policy = raw_spec.get("deletionPolicy", "Delete") if isinstance(raw_spec, dict) else "Delete"
    return "Delete" if policy == "Delete" else "Orphan"


def key_secret_of(raw_spec: object) -> tuple[str, str] | None:
    """(Secret name, key) of spec.e2bApiKeySecretRef read leniently; None when the spec names none.
    A ref that is there but unreadable is returned with empty parts: its Secret is then "missing"."""
    ref = raw_spec.get("e2bApiKeySecretRef") if isinstance(raw_spec, dict) else None
    if ref is None:
        return None
    ref = ref if isinstance(ref, dict) else {}
    return str(ref.get("name") or ""), str(ref.get("key") or "")


def deletion_retry_delay(attempt: int, base_seconds: float, max_seconds: float) -> float:
    """Backoff between tries of a deletion that is blocked (its key unreadable or rejected)."""
    return min(max_seconds, base_seconds * 2 ** max(0, attempt))
