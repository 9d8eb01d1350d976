"""status.progress: when a run's stderr is read (pure), what is shown, and that a running task's
progress advances with far fewer status writes than lines, redacted, and none while it stands still."""

from __future__ import annotations

import pytest

from remote_agents.api.names import TASKS
from remote_agents.controller.redaction import MARKER, Redactor
from remote_agents.controller.tasks import progress
from tests.support.fake_e2b import Program
from tests.support.world import NAMESPACE

INTERVAL = 5.0
SECRET = "s3cr3t-token-9f2a"


@pytest.mark.parametrize("now, last_read, is_due", [
    (104.9, None, False),  # a run younger than the interval is not looked at: short runs cost nothing
    (105.0, None, True),
    (108.0, 104.0, False),  # read 4 s ago
    (109.0, 104.0, True),
])
def test_a_run_is_read_an_interval_after_its_start_then_an_interval_after_each_read(now, last_read, is_due):
    assert progress.due(now, started=100.0, last_read=last_read, interval=INTERVAL) is is_due


def keep(text: str) -> str:
    return text


@pytest.mark.parametrize("stderr, shown", [
    ("", None),
    ("half a line", None),  # not complete yet
    ("one\n", {"line": "one", "count": 1}),
    ("one\ntwo\nthree being writ", {"line": "two", "count": 2}),
    ("fetching 10%\rfetching 60%\r\n", {"line": "fetching 60%", "count": 1}),  # a redrawn line: its last drawing
    ("x" * 1000 + "\n", {"line": "x" * progress.LINE_LIMIT, "count": 1}),
])
def test_the_last_complete_line_and_the_count_of_lines(stderr, shown):
    assert progress.of(stderr, keep) == shown


def test_secrets_are_redacted_before_the_line_is_cut():
    redact = Redactor()
    redact.add(SECRET)
    long_line = "y" * (progress.LINE_LIMIT - 3) + SECRET  # the cut would leave the value's first bytes
    assert progress.of(f"key {SECRET}\n", redact)["line"] == f"key {MARKER}"
    assert SECRET[:3] not in progress.of(long_line + "\n", redact)["line"].replace("y", "")


def test_no_update_when_line_and_count_are_what_status_says():
    shown = {"line": "two", "count": 2, "updateTime": "2026-12-02T05:00:00Z"}
    assert progress.update(shown, "one\ntwo\n", keep, "later") is None
    assert progress.update(shown, "one\ntwo\nthree\n", keep, "later") == {"line": "three", "count": 3,
                                                                        "updateTime": "later"}
    assert progress.update(None, "no newline yet", keep, "later") is None


async def test_a_running_task_shows_progress_with_a_write_per_interval_not_per_line(world, clock):
    world.kube.add_secret(NAMESPACE, "creds", {"token": SECRET})
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a", env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}])
    progress_writes = []
    patch_status = world.kube.patch_status

    async def counted(plural, namespace, name, status):
        if plural == TASKS and "progress" in status:
            progress_writes.append(status["progress"])
        return await patch_status(plural, namespace, name, status)
    world.kube.patch_status = counted
    await world.create_task("t", agent="a")
    world.start_task_loop()
    [process] = await world.eventually(lambda: world.e2b.processes, "the run")
    stderr = f"{process.run_files}.stderr"

    lines = []
    for second in range(30):  # a line a second, with the token in some of them
        lines.append(f"step {second} with {SECRET}" if second % 7 == 0 else f"step {second}")
        process.sandbox.files[stderr] = "\n".join(lines) + "\n"
        clock.advance(1)
        await world.eventually(lambda: True, "a round")
        if second % 5 == 4:  # each interval, the progress of that moment shows
            await world.eventually(lambda: (world.status("t", TASKS).get("progress") or {}).get("count") == len(lines),
                                   f"progress at line {len(lines)}", creep=0.05)
    assert len(progress_writes) <= len(lines) / INTERVAL + 1
    assert all(SECRET not in write["line"] for write in progress_writes)

    before = len(progress_writes)
    for _ in range(20):  # ten seconds more without a new line: no write
        await world.eventually(lambda: True, "a round", creep=0.5)
    assert len(progress_writes) == before

    process.end(stderr="\n".join(lines) + f"\nthe end {SECRET}\n")
    await world.eventually(lambda: world.status("t", TASKS).get("phase") == "Succeeded", "the end")
    assert world.status("t", TASKS)["progress"] | {"updateTime": None} == \
        {"line": f"the end {MARKER}", "count": 31, "updateTime": None}
    assert len(progress_writes) == before + 1  # the last one rides on the final status write


def test_followed_chunks_become_redacted_complete_lines():
    from remote_agents.live_output import Lines

    redact = Redactor()
    redact.add(SECRET)
    lines = Lines(redact)
    half = len(SECRET) // 2
    assert lines.feed("first\nsecond with " + SECRET[:half]) == ["first\n"]  # a value split between chunks
    assert lines.feed(SECRET[half:] + "\nthird") == [f"second with {MARKER}\n"]
    assert lines.rest() == ["third"] and lines.rest() == []


def test_a_secret_of_several_lines_never_shows_a_line_of_it_in_the_followed_stream():
    from remote_agents.live_output import Lines

    key = "-----BEGIN TEST KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\nAASCBKcwggSjAgEAAoIBAQC7\n-----END TEST KEY-----"
    redact = Redactor()
    redact.add(key)
    lines = Lines(redact)
    printed = lines.feed(f"using {key[:30]}") + lines.feed(f"{key[30:]}\ndone\n")  # cut mid-line, as chunks come
    assert printed == [f"using {MARKER}\n", f"{MARKER}\n", f"{MARKER}\n", f"{MARKER}\n", "done\n"]
    assert not any(piece in "".join(printed) for piece in key.splitlines())


async def test_progress_of_a_run_found_again_after_an_operator_restart(world, clock):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a")
    await world.create_task("t", agent="a")
    world.start_task_loop()
    [process] = await world.eventually(lambda: world.e2b.processes, "the run")
    await world.restart()  # no stream held any more: the run is polled, and its progress read with a poll
    world.start_task_loop()
    process.sandbox.files[f"{process.run_files}.stderr"] = "fetched 3 of 9\n" * 3
    progress_now = await world.eventually(lambda: world.status("t", TASKS).get("progress"), "progress",
                                          creep=0.25)
    assert (progress_now["line"], progress_now["count"]) == ("fetched 3 of 9", 3)
