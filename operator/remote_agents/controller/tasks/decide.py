"""Pure rules for AgentTasks: which agent runs a task (or why it waits), how a finished run is
judged, and when a task is collected."""

from __future__ import annotations

from dataclasses import dataclass

from remote_agents.controller.resident import SERVER_LOST_EXIT, UNREACHABLE_EXIT

OUTPUT_STATUS_LIMIT = 4096  # bytes of stdout kept in status.output; the ConfigMap has the rest
OUTPUT_CONFIGMAP_LIMIT = 900 * 1024  # under the 1 MiB object limit, with room for stderr and metadata
STDERR_CONFIGMAP_LIMIT = 64 * 1024
KILL_GRACE_SECONDS = 5  # from SIGTERM at the deadline to SIGKILL, for a command that cleans up
# What the runner reports for a command ended by SIGTERM / SIGKILL.
SIGTERM_EXIT_CODE, SIGKILL_EXIT_CODE = 128 + 15, 128 + 9
QUEUED = "AllAgentsBusy"  # the reason of a task that only waits for a free slot


@dataclass(frozen=True)
class Candidate:
    """An agent as dispatch sees it."""

    name: str
    ready: bool  # Ready condition true for its current generation
    user_paused: bool  # spec.paused: the user's decision, never overridden by a task
    idle_paused: bool  # paused by the operator for idleness: a task wakes it
    running_tasks: int
    max_concurrent_tasks: int
    has_query_command: bool
    sessions: int = 0  # sessions it holds: a new session prefers an agent holding fewer


@dataclass(frozen=True)
class Dispatch:
    agent: str | None
    wake: bool = False  # the agent is idle-paused and must be resumed first
    reason: str = ""  # why the task waits, when agent is None
    message: str = ""


def choose_agent(candidates: list[Candidate], by_ref: bool) -> Dispatch:
    """Prefer a running agent with a free slot (least loaded, then by name), then an idle-paused
    one to wake. A named agent (agentRef) that cannot run it makes the task wait with the reason."""
    if not candidates:
        return Dispatch(None, reason="AgentNotFound" if by_ref else "PoolEmpty",
                        message="the agent does not exist" if by_ref else "the pool has no agents")
    usable = [c for c in candidates if not c.user_paused and c.has_query_command]
    if not usable:
        if all(c.user_paused for c in candidates):
            return Dispatch(None, reason="AgentPaused",
                            message="the agent is paused by its spec (spec.paused: true); tasks wait until it is resumed")
        return Dispatch(None, reason="NoQueryCommand", message="the agent has no spec.query.command")
    free = [c for c in usable if c.running_tasks < c.max_concurrent_tasks]
    running = sorted((c for c in free if c.ready and not c.idle_paused),
                     key=lambda c: (c.running_tasks, c.sessions, c.name))
    if running:
        return Dispatch(running[0].name)
    sleeping = sorted((c for c in free if c.idle_paused), key=lambda c: c.name)
    if sleeping:
        return Dispatch(sleeping[0].name, wake=True)
    if free:
        return Dispatch(None, reason="AgentNotReady", message="no agent is Ready yet")
    return Dispatch(None, reason=QUEUED, message="every agent is running its maximum of tasks")


def worth_a_note(reason: str, has_conditions: bool) -> bool:
    """Whether a waiting task's status should be written to say why. Waiting for a free slot is
    the ordinary queue: phase Pending (the API server's default) says it, without a write per task
    (a burst of a thousand tasks would cost a thousand). Any other reason is news the user may
    have to act on; and a task that already shows a reason has it replaced, never left stale."""
    return reason != QUEUED or has_conditions


@dataclass(frozen=True)
class Verdict:
    succeeded: bool
    reason: str
    message: str


def judge(exit_code: int, timeout_seconds: int, overdue: bool, resident: bool = False) -> Verdict:
    """A run that ended; `overdue`: it was seen ending past its deadline (when the operator kills it);
    `resident`: the run was the resident client, whose exit codes 75 and 76 say the process failed
    it (controller/resident.py), not the query."""
    if exit_code == 0:
        return Verdict(True, "Succeeded", "the query command exited 0")
    if overdue and exit_code in (SIGTERM_EXIT_CODE, SIGKILL_EXIT_CODE):
        return Verdict(False, "DeadlineExceeded", f"the query ran longer than {timeout_seconds}s and was killed")
    if resident and exit_code == UNREACHABLE_EXIT:
        return Verdict(False, "ServerUnreachable", "the agent's resident process did not take the query "
                                                   "(the agent's reconcile starts it again)")
    if resident and exit_code == SERVER_LOST_EXIT:
        return Verdict(False, "ServerLost", "the agent's resident process ended the answer before it was done "
                                            "(it died or closed the connection: see the agent's Events)")
    return Verdict(False, "QueryFailed", f"the query command exited {exit_code}")


def deadline_signal(now: float, deadline: float, terminated_at: float | None) -> str | None:
    """What a run still going at `now` gets: SIGTERM once its deadline has passed, SIGKILL when it
    outlived the grace after the SIGTERM (sent at `terminated_at`), else nothing yet. The operator
    keeps the deadline, as the Job controller keeps activeDeadlineSeconds (no `timeout` process in
    every run: two more process starts per task in the sandbox)."""
    if now < deadline:
        return None
    if terminated_at is None:
        return "TERM"
    return "KILL" if now >= terminated_at + KILL_GRACE_SECONDS else None


def truncate(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore") + f"\n[... truncated, {len(data)} bytes in total]"


def expired(completion_epoch: float, ttl_seconds: int, now_epoch: float) -> bool:
    return now_epoch >= completion_epoch + ttl_seconds


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
