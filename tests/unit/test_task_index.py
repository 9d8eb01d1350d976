"""The index of waiting and running tasks that dispatch and poll rounds read."""

from __future__ import annotations

from remote_agents.controller.tasks.index import TaskIndex

POOL = ("ns", "pool", "workers")
AGENT = ("ns", "agent", "solo")


def task(name: str, created: str, phase: str | None = None, reason: str | None = None) -> dict:
    status = {"phase": phase} if phase else {}
    if reason:
        status["conditions"] = [{"type": "Ready", "status": "False", "reason": reason}]
    return {"metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": created}, "status": status}


def test_waiting_tasks_queue_by_target_first_come_first_then_by_name():
    index = TaskIndex()
    for name, created, target in [("c", "2026-01-01T00:00:02Z", POOL), ("b", "2026-01-01T00:00:01Z", POOL),
                                  ("a", "2026-01-01T00:00:02Z", POOL), ("z", "2026-01-01T00:00:00Z", AGENT)]:
        index.update(f"uid-{name}", target, task(name, created, phase="Pending" if name == "a" else None))
    assert index.targets() == [AGENT, POOL]  # the oldest head first
    assert list(index.waiting(POOL)) == ["uid-b", "uid-a", "uid-c"] and list(index.waiting(AGENT)) == ["uid-z"]
    assert index.running == set()


def test_a_claimed_task_leaves_its_queue_and_runs_then_ends():
    index = TaskIndex()
    index.update("uid-a", POOL, task("a", "t1"))
    index.update("uid-b", POOL, task("b", "t2"))
    index.update("uid-a", POOL, task("a", "t1", phase="Running"))
    assert list(index.waiting(POOL)) == ["uid-b"] and index.running == {"uid-a"}
    index.update("uid-a", POOL, task("a", "t1", phase="Succeeded"))
    index.update("uid-b", POOL, None)  # deleted while it waited
    assert index.targets() == [] and list(index.waiting(POOL)) == [] and index.running == set()


def test_a_start_that_failed_puts_the_task_back_in_its_place():
    index = TaskIndex()
    index.update("uid-a", POOL, task("a", "t1", phase="Running"))
    index.update("uid-b", POOL, task("b", "t2"))
    index.update("uid-a", POOL, task("a", "t1", phase="Pending", reason="StartFailed"))
    assert list(index.waiting(POOL)) == ["uid-a", "uid-b"]


def test_tasks_that_show_a_reason_are_found_without_reading_the_queue():
    index = TaskIndex()
    index.update("uid-a", POOL, task("a", "t1", reason="AgentNotReady"))
    index.update("uid-b", POOL, task("b", "t2"))
    assert index.explained(POOL) == ["uid-a"] and index.explained(AGENT) == []
    index.update("uid-a", POOL, task("a", "t1", phase="Running", reason="Running"))  # no longer waits
    assert index.explained(POOL) == []


def test_queue_size_counts_waiting_tasks_and_names_the_oldest():
    index = TaskIndex()
    assert index.queue_size() == (0, None)
    index.update("uid-b", POOL, task("b", "2026-01-01T00:00:05Z"))
    index.update("uid-z", AGENT, task("z", "2026-01-01T00:00:01Z"))
    index.update("uid-r", AGENT, task("r", "2026-01-01T00:00:00Z", phase="Running"))
    assert index.queue_size() == (2, "2026-01-01T00:00:01Z")
    index.update("uid-z", AGENT, task("z", "2026-01-01T00:00:01Z", phase="Running"))
    assert index.queue_size() == (1, "2026-01-01T00:00:05Z")
