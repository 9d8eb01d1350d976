"""Sandbox lifecycle through the sync SDK: create, info, list, pause/resume, kill, timeouts."""

from __future__ import annotations

import uuid

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import (
    AuthenticationException,
    RateLimitException,
    SandboxException,
    SandboxNotFoundException,
    SandboxNotRunningException,
)

from tests.e2b_local.helpers import MAX_RUNNING, MAX_TIMEOUT, wait_for


def _all(query: SandboxQuery | None = None, limit: int | None = None) -> list:
    paginator = Sandbox.list(query=query, limit=limit)
    items = []
    while paginator.has_next:
        items.extend(paginator.next_items())
    return items


def test_create_info_kill_twice():
    box = Sandbox.create(template="base", timeout=60, metadata={"k": "v"}, envs={"GREETING": "hello"})
    info = box.get_info()
    assert info.sandbox_id == box.sandbox_id
    assert info.state == SandboxState.RUNNING
    assert info.metadata == {"k": "v"}
    assert info.envd_version >= "0.6.8"
    assert 55 <= (info.end_at - info.started_at).total_seconds() <= 61
    assert box.commands.run("echo $GREETING").stdout == "hello\n"
    assert box.kill() is True
    assert Sandbox.kill(box.sandbox_id) is False
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(box.sandbox_id)


def test_wrong_api_key_is_rejected():
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="e2b_wrong")
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key="e2b_wrong").next_items()


def test_idempotent_create_returns_the_same_sandbox():
    key = f"op-{uuid.uuid4().hex}"
    first = Sandbox.create(idempotency_key=key, timeout=60)
    try:
        second = Sandbox.create(idempotency_key=key, timeout=60)
        assert second.sandbox_id == first.sandbox_id
        other = Sandbox.create(idempotency_key=key + "-other", timeout=60)
        assert other.sandbox_id != first.sandbox_id
        other.kill()
    finally:
        first.kill()


def test_list_filters_by_metadata_with_spaces_and_slashes_and_pages():
    run = uuid.uuid4().hex
    tricky = {"run": run, "repo": "org/repo name", "path": "a b/c&d=e%f"}
    boxes = [Sandbox.create(metadata=tricky, timeout=60) for _ in range(3)]
    decoy = Sandbox.create(metadata={"run": run, "repo": "org/other"}, timeout=60)
    try:
        found = _all(SandboxQuery(metadata=tricky))
        assert sorted(s.sandbox_id for s in found) == sorted(b.sandbox_id for b in boxes)
        assert all(s.metadata == tricky for s in found)

        paginator = Sandbox.list(query=SandboxQuery(metadata={"run": run}), limit=2)
        first_page = paginator.next_items()
        assert len(first_page) == 2 and paginator.has_next
        second_page = paginator.next_items()
        assert len(second_page) == 2 and not paginator.has_next
        # Newest first, as E2B lists.
        assert [s.sandbox_id for s in first_page + second_page] == [b.sandbox_id for b in [*boxes, decoy][::-1]]

        boxes[0].pause()
        paused = _all(SandboxQuery(metadata={"run": run}, state=[SandboxState.PAUSED]))
        assert [s.sandbox_id for s in paused] == [boxes[0].sandbox_id]
        running = _all(SandboxQuery(metadata={"run": run}, state=[SandboxState.RUNNING]))
        assert len(running) == 3
    finally:
        for box in [*boxes, decoy]:
            box.kill()


def test_pause_resume_states_and_envd_while_paused():
    box = Sandbox.create(timeout=60)
    try:
        box.files.write("/home/user/keep.txt", "kept")
        assert box.pause() is True
        assert Sandbox.pause(box.sandbox_id) is False  # 409: already paused
        assert box.get_info().state == SandboxState.PAUSED
        assert box.is_running() is False
        with pytest.raises(SandboxNotRunningException):
            box.commands.run("true")
        with pytest.raises(SandboxNotRunningException):
            box.files.read("/home/user/keep.txt")
        resumed = Sandbox.connect(box.sandbox_id, timeout=30)
        assert resumed.get_info().state == SandboxState.RUNNING
        assert resumed.files.read("/home/user/keep.txt") == "kept"
        again = Sandbox.connect(box.sandbox_id)  # already running: 200, same sandbox
        assert again.sandbox_id == box.sandbox_id
    finally:
        box.kill()
    with pytest.raises(SandboxNotFoundException):
        Sandbox.pause(box.sandbox_id)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(box.sandbox_id)


def test_set_timeout_and_max_timeout():
    box = Sandbox.create(timeout=30)
    try:
        box.set_timeout(200)
        info = box.get_info()
        assert 195 <= (info.end_at - info.started_at).total_seconds() <= 205
        with pytest.raises(SandboxException) as caught:
            box.set_timeout(MAX_TIMEOUT + 1)
        assert caught.value.status_code == 400
    finally:
        box.kill()
    with pytest.raises(SandboxException) as caught:
        Sandbox.create(timeout=MAX_TIMEOUT + 1)
    assert caught.value.status_code == 400


def test_timeout_kills_by_default():
    box = Sandbox.create(timeout=1)
    wait_for(lambda: box.sandbox_id not in [s.sandbox_id for s in _all()], timeout=10)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(box.sandbox_id)


def test_auto_pause_on_timeout_then_resume():
    box = Sandbox.create(timeout=1, lifecycle={"on_timeout": "pause"})
    try:
        box.files.write("/home/user/state", "before")
        assert box.get_info().lifecycle["on_timeout"] == "pause"
        wait_for(lambda: Sandbox.get_info(box.sandbox_id).state == SandboxState.PAUSED, timeout=10)
        with pytest.raises(SandboxNotRunningException):
            box.commands.run("true")
        resumed = Sandbox.connect(box.sandbox_id, timeout=60)
        assert resumed.files.read("/home/user/state") == "before"
    finally:
        box.kill()


def test_max_running_limit_answers_429():
    running = _all(SandboxQuery(state=[SandboxState.RUNNING]))
    boxes = [Sandbox.create(timeout=60) for _ in range(MAX_RUNNING - len(running))]
    try:
        with pytest.raises(RateLimitException):
            Sandbox.create(timeout=60)
        boxes[0].pause()  # paused sandboxes do not count
        extra = Sandbox.create(timeout=60)
        boxes.append(extra)
        with pytest.raises(RateLimitException):
            Sandbox.connect(boxes[0].sandbox_id)  # resuming would exceed the limit
    finally:
        for box in boxes:
            box.kill()


def test_list_started_after():
    from datetime import timedelta

    run = uuid.uuid4().hex
    box = Sandbox.create(metadata={"run": run}, timeout=60)
    try:
        started = box.get_info().started_at
        assert [s.sandbox_id for s in _all(SandboxQuery(metadata={"run": run}, started_after=started))] == \
            [box.sandbox_id]
        assert _all(SandboxQuery(metadata={"run": run}, started_after=started + timedelta(seconds=1))) == []
    finally:
        box.kill()
