"""TaskController on the fakes, its loop running: dispatch order, why tasks wait, deadlines,
results, runs surviving restarts, and TTL collection."""

from __future__ import annotations

import asyncio

import pytest

from remote_agents.api.names import POOL_LABEL, TASKS
from remote_agents.api.timestamps import rfc3339
from remote_agents.controller.clients.e2b import E2BError, SandboxPaused
from remote_agents.controller.tasks import cancel, decide
from remote_agents.controller.tasks.orphan_runs import UNFINISHED_RUNS
from tests.support.faults import OperatorCrashed
from tests.support.fake_e2b import Process, Program
from tests.support.world import NAMESPACE, World

ENDED = ("Succeeded", "Failed")


def phase(world: World, task: str) -> str | None:
    return world.status(task, TASKS).get("phase")


def ready_condition(world: World, task: str) -> dict:
    return next(c for c in world.status(task, TASKS).get("conditions") or [] if c["type"] == "Ready")


def running(world: World) -> list[Process]:
    return [p for p in world.e2b.processes if p.running]


async def ended(world: World, *tasks: str, creep: float = 0.0) -> None:
    await world.eventually(lambda: all(phase(world, t) in ENDED for t in tasks), f"{tasks} ended", creep)


async def test_one_agent_runs_its_tasks_first_come_first_served(world, clock):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a")
    for name in ("c", "b", "a1"):  # names against their order of creation
        await world.create_task(name, agent="a", query=f"query of {name}")
        clock.advance(1)
    world.start_task_loop()

    for name in ("c", "b", "a1"):
        process = await world.eventually(lambda: running(world) and running(world)[-1], "a run")
        assert [p.query for p in running(world)] == [f"query of {name}"]  # one at a time (maxConcurrentTasks 1)
        assert phase(world, name) == "Running" and world.status(name, TASKS)["agent"] == "a"
        process.end()
        await ended(world, name)
    assert [phase(world, t) for t in ("c", "b", "a1")] == ["Succeeded"] * 3


async def test_a_busy_agent_holds_up_only_its_own_queue(world, clock):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("x")
    await world.ready_agent("y")
    await world.create_task("first-on-x", agent="x")
    world.start_task_loop()
    await world.eventually(lambda: phase(world, "first-on-x") == "Running", "x busy")
    clock.advance(1)
    await world.create_task("second-on-x", agent="x")
    clock.advance(1)
    await world.create_task("later-on-y", agent="y")

    await world.eventually(lambda: phase(world, "later-on-y") == "Running", "y runs its task")
    assert phase(world, "second-on-x") in (None, "Pending")


LOAD_SPREADING = {
    # agents {name: (Ready, maxConcurrentTasks)}, tasks -> the agent of each task, in order
    "least loaded, then by name": ({"m0": (True, 2), "m1": (True, 2)}, 3, ["m0", "m1", "m0"]),
    "free slots decide": ({"m0": (True, 1), "m1": (True, 3)}, 3, ["m0", "m1", "m1"]),
    "not Ready agents get none": ({"m0": (False, 3), "m1": (True, 3)}, 2, ["m1", "m1"]),
}


@pytest.mark.parametrize("agents, count, placed", LOAD_SPREADING.values(), ids=LOAD_SPREADING.keys())
async def test_pool_tasks_go_to_the_least_loaded_agent(world, clock, agents, count, placed):
    world.e2b.programs["answer"] = Program(held=True)
    for name, (ready, slots) in agents.items():
        await world.create_agent(name, labels={POOL_LABEL: "p"}, maxConcurrentTasks=slots)
        if ready:
            await world.reconcile_agent(name)
    tasks = [f"t{i}" for i in range(count)]
    for task in tasks:
        await world.create_task(task, pool="p")
        clock.advance(1)
    world.start_task_loop()

    await world.eventually(lambda: all(phase(world, t) == "Running" for t in tasks), "all running")
    assert [world.status(t, TASKS)["agent"] for t in tasks] == placed


WAITING = {
    # how the target is -> the reason the task shows while it waits
    "no such agent": (lambda w: None, {"agent": "ghost"}, "AgentNotFound"),
    "an empty pool": (lambda w: None, {"pool": "nobody"}, "PoolEmpty"),
    "the agent is paused": (lambda w: w.ready_agent("a", paused=True), {"agent": "a"}, "AgentPaused"),
    "no query command": (lambda w: w.ready_agent("a", query={"command": ""}), {"agent": "a"}, "NoQueryCommand"),
    "the agent is not Ready": (lambda w: w.create_agent("a"), {"agent": "a"}, "AgentNotReady"),
}


@pytest.mark.parametrize("prepare, target, reason", WAITING.values(), ids=WAITING.keys())
async def test_a_waiting_task_says_why(world, prepare, target, reason):
    made = prepare(world)
    if made is not None:
        await made
    await world.create_task("t", **target)
    world.start_task_loop()

    await world.eventually(lambda: world.status("t", TASKS).get("conditions"), "a note")
    assert phase(world, "t") == "Pending"
    assert ready_condition(world, "t")["reason"] == reason
    assert world.e2b.processes == []


RESULTS = {
    # program -> phase, reason, exit code, Event type
    "success": (Program(stdout="42\n"), "Succeeded", "Succeeded", 0, "Normal"),
    "failure": (Program(exit_code=3, stdout="partial\n", stderr="boom\n"), "Failed", "QueryFailed", 3, "Warning"),
    "a command that does not exist": (None, "Failed", "QueryFailed", 127, "Warning"),
    "a long output": (Program(stdout="x" * (decide.OUTPUT_STATUS_LIMIT + 100)), "Succeeded", "Succeeded", 0, "Normal"),
}


@pytest.mark.parametrize("program, phase_, reason, exit_code, event", RESULTS.values(), ids=RESULTS.keys())
async def test_a_finished_run_is_recorded(world, program, phase_, reason, exit_code, event):
    if program:
        world.e2b.programs["answer"] = program
    await world.ready_agent("a")
    task = await world.create_task("t", agent="a")
    world.start_task_loop()
    await ended(world, "t")

    status = world.status("t", TASKS)
    assert (status["phase"], ready_condition(world, "t")["reason"], status["exitCode"]) == (phase_, reason, exit_code)
    terminal = "Complete" if phase_ == "Succeeded" else "Failed"
    assert any(c["type"] == terminal and c["status"] == "True" for c in status["conditions"])
    stdout = (program or Program()).stdout
    assert status["output"] == decide.truncate(stdout, decide.OUTPUT_STATUS_LIMIT)
    output = world.kube.object("configmaps", NAMESPACE, status["outputConfigMap"])
    assert output["data"]["stdout"] == stdout  # the whole of it
    assert output["data"]["stderr"] == (program.stderr if program else "answer: command not found\n")
    assert output["metadata"]["ownerReferences"][0]["uid"] == task["metadata"]["uid"]
    told = await world.eventually(lambda: [e for e in world.events.events if e.name == "t"], "the task's Event")
    assert [(e.type, e.reason) for e in told] == [(event, reason)]


DEADLINES = {
    # program -> signals it gets, exit code recorded
    "SIGTERM ends it": (Program(held=True), ["TERM"], decide.SIGTERM_EXIT_CODE),
    "it ignores SIGTERM: SIGKILL after the grace": (Program(held=True, ignores_term=True), ["TERM", "KILL"], None),
}


@pytest.mark.parametrize("program, signals, exit_code", DEADLINES.values(), ids=DEADLINES.keys())
async def test_an_overdue_run_is_stopped(world, program, signals, exit_code):
    world.e2b.programs["answer"] = program
    await world.ready_agent("a")
    await world.create_task("t", agent="a", timeoutSeconds=2)
    world.start_task_loop()
    await world.eventually(lambda: running(world), "the run")
    started = world.clock.time()

    await ended(world, "t", creep=0.25)

    [process] = world.e2b.processes
    assert [name for name, _ in process.signals] == signals
    times = [at for _, at in process.signals]
    assert times[0] >= started + 2  # never before its deadline
    if len(times) == 2:
        assert times[1] - times[0] >= decide.KILL_GRACE_SECONDS
    status = world.status("t", TASKS)
    assert (status["phase"], ready_condition(world, "t")["reason"], status.get("exitCode")) == \
           ("Failed", "DeadlineExceeded", exit_code)


async def test_a_run_outlives_an_operator_restart(world):
    world.e2b.programs["answer"] = Program(held=True, stdout="done\n")
    await world.ready_agent("a")
    await world.create_task("t", agent="a")
    world.start_task_loop()
    [process] = await world.eventually(lambda: running(world), "the run")

    await world.restart()
    world.start_task_loop()
    process.end()

    await ended(world, "t", creep=0.5)  # no stream to tell the new operator: its polls find the result
    assert world.status("t", TASKS)["output"] == "done\n"
    assert len(world.e2b.processes) == 1  # found, not run again


async def test_a_run_claimed_but_never_started_is_started_after_a_restart(world):
    world.e2b.programs["answer"] = Program(stdout="42\n")
    world.e2b.fail("start_background", OperatorCrashed())  # the claim is written, the start never happens
    await world.ready_agent("a")
    await world.create_task("t", agent="a")
    world.start_task_loop()
    await world.eventually(lambda: not world.e2b.faults.pending, "the crash")
    assert phase(world, "t") == "Running" and world.e2b.processes == []

    await world.restart()
    world.start_task_loop()

    await ended(world, "t", creep=3)  # a claim without a pid file is started again after a while
    assert phase(world, "t") == "Succeeded" and len(world.e2b.processes) == 1


MID_RUN_LOSSES = {
    # what happens to the agent -> the task's reason
    "its sandbox is lost": (lambda w: w.e2b.lose(w.status("a")["sandboxID"]), "SandboxLost"),
    "the agent is deleted": (lambda w: w.delete_agent("a"), "AgentGone"),
}


@pytest.mark.parametrize("loss, reason", MID_RUN_LOSSES.values(), ids=MID_RUN_LOSSES.keys())
async def test_a_run_whose_agent_goes_away_fails(world, loss, reason):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a")
    await world.create_task("t", agent="a")
    world.start_task_loop()
    await world.eventually(lambda: running(world), "the run")

    made = loss(world)
    if made is not None:
        await made

    await ended(world, "t", creep=0.5)
    assert (phase(world, "t"), ready_condition(world, "t")["reason"]) == ("Failed", reason)


async def test_deleting_a_running_task_kills_its_run(world):
    world.e2b.programs["answer"] = Program(held=True, ignores_term=True)
    await world.ready_agent("a")
    await world.create_task("t", agent="a")
    world.start_task_loop()
    [process] = await world.eventually(lambda: running(world), "the run")

    assert not world.kube.object(TASKS, NAMESPACE, "t")["metadata"].get("finalizers")  # a delete is one call
    await world.kube.delete(TASKS, NAMESPACE, "t")
    assert world.kube.object(TASKS, NAMESPACE, "t") is None

    await world.eventually(lambda: not process.running, "the run stopped")
    assert [name for name, _ in process.signals] == ["TERM", "KILL"]  # it ignored SIGTERM
    await world.eventually(lambda: "TaskCancelled" in world.events.reasons("t"), "the Event")


async def test_a_deleted_tasks_slot_is_given_to_the_next_only_once_its_run_is_stopped(world, monkeypatch):
    monkeypatch.setattr(cancel, "CANCEL_RETRY_SECONDS", 0.05)
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a")
    await world.create_task("doomed", agent="a")
    world.start_task_loop()
    [doomed] = await world.eventually(lambda: running(world), "the first run")
    await world.create_task("next", agent="a")
    world.e2b.fail("run", E2BError("envd unreachable"), times=3, when=lambda command, **_: "stopped" in command)

    await world.kube.delete(TASKS, NAMESPACE, "doomed")
    await world.eventually(lambda: not world.e2b.faults.pending, "three failed attempts to stop it")
    assert doomed.running and len(world.e2b.processes) == 1  # the slot is still the dying run's
    [after] = await world.eventually(lambda: [p for p in running(world) if p is not doomed], "the next run")
    assert not doomed.running and doomed.signals and after.query == "what is 6 x 7?"


async def test_a_run_whose_task_was_deleted_while_no_operator_ran_is_stopped_by_the_next_one(world):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a", maxConcurrentTasks=2)
    await world.create_task("deleted", agent="a")
    await world.create_task("kept", agent="a")
    world.start_task_loop()
    runs = await world.eventually(lambda: len(running(world)) == 2 and running(world), "both runs")
    by_task = {p.run_files.rsplit("/", 1)[1]: p for p in runs}

    async def delete_it() -> None:
        await world.kube.delete(TASKS, NAMESPACE, "deleted")
    deleted_uid = world.kube.object(TASKS, NAMESPACE, "deleted")["metadata"]["uid"]
    await world.restart(while_down=delete_it)
    world.start_task_loop()

    [orphan] = [p for run, p in by_task.items() if run.startswith(deleted_uid)]
    [kept] = [p for p in runs if p is not orphan]
    await world.eventually(lambda: not orphan.running, "the orphaned run stopped")
    assert kept.running and not kept.signals and phase(world, "kept") == "Running"
    kept.end()
    await ended(world, "kept", creep=0.5)
    assert phase(world, "kept") == "Succeeded"


async def test_a_paused_agents_runs_are_swept_only_once_it_runs_again(world):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a")
    await world.create_task("t", agent="a")
    world.start_task_loop()
    [process] = await world.eventually(lambda: running(world), "the run")

    def sweeps() -> int:
        return [c.command for c in process.sandbox.commands].count(UNFINISHED_RUNS)
    swept_before = sweeps()

    async def pause_agent_and_delete_task() -> None:
        await world.update_agent("a", paused=True)
        await world.reconcile_agent("a")
        await world.kube.delete(TASKS, NAMESPACE, "t")
    await world.restart(while_down=pause_agent_and_delete_task)
    world.start_task_loop()
    scheduler = world.operator.tasks.scheduler
    await world.eventually(lambda: not scheduler.dispatch_due and not scheduler.busy, "a round done", creep=1)
    await asyncio.sleep(0.1)
    assert process.running and sweeps() == swept_before

    await world.update_agent("a", paused=False)
    await world.reconcile_agent("a")
    await world.eventually(lambda: not process.running, "the orphaned run stopped", creep=1)


TTL = {
    # (phase, ttlSecondsAfterFinished, seconds since completion) -> collected
    "finished, within its TTL": ("Succeeded", 60, 59, False),
    "finished, TTL reached": ("Succeeded", 60, 60, True),
    "failed, TTL zero": ("Failed", 0, 0, True),
    "still running": ("Running", 0, None, False),
}


@pytest.mark.parametrize("phase_, ttl, since, collected", TTL.values(), ids=TTL.keys())
async def test_finished_tasks_are_deleted_after_their_ttl(world, clock, phase_, ttl, since, collected):
    completed = clock.time() - 3600
    status = {"phase": phase_, "agent": "a", "startTime": "2026-01-01T00:00:00Z"}
    if since is not None:
        status["completionTime"] = rfc3339(completed)
    await world.create_task("t", agent="a", ttlSecondsAfterFinished=ttl, status=status)

    await world.operator.tasks.housekeeping.tidy(int(completed) + (since or 0))

    assert (world.kube.object(TASKS, NAMESPACE, "t") is None) == collected



async def test_a_session_sticks_to_its_agent_and_waits_for_it_when_busy(world, clock):
    world.e2b.programs["answer"] = Program(held=True)
    for name in ("m0", "m1", "m2"):
        await world.ready_agent(name, labels={POOL_LABEL: "p"})
    await world.create_task("elsewhere", agent="m0")  # m0 busy: the session's first task goes to m1
    clock.advance(1)
    await world.create_task("s-1", pool="p", session="chat")
    world.start_task_loop()
    await world.eventually(lambda: phase(world, "s-1") == "Running", "the session's first task")
    assert world.status("s-1", TASKS)["agent"] == "m1" and world.status("s-1", TASKS)["session"] == "chat"
    for process in running(world):
        process.end()
    await ended(world, "elsewhere", "s-1")

    await world.create_task("busy-m1", agent="m1", query="keep m1 busy")  # its holder busy, the others free
    await world.eventually(lambda: phase(world, "busy-m1") == "Running", "m1 busy")
    clock.advance(1)
    await world.create_task("s-2", pool="p", session="chat")
    clock.advance(1)
    await world.create_task("other", pool="p")  # not held back by the session's waiting task
    await world.eventually(lambda: phase(world, "other") == "Running", "another task runs meanwhile")
    assert phase(world, "s-2") in (None, "Pending")  # queued for m1, not sent to a free agent
    next(p for p in running(world) if p.query == "keep m1 busy").end()
    await world.eventually(lambda: phase(world, "s-2") == "Running", "the session's next task")
    assert world.status("s-2", TASKS)["agent"] == "m1"

    await world.delete_agent("m1")
    clock.advance(1)
    await world.create_task("s-3", pool="p", session="chat")
    await ended(world, "s-3")
    failed = next(c for c in world.status("s-3", TASKS)["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "SessionAgentGone" and "m1" in failed["message"]


async def test_a_sandbox_found_paused_at_the_start_call_is_no_lost_sandbox(world):
    world.e2b.programs["answer"] = Program(stdout="42\n")
    world.e2b.fail("start_background", SandboxPaused("sandbox is not running"))  # a pause crossed the start
    await world.ready_agent("a")
    await world.create_task("t", agent="a")
    world.start_task_loop()

    await ended(world, "t", creep=1)
    assert phase(world, "t") == "Succeeded" and world.e2b.count("start_background") == 2
