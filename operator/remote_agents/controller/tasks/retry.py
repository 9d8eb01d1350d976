"""When a failed run is tried again (spec.retries, like a Job's backoffLimit), and after how long. Pure.

Only failures that are not the command's own are retried: its sandbox was lost, its agent was
deleted mid-run, or its agent's resident process did not take the query or died answering it. A non-zero exit or a timeout is the command's answer and is final. A new attempt
starts only once the old one is known dead (the sandbox is gone, or the run's process group was
killed), and the decision is written to status (phase Pending, attempts, nextAttemptTime) in one
write: an operator restart finds it there.
"""

from __future__ import annotations

# Failures that are not the query's: the sandbox, the agent or its resident process went away.
RETRYABLE_REASONS = frozenset({"SandboxLost", "AgentGone", "ServerUnreachable", "ServerLost"})
BACKOFF_BASE_SECONDS = 2.0  # the wait before the second attempt; doubled for each further one
BACKOFF_CAP_SECONDS = 300.0


def should_retry(reason: str, attempts: int, retries: int) -> bool:
    """`attempts`: runs started so far, the failed one included."""
    return reason in RETRYABLE_REASONS and attempts <= retries


def backoff_seconds(attempts: int) -> float:
    """The wait after the `attempts`-th run failed (1, 2, ...): 2 s, 4 s, 8 s ... at most 5 min."""
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))


def run_id(uid: str, attempt: int) -> str:
    """Where an attempt's files live in the sandbox: the first attempt's are the task's uid (as
    before retries existed); each later one has its own files and its own runner lock."""
    return uid if attempt <= 1 else f"{uid}-{attempt}"
