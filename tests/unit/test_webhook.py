"""The GitHub webhook receiver over real HTTP (aiohttp's test server), and normalise_repo."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import string

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remote_agents import cli
from remote_agents.controller import metrics
from remote_agents.controller.sources.repos import normalise_repo
from remote_agents.controller.sources.webhook import PATH, PushEvent, webhook_app

SECRET = b"It's a Secret to Everybody"
COMMIT = "f" * 40
LIMIT = 4096


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def push_payload(ref: str = "refs/heads/main", after: str = COMMIT, **extra) -> dict:
    return {"ref": ref, "before": "0" * 40, "after": after, "deleted": False, **extra, "repository": {
        "full_name": "Octo/Agent", "html_url": "https://github.com/Octo/Agent",
        "clone_url": "https://github.com/Octo/Agent.git", "ssh_url": "git@github.com:Octo/Agent.git",
        "git_url": "git://github.com/Octo/Agent.git", **extra.pop("repository", {})}}


def deliveries(event: str, outcome: str) -> float:
    return metrics.registry.get_sample_value("remote_agents_webhook_deliveries_total",
                                             {"event": event, "outcome": outcome}) or 0.0


class Recorder:
    """on_push that records events; raises the queued errors first."""

    def __init__(self, matched: int = 2):
        self.events: list[PushEvent] = []
        self.errors: list[Exception] = []
        self.matched = matched

    async def __call__(self, event: PushEvent) -> int:
        if self.errors:
            raise self.errors.pop(0)
        self.events.append(event)
        return self.matched


@pytest.fixture
def on_push() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(on_push):
    application = webhook_app(SECRET, on_push, max_body_bytes=LIMIT, dedupe_size=50)
    async with TestClient(TestServer(application)) as test_client:
        yield test_client


async def post(client, body: bytes | dict, event: str = "push", delivery: str | None = "d-1",
               signature: str | None = "auto", **headers):
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {"X-GitHub-Event": event, "Content-Type": "application/json", **headers}
    if delivery is not None:
        sent["X-GitHub-Delivery"] = delivery
    if signature is not None:
        sent["X-Hub-Signature-256"] = sign(raw) if signature == "auto" else signature
    return await client.post(PATH, data=raw, headers=sent)


async def test_push_calls_on_push_with_the_event(client, on_push):
    before = deliveries("push", "ok")
    response = await post(client, push_payload())
    assert (response.status, await response.json()) == (200, {"matched": 2})
    assert on_push.events == [PushEvent(frozenset({"github.com/octo/agent"}), "main", COMMIT, "d-1")]
    assert deliveries("push", "ok") == before + 1


async def test_push_from_a_local_git_daemon_keeps_host_and_port(client, on_push):
    payload = {"ref": "refs/heads/dev", "after": COMMIT, "repository": {
        "full_name": "local/agent", "clone_url": "git://127.0.0.1:9418/agent.git"}}
    assert (await post(client, payload)).status == 200
    assert on_push.events[0].repo_keys == {"127.0.0.1:9418/agent", "github.com/local/agent"}
    assert on_push.events[0].branch == "dev"


async def test_full_name_of_a_github_enterprise_repo_is_not_taken_for_github(client, on_push):
    payload = push_payload(repository={"html_url": "https://ghe.example.com/Octo/Agent", "clone_url": None,
                                       "ssh_url": None, "git_url": None})
    assert (await post(client, payload)).status == 200
    assert on_push.events[0].repo_keys == {"ghe.example.com/octo/agent"}


async def test_tag_push_has_no_branch(client, on_push):
    assert (await post(client, push_payload(ref="refs/tags/v1.0"))).status == 200
    assert on_push.events[0].branch is None


@pytest.mark.parametrize("change", [{"deleted": True, "after": "0" * 40}, {"after": "0" * 40}])
async def test_deleted_branch_does_nothing(client, on_push, change):
    response = await post(client, {**push_payload(), **change})
    assert response.status == 200 and (await response.json())["matched"] == 0
    assert on_push.events == []


async def test_replayed_delivery_is_answered_without_calling_on_push_again(client, on_push):
    before = deliveries("push", "duplicate")
    assert (await post(client, push_payload(), delivery="same")).status == 200
    response = await post(client, push_payload(), delivery="same")
    assert (response.status, await response.json()) == (200, {"duplicate": True})
    assert len(on_push.events) == 1
    assert deliveries("push", "duplicate") == before + 1


async def test_dedupe_memory_is_bounded_and_least_recently_seen_is_forgotten(client, on_push):
    # Distinct pushes: each is remembered by delivery id and by content (two of the 50 places).
    for number in range(51):
        await post(client, push_payload(after=f"{number + 1:040x}"), delivery=f"d-{number}")
    await post(client, push_payload(after=f"{1:040x}"), delivery="d-0")
    assert len(on_push.events) == 52


async def test_the_same_signed_push_under_a_new_delivery_id_is_a_duplicate(client, on_push):
    before = deliveries("push", "duplicate")
    body = json.dumps(push_payload(before="a" * 40)).encode()
    assert (await post(client, body, delivery="original")).status == 200
    response = await post(client, body, delivery="replayed-under-a-new-id")
    assert (response.status, await response.json()) == (200, {"duplicate": True})
    assert [event.delivery for event in on_push.events] == ["original"]
    assert deliveries("push", "duplicate") == before + 1


async def test_a_branch_pushed_back_to_a_commit_it_had_is_a_new_push(client, on_push):
    old, new = "a" * 40, "b" * 40
    await post(client, push_payload(before=old, after=new, repository={"pushed_at": 1000}), delivery="forward")
    await post(client, push_payload(before=new, after=old, repository={"pushed_at": 1060}), delivery="reset")
    assert [(event.delivery, event.commit) for event in on_push.events] == [("forward", new), ("reset", old)]


async def test_a_push_older_than_the_newest_of_its_branch_is_stale(client, on_push):
    before = deliveries("push", "stale")
    newer = push_payload(before="1" * 40, after="2" * 40, repository={"pushed_at": 2000})
    older = push_payload(before="0" * 40, after="1" * 40, repository={"pushed_at": 1000})
    other_branch = push_payload(ref="refs/heads/dev", after="3" * 40, repository={"pushed_at": 500})
    same_second = push_payload(before="2" * 40, after="4" * 40, repository={"pushed_at": 2000})
    assert (await post(client, newer, delivery="newer")).status == 200
    response = await post(client, older, delivery="older-arrives-late")
    assert (response.status, await response.json()) == (200, {"stale": True})
    assert deliveries("push", "stale") == before + 1
    assert (await post(client, other_branch, delivery="dev")).status == 200
    assert (await post(client, same_second, delivery="same-second")).status == 200
    assert [event.delivery for event in on_push.events] == ["newer", "dev", "same-second"]


@pytest.mark.parametrize("pushed_at, epoch", [(1767225600, 1767225600.0), ("2026-01-01T00:00:00Z", 1767225600.0),
                                              ("2026-01-01T01:00:00+01:00", 1767225600.0), ("yesterday", None),
                                              (True, None), (None, None)])
async def test_pushed_at_is_read_as_epoch_seconds(client, on_push, pushed_at, epoch):
    assert (await post(client, push_payload(repository={"pushed_at": pushed_at}))).status == 200
    assert on_push.events[0].pushed_at == epoch


async def test_concurrent_replays_call_on_push_once(on_push):
    gate = asyncio.Event()

    async def slow(event: PushEvent) -> int:
        await gate.wait()
        return await on_push(event)

    async with TestClient(TestServer(webhook_app(SECRET, slow))) as test_client:
        first = asyncio.create_task(post(test_client, push_payload(), delivery="race"))
        await asyncio.sleep(0.05)
        second = await post(test_client, push_payload(), delivery="race")
        gate.set()
        assert (await first).status == 200 and (await second.json()) == {"duplicate": True}
    assert len(on_push.events) == 1


async def test_failing_on_push_answers_503_and_a_redelivery_is_handled(client, on_push):
    on_push.errors.append(RuntimeError("kube API down"))
    before = deliveries("push", "error")
    assert (await post(client, push_payload(), delivery="retry-me")).status == 503
    assert deliveries("push", "error") == before + 1
    response = await post(client, push_payload(), delivery="retry-me")
    assert (response.status, await response.json()) == (200, {"matched": 2})
    assert len(on_push.events) == 1


@pytest.mark.parametrize("signature", [None, "", "sha256=", "sha1=abc", sign(b"other body"),
                                       sign(json.dumps(push_payload()).encode(), b"wrong secret"),
                                       "sha256=" + "é" * 64])
async def test_missing_or_wrong_signature_is_401(client, on_push, signature):
    before = deliveries("push", "bad_signature")
    response = await post(client, push_payload(), signature=signature)
    assert response.status == 401
    assert on_push.events == []
    assert deliveries("push", "bad_signature") == before + 1


async def test_signature_is_checked_case_insensitively_in_hex(client, on_push):
    body = json.dumps(push_payload()).encode()
    assert (await post(client, body, signature=sign(body).upper().replace("SHA256=", "sha256="))).status == 200


async def test_truncated_body_fails_the_signature_or_the_json(client, on_push):
    body = json.dumps(push_payload()).encode()
    assert (await post(client, body[:-10], signature=sign(body))).status == 401
    response = await post(client, body[:-10])  # signed as sent, so it reaches the parser
    assert response.status == 400 and "JSON" in (await response.json())["error"]
    assert on_push.events == []


async def test_body_cut_short_by_the_connection_calls_nothing(client, on_push):
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nContent-Length: 500\r\n\r\n"
                 .encode() + b'{"ref": ')
    await writer.drain()
    writer.write_eof()
    assert not (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 5")
    writer.close()
    assert on_push.events == []


async def test_oversized_body_is_413_by_content_length_and_by_bytes_read(client, on_push):
    big = b" " * (LIMIT + 1)
    assert (await post(client, big)).status == 413  # Content-Length says so

    async def chunks():  # no Content-Length: only the bytes read tell
        for _ in range(10):
            yield b" " * 1024

    response = await client.post(PATH, data=chunks(), headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": "x"})
    assert response.status == 413
    exact = json.dumps(push_payload()).encode().ljust(LIMIT)
    assert (await post(client, exact)).status == 200  # exactly the limit is fine
    assert len(on_push.events) == 1


async def test_undecodable_content_encoding_is_400(client, on_push):
    assert (await post(client, b"not deflate", **{"Content-Encoding": "deflate"})).status == 400


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[" * (LIMIT - 1), b"[]", b"null",
                                  json.dumps({"ref": "refs/heads/main"}).encode(),
                                  json.dumps(push_payload(after="nope")).encode(),
                                  json.dumps(push_payload(ref=7)).encode(),
                                  json.dumps({**push_payload(), "repository": "octo/agent"}).encode(),
                                  json.dumps({**push_payload(), "repository": {"clone_url": ""}}).encode()])
async def test_malformed_push_is_400(client, on_push, body):
    before = deliveries("push", "malformed")
    response = await post(client, body)
    assert response.status == 400 and "error" in await response.json()
    assert on_push.events == []
    assert deliveries("push", "malformed") == before + 1


async def test_push_without_delivery_id_is_400(client, on_push):
    assert (await post(client, push_payload(), delivery=None)).status == 400
    assert on_push.events == []


async def test_ping_is_200(client, on_push):
    response = await post(client, {"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    assert response.status == 200
    assert on_push.events == []


@pytest.mark.parametrize("event", ["issues", "pull_request", ""])
async def test_events_not_handled_are_202_and_do_nothing(client, on_push, event):
    before = deliveries("other", "ignored")
    response = await post(client, push_payload(), event=event)
    assert response.status == 202
    assert on_push.events == []
    assert deliveries("other", "ignored") == before + 1


async def test_only_post_is_served(client):
    assert (await client.get(PATH)).status == 405


@pytest.mark.parametrize("secret", [b"", b" ", b"\n", b" \t\r\n "])
def test_empty_or_whitespace_secret_is_refused(secret):
    with pytest.raises(ValueError):
        webhook_app(secret, Recorder())


@pytest.mark.parametrize("secret", ["", "   ", "\n"])
def test_the_operator_will_not_serve_webhooks_with_an_empty_or_whitespace_secret(monkeypatch, capsys, secret):
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", secret)
    assert cli.main(["operator", "--webhook-port", "0"]) == 2  # refused before any cluster is reached
    assert "refusing to serve webhooks without a secret" in capsys.readouterr().err


def test_the_secret_and_signature_never_reach_the_logs(caplog):
    async def scenario():
        async with TestClient(TestServer(webhook_app(SECRET, Recorder()))) as test_client:
            body = json.dumps(push_payload()).encode()
            await post(test_client, body)
            await post(test_client, body, signature=sign(body, b"wrong"), delivery="d-2")

    with caplog.at_level("DEBUG"):
        asyncio.run(scenario())
    body = json.dumps(push_payload()).encode()
    for leaked in (SECRET.decode(), sign(body)[7:], sign(body, b"wrong")[7:]):
        assert leaked not in caplog.text


def random_json(rng: random.Random, depth: int = 0):
    makers = [lambda: None, lambda: rng.random() < 0.5, lambda: rng.randint(-10**6, 10**6), lambda: rng.random() * 1e6,
              lambda: "".join(rng.choices(string.printable + "é☃\x00", k=rng.randrange(30))),
              lambda: rng.choice(["refs/heads/main", "refs/tags/v1", COMMIT, "0" * 40, "git@github.com:o/n.git",
                                  "http://[::1", "://", "/", "owner/name", "file:///srv/x.git"]),
              lambda: [random_json(rng, depth + 1) for _ in range(rng.randrange(4))],
              lambda: {rng.choice(["ref", "after", "repository", "deleted", "x"]): random_json(rng, depth + 1)
                       for _ in range(rng.randrange(4))}]
    return rng.choice(makers if depth < 3 else makers[:6])()


def mutated_push(rng: random.Random) -> dict:
    payload = push_payload()
    target = payload if rng.random() < 0.5 else payload["repository"]
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice(list(target))
        if rng.random() < 0.3:
            del target[key]
        else:
            target[key] = random_json(rng)
        if not target:
            break
    return payload


async def test_fuzz_never_answers_5xx(on_push):
    rng = random.Random(20260101)
    header_chars = string.ascii_letters + string.digits + string.punctuation + " é"
    application = webhook_app(SECRET, on_push, max_body_bytes=LIMIT, dedupe_size=20)
    async with TestClient(TestServer(application)) as test_client:
        statuses = set()
        for number in range(400):
            shape = rng.randrange(4)
            if shape == 0:
                body = rng.randbytes(rng.choice([0, 1, 10, 500, LIMIT, LIMIT + 1, 3 * LIMIT]))
            elif shape == 1:
                body = json.dumps(random_json(rng)).encode()
            else:
                body = json.dumps(mutated_push(rng) if shape == 2 else push_payload()).encode()
            headers = {"X-GitHub-Event": rng.choice(["push", "push", "push", "ping", "issues", "",
                                                     "".join(rng.choices(header_chars, k=12))])}
            if rng.random() < 0.9:
                headers["X-GitHub-Delivery"] = rng.choice([f"d-{number}", "replayed",
                                                           "".join(rng.choices(header_chars, k=40))])
            roll = rng.random()
            if roll < 0.7:
                headers["X-Hub-Signature-256"] = sign(body)
            elif roll < 0.9:
                headers["X-Hub-Signature-256"] = "sha256=" + "".join(rng.choices(header_chars, k=rng.randrange(80)))
            if rng.random() < 0.1:
                headers["Content-Type"] = rng.choice(["text/plain", "application/x-www-form-urlencoded", "☃"])
            response = await test_client.post(PATH, data=body, headers=headers)
            assert response.status < 500, (number, response.status, await response.text())
            statuses.add(response.status)
    assert {200, 202, 400, 401, 413} <= statuses  # the fuzz reached every kind of answer
    assert on_push.events  # and valid pushes among the mutations got through
    for event in on_push.events:
        assert event.repo_keys and all(isinstance(key, str) for key in event.repo_keys)
        assert len(event.commit) == 40 and event.delivery


@pytest.mark.parametrize("spelling", [
    "git@github.com:Octo/Agent.git", "https://github.com/octo/agent", "https://github.com/Octo/Agent.git/",
    "git://github.com/octo/agent.git", "ssh://git@github.com/octo/agent", "Octo/Agent", "octo/agent.git",
    "https://x-access-token:ghp_secret@github.com/octo/agent.git", "HTTPS://GitHub.com/Octo/Agent",
    "http://github.com//octo/agent", "  github.com/octo/agent  ", "https://github.com/octo/agent?tab=readme#top",
])
def test_github_spellings_normalise_to_one_key(spelling):
    assert normalise_repo(spelling) == "github.com/octo/agent"


@pytest.mark.parametrize("spelling, key", [
    ("git://127.0.0.1:9418/agent.git", "127.0.0.1:9418/agent"),
    ("git://127.0.0.1:9418/Agent.git/", "127.0.0.1:9418/agent"),
    ("http://git.example.com:8080/team/repo.git", "git.example.com:8080/team/repo"),
    ("https://gitlab.com/group/sub/repo.git", "gitlab.com/group/sub/repo"),
    ("user@host.example:path/to/repo.git", "host.example/path/to/repo"),
    ("file:///srv/x.git", "/srv/x"),
    ("/srv/x.git", "/srv/x"),
    ("/srv/x/.git", "/srv/x"),
])
def test_other_urls_normalise_consistently(spelling, key):
    assert normalise_repo(spelling) == key


def test_different_repositories_stay_different():
    urls = ["octo/agent", "octo/agent2", "other/agent", "git://127.0.0.1:9418/agent.git",
            "git://127.0.0.1:9419/agent.git", "https://ghe.example.com/octo/agent"]
    keys = {normalise_repo(url) for url in urls}
    assert len(keys) == 6


@pytest.mark.parametrize("value", ["", "   ", "https://github.com/", "https://github.com/.git", "http://[::1/x"])
def test_no_repository_is_a_value_error(value):
    with pytest.raises(ValueError):
        normalise_repo(value)


@pytest.mark.parametrize("repo, ref, expected", [
    ("octo/agent", "main", True), ("git@github.com:Octo/Agent.git", "refs/heads/main", True),
    ("octo/agent", "dev", False), ("octo/other", "main", False), ("octo/agent", COMMIT, False), ("", "main", False),
])
def test_push_event_concerns_objects_tracking_the_branch(repo, ref, expected):
    event = PushEvent(frozenset({"github.com/octo/agent"}), "main", COMMIT, "d")
    assert event.concerns(repo, ref) is expected


def test_tag_push_concerns_no_branch_tracker():
    assert not PushEvent(frozenset({"github.com/octo/agent"}), None, COMMIT, "d").concerns("octo/agent", "main")


async def test_a_standby_answers_503_and_forwards_nothing_until_it_leads(on_push):
    leading = False
    application = webhook_app(SECRET, on_push, max_body_bytes=LIMIT, leading=lambda: leading)
    async with TestClient(TestServer(application)) as standby:
        response = await post(standby, push_payload())
        assert response.status == 503 and "standby" in (await response.json())["error"]
        assert on_push.events == []
        leading = True
        assert (await post(standby, push_payload())).status == 200  # the same delivery, not taken for a duplicate
        assert len(on_push.events) == 1
