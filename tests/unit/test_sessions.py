"""The session rules (tasks/sessions.py), the pool's drain of session holders (pools/decide.py) and
the resident protocol's pieces the operator parses (controller/resident.py). Pure, table-driven."""

from __future__ import annotations

import pytest

from remote_agents.api.models import AgentPoolSpec
from remote_agents.controller import resident
from remote_agents.controller.pools import decide as pools
from remote_agents.controller.tasks import decide as tasks
from remote_agents.controller.tasks.sessions import Holding, Turn, holder, holdings, place


def turn(name: str, phase: str | None = "Succeeded", agent: str | None = None, sandbox: str | None = None,
         created: str = "2026-01-01T00:00:00Z") -> Turn:
    return Turn(created=created, name=name, phase=phase, agent=agent, sandbox=sandbox)


THIS = turn("s-00002", phase="Pending", created="2026-01-01T00:00:09Z")
POOL = {"a": "sb-a", "b": "sb-b", "c": "sb-c"}


@pytest.mark.parametrize("turns, agents, expected", [
    # The first task of a session: any free agent.
    ([THIS], POOL, ("", None, "")),
    # The holder is the agent of the latest placed task, not of an older one.
    ([turn("s-00000", agent="a", sandbox="sb-a"), turn("s-00001", agent="b", sandbox="sb-b",
                                                       created="2026-01-01T00:00:05Z"), THIS], POOL, ("", "b", "")),
    # A task of the session still running: wait for it (never run two of a session at once).
    ([turn("s-00001", phase="Running", agent="a", sandbox="sb-a"), THIS], POOL, ("SessionBusy", None, "")),
    # An earlier one still queued: wait behind it (FIFO within the session).
    ([turn("s-00001", phase="Pending", created="2026-01-01T00:00:01Z"), THIS], POOL, ("SessionBusy", None, "")),
    # Same second: the name orders them (Session.ask numbers its tasks).
    ([turn("s-00001", phase="Pending", created=THIS.created), THIS], POOL, ("SessionBusy", None, "")),
    # A later queued task does not hold an earlier one back.
    ([turn("s-00003", phase="Pending", created="2026-01-01T00:00:10Z"), THIS], POOL, ("", None, "")),
    # The holder was deleted: fail.
    ([turn("s-00001", agent="gone", sandbox="sb-x"), THIS], POOL, ("", None, "SessionAgentGone")),
    # The holder's sandbox was replaced: its memory is gone, fail.
    ([turn("s-00001", agent="a", sandbox="sb-old"), THIS], POOL, ("", None, "SessionLost")),
    # The holder's sandbox is being recreated (no id yet): it stays the holder for now.
    ([turn("s-00001", agent="a", sandbox="sb-a"), THIS], {"a": None}, ("", "a", "")),
    # A task that failed before it got an agent does not move the session.
    ([turn("s-00000", agent="a", sandbox="sb-a"), turn("s-00001", phase="Failed", created="2026-01-01T00:00:05Z"),
      THIS], POOL, ("", "a", "")),
])
def test_where_a_sessions_task_may_run(turns, agents, expected):
    placement = place("s", THIS, turns, agents)
    assert (placement.wait, placement.agent, placement.fail) == expected
    assert bool(placement.message) == bool(placement.wait or placement.fail)


def test_the_holder_is_read_from_the_tasks_alone():
    turns = [turn("x-1", agent="a"), turn("x-2", agent="b", created="2026-01-01T00:00:01Z"), turn("x-3", phase=None)]
    assert holder(turns).agent == "b"
    assert holder([turn("x-1", phase="Pending")]) is None


def test_holdings_count_held_and_active_sessions_per_agent():
    found = holdings({
        ("ns", "idle"): [turn("i-1", agent="a")],
        ("ns", "queued"): [turn("q-1", agent="a"), turn("q-2", phase="Pending", created="2026-01-01T00:00:01Z")],
        ("ns", "running"): [turn("r-1", phase="Running", agent="b")],
        ("ns", "never-placed"): [turn("n-1", phase="Pending")],
    })
    assert found == {("ns", "a"): Holding(frozenset({"idle", "queued"}), frozenset({"queued"})),
                     ("ns", "b"): Holding(frozenset({"running"}), frozenset({"running"}))}


def candidate(name: str, running: int = 0, sessions: int = 0) -> tasks.Candidate:
    return tasks.Candidate(name=name, ready=True, user_paused=False, idle_paused=False, running_tasks=running,
                           max_concurrent_tasks=2, has_query_command=True, sessions=sessions)


def test_a_new_session_prefers_the_least_loaded_then_the_agent_holding_fewest_sessions():
    assert tasks.choose_agent([candidate("a", sessions=3), candidate("b", sessions=1)], by_ref=False).agent == "b"
    assert tasks.choose_agent([candidate("a", running=1), candidate("b", running=0, sessions=5)],
                              by_ref=False).agent == "b"


def child(name: str, created: str, active_tasks: int = 0, sessions: int = 0, active: tuple[str, ...] = (),
          template_hash: str = "") -> pools.Child:
    return pools.Child(name=name, template_hash=template_hash, ref="main", paused=False, ready=True, deleting=False,
                       active_tasks=active_tasks, created=created, sessions=sessions, active_sessions=active)


def pool_spec(replicas: int, strategy: str = "RollingUpdate") -> AgentPoolSpec:
    return AgentPoolSpec.model_validate({"replicas": replicas, "updateStrategy": {"type": strategy},
                                         "template": {"spec": {"source": {"repo": "o/r"}}}})


@pytest.mark.parametrize("replicas, children, deleted, lost, waiting", [
    # Prefer removing the agent that holds no session, even if it is older.
    (2, [child("p-0", "1", sessions=0), child("p-1", "2", sessions=1), child("p-2", "3", sessions=2)],
     ["p-0"], {}, 0),
    # An agent whose session has a queued or running task is drained first: kept while it has one.
    (1, [child("p-0", "1", sessions=1, active=("s1",)), child("p-1", "2", sessions=1)], ["p-1"], {}, 0),
    (1, [child("p-0", "1", sessions=1, active=("s1",)), child("p-1", "2", sessions=1, active=("s2",))], [], {}, 1),
    # Forced (the pool goes to zero): deleted anyway, and the sessions it loses are named.
    (0, [child("p-0", "1", sessions=1, active=("s1",)), child("p-1", "2")], ["p-1", "p-0"], {"p-0": ("s1",)}, 0),
])
def test_scale_down_drains_session_holders(replicas, children, deleted, lost, waiting):
    spec = pool_spec(replicas)
    children = [pools.Child(**{**c.__dict__, "template_hash": pools.template_hash(spec)}) for c in children]
    plan = pools.plan_pool("p", spec, children)
    assert sorted(plan.delete) == sorted(deleted)
    assert plan.lost_sessions == lost and plan.waiting_for_busy == waiting


@pytest.mark.parametrize("strategy, deleted, lost", [
    ("RollingUpdate", ["p-1"], {}),  # the outdated agent with an active session waits for it
    ("Recreate", ["p-0", "p-1"], {"p-0": ("s1",)}),  # replaced anyway: its session is reported lost
])
def test_rollouts_drain_session_holders_unless_forced(strategy, deleted, lost):
    spec = pool_spec(2, strategy)
    plan = pools.plan_pool("p", spec, [child("p-0", "1", sessions=1, active=("s1",), template_hash="old"),
                                       child("p-1", "2", template_hash="old")])
    assert sorted(plan.delete) == deleted and plan.lost_sessions == lost


@pytest.mark.parametrize("stdout, pid", [("1234\n", 1234), ("login banner\n77\n", 77), ("", None), ("oops\n", None)])
def test_the_health_probe_reports_the_pid(stdout, pid):
    assert resident.parse_pid(stdout) == pid


def test_the_resident_client_is_passed_in_the_environment_with_the_task_and_session():
    env = resident.client_env(8765, 30001, "t-1", None)
    assert env["AGENT_SERVER_PORT"] == "8765" and env["AGENT_TASK"] == "t-1" and env["AGENT_SESSION"] == ""
    assert env["AGENT_RELAY_PORT"] == "30001" and env["AGENT_RELAY_TOKENS"] == resident.RELAY_TOKENS
    assert "AGENT_RESIDENT_CLIENT" in env and compile(env["AGENT_RESIDENT_CLIENT"], "client", "exec")
    assert "$AGENT_RESIDENT_CLIENT" in resident.CLIENT_COMMAND and resident.health_command(5).endswith("health 5")


def test_the_relay_never_takes_the_servers_port():
    uid = "0b7f6c1e-1111-4222-8333-944455556666"
    relay = resident.relay_port_of(8765, uid)
    assert 20000 <= relay < 60000 and resident.relay_port_of(relay, uid) == relay + 1


MARK = resident.STREAMED_MARK


@pytest.mark.parametrize("stream, streamed", [
    (f'\n{MARK}{{"stdout": "42", "stderr": "thinking\\n"}}\n0 stderr\n', ("42", "thinking\n")),
    (f'banner\n{MARK}{{"stdout": "a\\nb", "stderr": ""}}\n0\n', ("a\nb", "")),
    ("0\n", None),  # a long answer (or another command): read from the files
    (f"{MARK}not json\n0\n", None),
    (f'{MARK}{{"stdout": "x", "stderr": ""}}\nlater\n0\n', None),  # only the line right before the exit line
])
def test_a_short_answer_on_the_runners_stream_spares_the_file_reads(stream, streamed):
    assert resident.streamed_answer(stream) == streamed
