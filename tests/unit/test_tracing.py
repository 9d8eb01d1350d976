"""OpenTelemetry: spans for reconciles, E2B calls and task runs, recorded by the SDK's in-memory
exporter; the run's trace handed to the task command as TRACEPARENT; off unless OTEL_* asks."""

from __future__ import annotations

import os
import subprocess
import sys

import kopf
import pytest
from e2b import AsyncSandbox
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from remote_agents.controller import handlers, tracing
from remote_agents.controller.clients.e2b import SandboxGateway
from remote_agents.controller.retry import RetryLater
from remote_agents.controller.sandboxes import E2BAccount, SandboxAddress
from remote_agents.controller.settings import GatewaySettings
from tests.support.fake_e2b import Program
from tests.unit.test_task_controller import ended, running

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def recording():
    # The global provider can be set once per process; the operator's tracer (a proxy) follows it.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    yield


@pytest.fixture(autouse=True)
def spans():
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def named(spans, name):
    return [span for span in spans.get_finished_spans() if span.name == name]


@pytest.mark.parametrize("environ, exporters", [
    ({}, []),
    ({"OTEL_SERVICE_NAME": "x"}, []),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
    ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, []),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, []),
])
def test_the_standard_environment_turns_traces_on(environ, exporters):
    assert tracing.wanted(environ) == exporters


def test_configured_from_the_environment_a_span_is_exported_with_the_service_name():
    script = ("from remote_agents.controller import tracing\nfrom opentelemetry import trace\n"
              "assert tracing.configure()\nwith tracing.tracer.start_as_current_span('probe'): pass\n"
              "trace.get_tracer_provider().shutdown()\n")
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "ops-probe"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert '"name": "probe"' in out and '"service.name": "ops-probe"' in out


def test_off_no_provider_is_installed_and_no_traceparent_is_made():
    script = ("from remote_agents.controller import tracing\nfrom opentelemetry import trace\n"
              "assert not tracing.configure()\nspan = tracing.tracer.start_span('x')\n"
              "assert not span.is_recording() and tracing.traceparent(span) == {}\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    subprocess.run([sys.executable, "-c", script], env=env, check=True)


async def test_a_reconcile_is_a_span_and_a_retry_marks_it_an_error(spans):
    async def fine():
        pass

    async def retry():
        raise RetryLater("not yet", 5)

    await handlers._run("RemoteAgent", "team", "a", fine())
    with pytest.raises(kopf.TemporaryError):
        await handlers._run("AgentPool", "team", "p", retry())
    agent, = named(spans, "reconcile RemoteAgent")
    assert dict(agent.attributes) == {"k8s.namespace.name": "team", "remoteagents.kind": "RemoteAgent",
                                      "remoteagents.name": "a"}
    assert agent.status.status_code != trace.StatusCode.ERROR
    pool, = named(spans, "reconcile AgentPool")
    assert pool.status.status_code == trace.StatusCode.ERROR


async def test_e2b_calls_are_spans_children_of_the_reconcile(spans, monkeypatch):
    async def kill(sandbox_id, **_):
        return True

    monkeypatch.setattr(AsyncSandbox, "kill", kill)
    gateway = SandboxGateway(GatewaySettings())

    async def reconcile():
        await gateway.kill(SandboxAddress("sbx-1", E2BAccount(None)))

    await handlers._run("RemoteAgent", "team", "a", reconcile())
    call, = named(spans, "e2b kill")
    parent, = named(spans, "reconcile RemoteAgent")
    assert call.attributes["e2b.sandbox.id"] == "sbx-1" and call.attributes["e2b.operation"] == "kill"
    assert call.parent.span_id == parent.context.span_id and call.context.trace_id == parent.context.trace_id


async def test_a_task_run_is_a_span_and_its_command_gets_the_trace_as_traceparent(world, spans):
    world.e2b.programs["answer"] = Program(held=True)
    await world.ready_agent("a")
    await world.create_task("t", agent="a", query="q")
    world.start_task_loop()
    process = await world.eventually(lambda: running(world) and running(world)[-1], "a run")
    version, trace_id, span_id, flags = process.envs["TRACEPARENT"].split("-")
    assert named(spans, "AgentTask run") == []  # open while the command runs
    process.end()
    await ended(world, "t")
    run, = named(spans, "AgentTask run")
    assert version == "00" and int(flags, 16) & 1  # sampled
    assert int(trace_id, 16) == run.context.trace_id and int(span_id, 16) == run.context.span_id
    assert run.attributes["remoteagents.task"] == "t" and run.attributes["remoteagents.reason"] == "Succeeded"
    assert run.status.status_code == trace.StatusCode.OK
