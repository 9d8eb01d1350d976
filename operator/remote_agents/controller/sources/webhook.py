"""GitHub webhook receiver: `POST /webhooks/github` verifies a delivery's HMAC signature and turns
a `push` into a PushEvent for the caller, who re-resolves the objects that track that branch.

Answers are chosen so GitHub's view is right: 4xx for anything the sender got wrong (never 5xx
for client input), 503 only when our own callback failed and a redelivery should be tried."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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
    return PushEvent(frozenset(keys), branch or None, commit, delivery)


def _key(value: object, host_only: bool = False) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        key = normalise_repo(value)
    except ValueError:
        return None
    return key.partition("/")[0] if host_only else key


class _SeenDeliveries:
    """Bounded LRU of delivery ids handled (or being handled) successfully."""

    def __init__(self, size: int):
        self.size, self.ids = size, OrderedDict[str, None]()

    def __contains__(self, delivery: str) -> bool:
        if delivery in self.ids:
            self.ids.move_to_end(delivery)
            return True
        return False

    def add(self, delivery: str) -> None:
        self.ids[delivery] = None
        self.ids.move_to_end(delivery)
        while len(self.ids) > self.size:
            self.ids.popitem(last=False)

    def discard(self, delivery: str) -> None:
        self.ids.pop(delivery, None)


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
    if not secret:
        raise ValueError("a webhook secret is required: unsigned deliveries would let anyone trigger updates")
    seen = _SeenDeliveries(dedupe_size)

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
        if delivery in seen:
            return answer(event, "duplicate", 200, duplicate=True)
        seen.add(delivery)  # before awaiting on_push, so a concurrent replay is a duplicate too
        if push is None:
            return answer(event, "ignored", 200, matched=0, deleted=True)
        try:
            matched = await on_push(push)
        except Exception:
            seen.discard(delivery)
            log.exception("GitHub push %s of %s could not be handled", delivery, sorted(push.repo_keys))
            return answer(event, "error", 503, error="push could not be handled; redeliver later")
        log.info("GitHub push %s: %s %s -> %s matched %d", delivery, sorted(push.repo_keys),
                 push.branch or "(tag)", push.commit[:12], matched)
        return answer(event, "ok", 200, matched=matched)

    application = web.Application()
    application.router.add_post(PATH, receive)
    return application
