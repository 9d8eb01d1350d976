"""What traces cost a task while they are off (no OTEL_* variables): the spans one task run makes
(its run span with TRACEPARENT, and its E2B calls: the start, a poll, the output read), on the
API's no-op tracer, timed in-process.

    python bench/tracing_off.py

Compare with the operator's CPU per task in docs/benchmarks.md (about 10 ms at Stop 15)."""

from __future__ import annotations

import os
import time
import timeit

from opentelemetry import trace

from remote_agents.controller import tracing

E2B_CALLS_PER_TASK = 3
RUNS = 20000


def one_task() -> None:
    span = tracing.tracer.start_span("AgentTask run", attributes={"remoteagents.task": "t", "remoteagents.agent": "a"})
    with trace.use_span(span, end_on_exit=False):
        tracing.traceparent(span)
        for _ in range(E2B_CALLS_PER_TASK):
            with tracing.tracer.start_as_current_span("e2b command", attributes={"e2b.operation": "command"}):
                pass
    span.end()


def main() -> None:
    assert not tracing.wanted(os.environ), "unset the OTEL_* variables: this measures tracing off"
    assert not tracing.configure()
    best = min(timeit.repeat(one_task, number=RUNS, repeat=5, timer=time.process_time)) / RUNS
    print(f"tracing off: {best * 1e6:.1f} us of CPU per task ({E2B_CALLS_PER_TASK} E2B spans and the run's)")


if __name__ == "__main__":
    main()
