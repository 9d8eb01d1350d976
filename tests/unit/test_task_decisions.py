"""The AgentTask rules: agent choice, verdicts, output limits, TTL, idle pausing, status notes."""

from __future__ import annotations

import pytest

from remote_agents.controller.tasks import decide


def agent(name: str, running: int = 0, ready: bool = True, user_paused: bool = False, idle_paused: bool = False,
          slots: int = 1, command: bool = True) -> decide.Candidate:
    return decide.Candidate(name=name, ready=ready, user_paused=user_paused, idle_paused=idle_paused,
                        running_tasks=running, max_concurrent_tasks=slots, has_query_command=command)


def test_the_least_loaded_ready_agent_is_chosen_then_by_name():
    assert decide.choose_agent([agent("b", running=1, slots=2), agent("c"), agent("a", running=1, slots=2)],
                           by_ref=False) == decide.Dispatch("c")
    assert decide.choose_agent([agent("b"), agent("a")], by_ref=False) == decide.Dispatch("a")


def test_a_running_agent_beats_waking_an_idle_one_which_beats_waiting():
    assert decide.choose_agent([agent("a", idle_paused=True), agent("b")], by_ref=False).agent == "b"
    woken = decide.choose_agent([agent("a", idle_paused=True, ready=False), agent("b", running=1)], by_ref=False)
    assert woken == decide.Dispatch("a", wake=True)


@pytest.mark.parametrize("candidates, by_ref, reason", [
    ([], True, "AgentNotFound"),
    ([], False, "PoolEmpty"),
    ([agent("a", user_paused=True)], True, "AgentPaused"),  # never woken by a task: the user paused it
    ([agent("a", command=False)], True, "NoQueryCommand"),
    ([agent("a", ready=False)], False, "AgentNotReady"),
    ([agent("a", running=1), agent("b", running=2, slots=2)], False, decide.QUEUED),
])
def test_why_a_task_waits(candidates, by_ref, reason):
    choice = decide.choose_agent(candidates, by_ref=by_ref)
    assert choice.agent is None and choice.reason == reason and choice.message


def test_only_the_ordinary_queue_goes_unwritten():
    assert not decide.worth_a_note(decide.QUEUED, has_conditions=False)  # phase Pending (the default) says it
    assert decide.worth_a_note(decide.QUEUED, has_conditions=True)  # replaces a reason that no longer holds
    for reason in ("AgentNotFound", "PoolEmpty", "AgentPaused", "NoQueryCommand", "AgentNotReady", "WakingAgent"):
        assert decide.worth_a_note(reason, has_conditions=False)


def test_verdicts():
    assert decide.judge(0, 60, overdue=False) == decide.Verdict(True, "Succeeded", "the query command exited 0")
    assert decide.judge(0, 60, overdue=True).succeeded  # it made it before it was stopped
    failed = decide.judge(3, 60, overdue=False)
    assert failed.reason == "QueryFailed" and "exited 3" in failed.message
    for killed in (143, 137):  # SIGTERM at the deadline, SIGKILL after the grace
        verdict = decide.judge(killed, 60, overdue=True)
        assert not verdict.succeeded and verdict.reason == "DeadlineExceeded" and "60s" in verdict.message
        assert decide.judge(killed, 60, overdue=False).reason == "QueryFailed"  # killed by something else
    assert decide.judge(124, 60, overdue=False).reason == "QueryFailed"  # a command's own 124 is no timeout


@pytest.mark.parametrize("code, resident, reason", [
    (75, True, "ServerUnreachable"),  # the resident client found no process to ask
    (76, True, "ServerLost"),  # its answer stream (or the relay) ended before the answer
    (1, True, "QueryFailed"),  # the process's own error event
    (75, False, "QueryFailed"), (76, False, "QueryFailed"),  # another command's codes are its own
])
def test_a_resident_runs_own_codes_say_the_process_failed_it(code, resident, reason):
    assert decide.judge(code, 60, overdue=False, resident=resident).reason == reason


def test_an_overdue_run_gets_sigterm_then_sigkill_after_the_grace():
    deadline = 1000.0
    assert decide.deadline_signal(999.9, deadline, None) is None
    assert decide.deadline_signal(1000.0, deadline, None) == "TERM"
    assert decide.deadline_signal(1003.0, deadline, terminated_at=1000.5) is None  # the grace runs
    assert decide.deadline_signal(1000.5 + decide.KILL_GRACE_SECONDS, deadline, terminated_at=1000.5) == "KILL"


def test_truncation_keeps_whole_characters_and_says_how_much_there_was():
    assert decide.truncate("short", 10) == "short"
    cut = decide.truncate("✓" * 10, 7)  # 3 bytes each: two whole ones fit
    assert cut.startswith("✓✓\n") and "30 bytes in total" in cut


def test_ttl_and_durations():
    assert decide.expired(100.0, 10, 110.0) and not decide.expired(100.0, 10, 109.9)
    assert [decide.format_duration(s) for s in (0.4, 59, 61, 3723)] == ["0s", "59s", "1m1s", "1h2m3s"]
