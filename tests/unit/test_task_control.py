"""Priorities, fair share between namespaces, retries with backoff, cancellation and the cost
ledger: the pure rules table-driven, then the task loop on the fakes."""

from __future__ import annotations

import pytest

from remote_agents.api.names import AGENTS, LEGACY_RUN_FINALIZER, TASKS
from remote_agents.api.timestamps import epoch, rfc3339
from remote_agents.controller import metrics
from remote_agents.controller.agents import ledger
from remote_agents.controller.tasks import retry
from remote_agents.controller.tasks.index import TaskIndex
from tests.support.fake_e2b import Program
from tests.support.world import NAMESPACE, World

T0 = 1_800_000_000.0


def waiting_task(name: str, created: str, namespace: str = "ns", **status) -> dict:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}",
                         "creationTimestamp": created}, "status": {"phase": "Pending", **status}}


ORDER = {
    # tasks as (name, created, priority) -> dispatch order
    "FIFO within one priority": ([("b", "T1", 0), ("a", "T2", 0), ("c", "T3", 0)], ["b", "a", "c"]),
    "higher priority first": ([("low", "T1", 0), ("high", "T3", 5), ("mid", "T2", 1)], ["high", "mid", "low"]),
    "negative after default": ([("neg", "T1", -1), ("zero", "T2", 0)], ["zero", "neg"]),
    "same time: by name": ([("y", "T1", 2), ("x", "T1", 2)], ["x", "y"]),
}


@pytest.mark.parametrize("tasks, order", ORDER.values(), ids=ORDER.keys())
def test_a_queue_is_ordered_by_priority_then_age(tasks, order):
    index = TaskIndex()
    target = ("ns", "agent", "a")
    for name, created, priority in tasks:
        index.update(f"uid-ns-{name}", target, waiting_task(name, created), priority)
    assert [uid.removeprefix("uid-ns-") for uid in index.waiting(target)] == order


def test_targets_are_served_by_their_heads_priority_and_every_namespace_has_its_own_queue():
    index = TaskIndex()
    def add(target, task, priority):
        index.update(task["metadata"]["uid"], target, task, priority)
    for i in range(50):  # a burst in one namespace, earlier
        add(("busy", "pool", "p"), waiting_task(f"b{i}", f"T{i:03}", "busy"), 0)
    add(("quiet", "pool", "p"), waiting_task("q", "T999", "quiet"), 0)
    add(("busy", "agent", "p-0"), waiting_task("u", "T998", "busy"), 9)
    # A round serves the head of every target: the other namespace's task is never behind the burst.
    assert index.targets() == [("busy", "agent", "p-0"), ("busy", "pool", "p"), ("quiet", "pool", "p")]
    assert next(index.waiting(("quiet", "pool", "p"))) == "uid-quiet-q"
    assert index.queue_size() == (52, "T000")


def test_a_deleted_task_leaves_the_queue_and_one_a_finalizer_keeps_is_cancelled_while_its_run_is_live():
    index = TaskIndex()
    target = ("ns", "agent", "a")
    pending = waiting_task("p", "T1")
    index.update("uid-ns-p", target, pending)
    pending["metadata"]["deletionTimestamp"] = "T2"
    index.update("uid-ns-p", target, pending)
    assert list(index.waiting(target)) == [] and not index.cancelling
    running = waiting_task("r", "T1", phase="Running")
    running["metadata"].update(deletionTimestamp="T2", finalizers=["example.com/audit"])
    index.update("uid-ns-r", target, running)
    assert index.cancelling == {"uid-ns-r"} and index.running == {"uid-ns-r"}
    running["status"]["phase"] = "Failed"  # stopped, and said so
    index.update("uid-ns-r", target, running)
    assert not index.cancelling
    legacy = waiting_task("l", "T1", phase="Succeeded")  # an earlier build's finalizer, left on it
    legacy["metadata"].update(deletionTimestamp="T2", finalizers=[LEGACY_RUN_FINALIZER])
    index.update("uid-ns-l", target, legacy)
    assert index.cancelling == {"uid-ns-l"}


RETRY = {
    # (reason, attempts so far, spec.retries) -> retried
    "lost sandbox, retries left": ("SandboxLost", 1, 2, True),
    "lost sandbox, last allowed attempt": ("SandboxLost", 3, 2, False),
    "agent deleted mid-run": ("AgentGone", 1, 1, True),
    "resident process took no query": ("ServerUnreachable", 1, 1, True),
    "resident process died answering": ("ServerLost", 1, 1, True),
    "no retries asked": ("SandboxLost", 1, 0, False),
    "the command's own failure": ("ExitCode", 1, 5, False),
    "a timeout is the command's": ("DeadlineExceeded", 1, 5, False),
}


@pytest.mark.parametrize("reason, attempts, retries, retried", RETRY.values(), ids=RETRY.keys())
def test_only_failures_not_the_commands_own_are_retried(reason, attempts, retries, retried):
    assert retry.should_retry(reason, attempts, retries) is retried


@pytest.mark.parametrize("attempts, seconds", [(1, 2), (2, 4), (3, 8), (8, 256), (9, 300), (30, 300)])
def test_backoff_doubles_up_to_its_cap(attempts, seconds):
    assert retry.backoff_seconds(attempts) == seconds


def test_every_attempt_has_its_own_run_files():
    assert [retry.run_id("u", n) for n in (1, 2, 3)] == ["u", "u-2", "u-3"]


LEDGER = {
    # observations (phase, seconds after T0) -> (running, paused) seconds at the last
    "first observation counts nothing": ([("Ready", 0)], (0, 0)),
    "ready for 100 s": ([("Ready", 0), ("Ready", 100)], (100, 0)),
    "ready 60 then paused 40": ([("Ready", 0), ("Paused", 60), ("Ready", 100)], (60, 40)),
    "setting up counts as running": ([("SettingUp", 0), ("Ready", 30), ("Paused", 50)], (50, 0)),
    "creating and terminating count nothing": ([("Creating", 0), ("SettingUp", 20), ("Terminating", 25),
                                                ("Terminating", 90)], (5, 0)),
    "fractions tile at whole seconds": ([("Ready", 0.6), ("Paused", 10.2), ("Paused", 20.9)], (10, 10)),
}


@pytest.mark.parametrize("observations, totals", LEDGER.values(), ids=LEDGER.keys())
def test_the_ledger_counts_each_interval_to_the_phase_observed_at_its_start(observations, totals):
    usage = None
    for phase, at in observations:
        usage = ledger.accrue(usage, phase, T0 + at)
    assert (usage["runningSeconds"], usage["pausedSeconds"]) == totals
    assert usage["since"] == rfc3339(T0 + observations[0][1])


def test_a_restart_that_repeats_a_write_counts_nothing_twice():
    written = ledger.accrue(ledger.accrue(None, "Ready", T0), "Ready", T0 + 50)
    # A restarted operator starts from what status says, not from its memory: the same base,
    # written again later, still counts each second once.
    again = ledger.accrue(written, "Ready", T0 + 80)
    assert again["runningSeconds"] == 80
    lost_write_replayed = ledger.accrue(ledger.accrue(None, "Ready", T0), "Ready", T0 + 80)
    assert lost_write_replayed["runningSeconds"] == 80


@pytest.mark.parametrize("since_last, due", [(None, True), (0, False), (299, False), (300, True)])
def test_a_quiet_agent_has_its_ledger_written_every_few_minutes_only(since_last, due):
    usage = None if since_last is None else ledger.accrue(None, "Ready", T0)
    assert ledger.due(usage, T0 + (since_last or 0)) is due


# ---- the task loop on the fakes ---------------------------------------------------------------
def phase(world: World, task: str) -> str | None:
    return world.status(task, TASKS).get("phase")


def ready_reason(status: dict) -> str:
    return next(c["reason"] for c in status["conditions"] if c["type"] == "Ready")


async def a_run(world: World, what: str):
    """The one run going on now."""
    [process] = await world.eventually(lambda: [p for p in world.e2b.processes if p.running], what)
    return process


async def test_priorities_reorder_the_queue_of_a_busy_agent(world, clock):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a")
    await world.create_task("busy", agent="a")
    world.start_task_loop()
    await world.eventually(lambda: phase(world, "busy") == "Running", "the agent busy")
    for name, priority in (("low", 0), ("high", 10), ("mid", 5)):
        clock.advance(1)
        await world.create_task(name, agent="a", priority=priority, query=name)
    order = []
    for _ in range(4):
        process = await a_run(world, "a run")
        order.append(process.query)
        process.end()
    assert order == ["what is 6 x 7?", "high", "mid", "low"]


async def test_a_task_whose_sandbox_is_lost_is_retried_once_the_old_run_is_dead(world, clock):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a")
    await world.create_task("t", agent="a", retries=1)
    world.start_task_loop()
    first = await a_run(world, "the first run")
    assert world.status("t", TASKS)["attempts"] == 1
    world.e2b.lose(first.sandbox.sandbox_id)
    status = await world.eventually(lambda: (s := world.status("t", TASKS)).get("nextAttemptTime") and s, "a retry")
    assert status["phase"] == "Pending" and ready_reason(status) == "Retrying"
    assert status["attempts"] == 1 and "attempt 2 of 2" in status["message"]
    assert not world.kube.object(TASKS, NAMESPACE, "t")["metadata"].get("finalizers")  # a retry writes no finalizer
    assert epoch(status["nextAttemptTime"]) - clock.time() >= retry.backoff_seconds(1) - 1
    await world.reconcile_agent("a")  # the agent gets a new sandbox
    clock.advance(retry.backoff_seconds(1) + 1)
    second = await a_run(world, "the second run")
    assert second.sandbox is not first.sandbox and second.run_files.endswith("-2")
    assert world.status("t", TASKS)["attempts"] == 2
    world.e2b.lose(second.sandbox.sandbox_id)  # no retries left: this one fails for good
    await world.eventually(lambda: phase(world, "t") == "Failed", "the task failed")
    assert ready_reason(world.status("t", TASKS)) == "SandboxLost"
    assert "Retrying" in world.events.reasons("t")


async def test_deleting_a_waiting_task_costs_no_finalizer(world):
    await world.create_agent("never-ready")
    await world.create_task("t", agent="never-ready")
    world.start_task_loop()
    assert not world.kube.object(TASKS, NAMESPACE, "t")["metadata"].get("finalizers")
    await world.kube.delete(TASKS, NAMESPACE, "t")
    assert world.kube.object(TASKS, NAMESPACE, "t") is None


async def test_a_task_records_its_run_time_and_agent_seconds(world, clock):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a", maxConcurrentTasks=4)
    await world.create_task("t", agent="a")
    world.start_task_loop()
    process = await a_run(world, "the run")
    clock.advance(40)
    process.end()
    await world.eventually(lambda: phase(world, "t") == "Succeeded", "the task done")
    status = world.status("t", TASKS)
    assert 40 <= status["runSeconds"] < 42
    assert status["agentSeconds"] == pytest.approx(status["runSeconds"] / 4, abs=0.001)
    usage = world.status("a")["usage"]
    assert usage["lastObservedPhase"] == "Ready" and usage["since"]
    world.operator.refresh_metrics()
    assert metrics.registry.get_sample_value("remote_agents_task_agent_seconds_total",
                                             {"namespace": NAMESPACE, "pool": ""}) >= status["agentSeconds"]
    assert metrics.registry.get_sample_value("remote_agents_agent_sandbox_seconds",
                                             {"namespace": NAMESPACE, "pool": "", "state": "running"}) >= 0


async def test_a_retry_recorded_before_a_restart_waits_out_its_backoff_then_runs_as_the_next_attempt(world, clock):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a")
    await world.create_task("t", agent="a", retries=2, status={  # as the operator before the restart left it
        "phase": "Pending", "attempts": 1, "nextAttemptTime": rfc3339(clock.time() + 30)})
    world.start_task_loop()
    scheduler = world.operator.tasks.scheduler
    await world.eventually(lambda: not scheduler.dispatch_due and not scheduler.busy, "a dispatch round done")
    assert phase(world, "t") == "Pending" and not [p for p in world.e2b.processes if p.running]
    clock.advance(31)
    process = await a_run(world, "the second attempt")
    status = world.status("t", TASKS)
    assert status["attempts"] == 2 and process.run_files.endswith("-2") and "nextAttemptTime" not in status


async def test_a_task_deleted_with_an_earlier_builds_run_finalizer_is_let_go(world):
    await world.create_agent("never-ready")
    await world.create_task("t", agent="never-ready")
    await world.kube.patch(TASKS, NAMESPACE, "t", {"metadata": {"finalizers": [LEGACY_RUN_FINALIZER]}})
    world.start_task_loop()
    await world.kube.delete(TASKS, NAMESPACE, "t")
    await world.eventually(lambda: world.kube.object(TASKS, NAMESPACE, "t") is None, "the task gone")
    assert "TaskCancelled" not in world.events.reasons("t") and not world.e2b.processes


async def test_a_run_whose_agent_is_being_deleted_is_stopped_before_the_task_is_retried(world, clock):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a")
    await world.create_task("t", agent="a", retries=1)
    world.start_task_loop()
    process = await a_run(world, "the run")
    await world.kube.delete(AGENTS, NAMESPACE, "a")  # marked only: Kopf's finalizer holds it, sandbox and all
    status = await world.eventually(lambda: (s := world.status("t", TASKS)).get("nextAttemptTime") and s,
                                    "a retry", creep=1)
    assert not process.running and process.signals  # stopped by us, not by the sandbox's end
    assert status["phase"] == "Pending" and ready_reason(status) == "Retrying" and status["attempts"] == 1
