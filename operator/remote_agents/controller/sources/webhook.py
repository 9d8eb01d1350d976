"""GitHub webhook receiver: `POST /webhooks/github` verifies a delivery's HMAC signature and turns
a `push` into a PushEvent for the caller, who re-resolves the objects that track that branch.

Answers are chosen so GitHub's view is right: 4xx for anything the sender got wrong (never 5xx
for client input), 503 only when our own callback failed and a redelivery should be tried.

Replays: the signature covers the body, not the X-GitHub-Delivery header, so anyone who saw one
delivery can send its body again under a new id. A push is therefore handled once per delivery id
and once per signed content (repository, ref, the commits before and after), and a push older
(repository.pushed_at) than the newest one handled for its branch is stale. Both memories are
bounded and end with the process; what an agent runs still never comes from a push: the reconcile
a push requests resolves the branch itself (sources/refs.py), so an old push replayed later moves
nothing back."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from remote_agents.controller import metrics
from remote_agents.controller.sources.repos import normalise_repo

log = logging.getLogger(__name__)

PATH = "/webhooks/github"
MIB = 1024 * 1024
DELETED_COMMIT = "0" * 40
COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # SHA-1 or SHA-256 object names
URL_FIELDS = ("clone_url", "ssh_url", "html_url", "git_url")


@dataclass(frozen=True)
class PushEvent:
    repo_keys: frozenset[str]  # normalise_repo() of every identity the payload gives the repository
    branch: str | None  # None for a tag or any other non-branch ref
    commit: str
    delivery: str
    pushed_at: float | None = None  # repository.pushed_at (epoch seconds), when the payload has it

    def concerns(self, repo: str, ref: str) -> bool:
        """Whether an object whose spec.source is (repo, ref) tracks the pushed branch."""
        try:
            same_repo = normalise_repo(repo) in self.repo_keys
        except ValueError:
            return False
        return same_repo and self.branch is not None and ref in (self.branch, f"refs/heads/{self.branch}")


class MalformedPush(ValueError):
    pass


def push_event(payload: object, delivery: str) -> PushEvent | None:
    """The PushEvent of a push payload; None when the push deleted the ref. Raises MalformedPush."""
    if not isinstance(payload, dict):
        raise MalformedPush("payload is not a JSON object")
    ref, commit, repository = payload.get("ref"), payload.get("after"), payload.get("repository")
    if not isinstance(ref, str) or not ref.startswith("refs/"):
        raise MalformedPush("missing or invalid 'ref'")
    if not isinstance(commit, str) or not COMMIT.match(commit):
        raise MalformedPush("missing or invalid 'after'")
    if not isinstance(repository, dict):
        raise MalformedPush("missing 'repository'")
    if payload.get("deleted") is True or commit == DELETED_COMMIT:
        return None
    keys = {_key(repository.get(field)) for field in URL_FIELDS}
    # full_name is owner/name, which means github.com; a GitHub Enterprise repo of the same name is another repo.
    if _key(repository.get("html_url"), host_only=True) in (None, "github.com"):
        keys.add(_key(repository.get("full_name")))
    keys.discard(None)
    if not keys:
        raise MalformedPush("repository has no usable clone_url, ssh_url, html_url, git_url or full_name")
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    return PushEvent(frozenset(keys), branch or None, commit, delivery, _epoch(repository.get("pushed_at")))


def _epoch(value: object) -> float | None:
    """repository.pushed_at: epoch seconds in push payloads (an ISO time in other events)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def _key(value: object, host_only: bool = False) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        key = normalise_repo(value)
    except ValueError:
        return None
    return key.partition("/")[0] if host_only else key


class _Recent:
    """Bounded LRU map: the least recently used keys are forgotten first."""

    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict[Hashable, object]()

    def get(self, key: Hashable) -> object | None:
        if key in self.items:
            self.items.move_to_end(key)
        return self.items.get(key)

    def __contains__(self, key: Hashable) -> bool:
        return self.get(key) is not None

    def put(self, key: Hashable, value: object = True) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)

    def discard(self, key: Hashable) -> None:
        self.items.pop(key, None)


def _is_stale(push: PushEvent, newest_of_branch: object) -> bool:
    """Older than a push of its branch already handled (ties are not: pushed_at has whole seconds)."""
    return push.pushed_at is not None and isinstance(newest_of_branch, float) and push.pushed_at < newest_of_branch


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    """The body, or limit+1 bytes if it is longer (so the caller sees it is too large)."""
    chunks, size = [], 0
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    # Bytes, not str: compare_digest refuses non-ASCII str, and headers are attacker-controlled.
    return hmac.compare_digest(expected, header.removeprefix("sha256=").lower().encode("utf-8", "surrogateescape"))


def webhook_app(secret: bytes, on_push: Callable[[PushEvent], Awaitable[int]], max_body_bytes: int = MIB,
                dedupe_size: int = 10000, leading: Callable[[], bool] = lambda: True) -> web.Application:
    """`POST /webhooks/github`. on_push gets each new, verified branch or tag push and returns how
    many objects it matched; if it raises, the answer is 503 and the delivery may be retried.
    While `leading()` is false (a standby replica) every delivery is answered 503 untouched."""
    if not secret.strip():
        raise ValueError("a webhook secret is required: unsigned deliveries would let anyone trigger updates")
    seen = _Recent(dedupe_size)  # delivery ids and signed contents handled (or being handled)
    newest = _Recent(dedupe_size)  # (repository, ref) -> pushed_at of the newest push handled

    def answer(event: str, outcome: str, status: int, **body: object) -> web.Response:
        # Only known event names become labels: the header is chosen by the sender.
        metrics.WEBHOOK_DELIVERIES.labels(event if event in ("push", "ping") else "other", outcome).inc()
        return web.json_response(body, status=status)

    async def receive(request: web.Request) -> web.Response:
        event = request.headers.get("X-GitHub-Event", "")
        delivery = request.headers.get("X-GitHub-Delivery", "")
        if not leading():
            return answer(event, "standby", 503, error="this replica is a standby; the leader handles deliveries")
        if request.content_length is not None and request.content_length > max_body_bytes:
            return answer(event, "too_large", 413, error=f"body larger than {max_body_bytes} bytes")
        try:
            body = await _read_at_most(request, max_body_bytes)
        except web.RequestPayloadError:  # e.g. a body that does not decode as its Content-Encoding says
            return answer(event, "malformed", 400, error="could not read the body")
        if len(body) > max_body_bytes:
            return answer(event, "too_large", 413, error=f"body larger than {max_body_bytes} bytes")
        if not _signature_ok(secret, body, request.headers.get("X-Hub-Signature-256")):
            log.warning("GitHub webhook delivery %.64r refused: missing or wrong signature", delivery)
            return answer(event, "bad_signature", 401, error="missing or wrong X-Hub-Signature-256")
        if event == "ping":
            return answer(event, "ok", 200, pong=True)
        if event != "push":
            return answer(event, "ignored", 202, ignored=event or None)
        if not delivery:
            return answer(event, "malformed", 400, error="missing X-GitHub-Delivery")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # ValueError covers bad UTF-8; RecursionError absurd nesting
            return answer(event, "malformed", 400, error="body is not JSON (use content type application/json)")
        try:
            push = push_event(payload, delivery)
        except MalformedPush as error:
            return answer(event, "malformed", 400, error=str(error))
        if ("delivery", delivery) in seen:
            return answer(event, "duplicate", 200, duplicate=True)
        if push is None:
            seen.put(("delivery", delivery))
            return answer(event, "ignored", 200, matched=0, deleted=True)
        branch = (push.repo_keys, payload["ref"])
        # `before` too: a branch pushed back to a commit it had is a new push, not a replay.
        content = (*branch, str(payload.get("before")), push.commit)
        if content in seen:
            return answer(event, "duplicate", 200, duplicate=True)
        if _is_stale(push, newest.get(branch)):
            log.warning("GitHub push %.64r refused: older than the last push of %s handled", delivery,
                        payload["ref"])
            return answer(event, "stale", 200, stale=True)
        # Before awaiting on_push, so a concurrent replay is a duplicate too.
        seen.put(("delivery", delivery))
        seen.put(content)
        if push.pushed_at is not None:
            newest.put(branch, max(push.pushed_at, newest.get(branch) or 0.0))
        try:
            matched = await on_push(push)
        except Exception:
            seen.discard(("delivery", delivery))
            seen.discard(content)
            log.exception("GitHub push %s of %s could not be handled", delivery, sorted(push.repo_keys))
            return answer(event, "error", 503, error="push could not be handled; redeliver later")
        log.info("GitHub push %s: %s %s -> %s matched %d", delivery, sorted(push.repo_keys),
                 push.branch or "(tag)", push.commit[:12], matched)
        return answer(event, "ok", 200, matched=matched)

    application = web.Application()
    application.router.add_post(PATH, receive)
    return application
