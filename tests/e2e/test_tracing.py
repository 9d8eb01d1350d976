"""Traces end to end: an operator configured only by OTEL_* variables exports its spans over OTLP
to a collector this test runs, and the task command sees TRACEPARENT naming the run's span."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import FAST_OPERATOR_ARGS
from tests.e2e.test_agent_task import finished, task_manifest
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.kubectl import eventually
from tests.support.operator_process import OperatorProcess, stop_after_finalizing
from tests.support.otlp_collector import OtlpCollector

SERVICE = "remote-agents-e2e"


@pytest.fixture(scope="module")
def collector():
    with OtlpCollector() as running:
        yield running


@pytest.fixture(scope="module")
def operator(cluster, crds, kubectl, e2b, tmp_path_factory, collector):
    """This module's operator, traced: the standard variables only (no flag of ours)."""
    process = OperatorProcess(cluster.kubeconfig, e2b.env, tmp_path_factory.mktemp("operator") / "operator.log",
                              *FAST_OPERATOR_ARGS, env={
                                  "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SERVICE_NAME": SERVICE,
                                  "OTEL_BSP_SCHEDULE_DELAY": "200"}).start()
    yield process
    stop_after_finalizing(process, kubectl)


def test_the_task_command_continues_the_run_trace_the_operator_exports(kubectl, namespace, operator, collector,
                                                                      agent_repo):
    kubectl.apply(agent_manifest("traced", namespace, agent_repo.url,
                                 query={"command": "printf '%s' \"$TRACEPARENT\""}))
    wait_ready(kubectl, "traced", namespace)
    kubectl.apply(task_manifest("followed", namespace, "where does it go", agent="traced"))
    task = finished(kubectl, "followed", namespace)
    assert task["status"]["phase"] == "Succeeded", task["status"]
    version, trace_id, span_id, _flags = task["status"]["output"].split("-")
    assert version == "00"

    def run_span():
        return [s for s in collector.spans if s.name == "AgentTask run" and s.span_id == span_id]
    run, = eventually(run_span, 30, what="the run's span at the collector")
    assert run.trace_id == trace_id and run.service == SERVICE
    assert run.attributes["remoteagents.task"] == "followed" and run.attributes["remoteagents.agent"] == "traced"
    # The start of the run's command in the sandbox is an E2B span of the same trace, under the run.
    assert any(s.name == "e2b command" and s.trace_id == trace_id and s.parent_span_id == span_id
               for s in collector.spans), [s for s in collector.spans if s.trace_id == trace_id]
    # The agent's reconciles and their E2B calls (create, commands) are traced too.
    reconciles = [s for s in collector.spans if s.name == "reconcile RemoteAgent"
                  and s.attributes.get("remoteagents.name") == "traced"]
    assert reconciles
    traces = {s.trace_id for s in reconciles}
    assert any(s.name == "e2b create" and s.trace_id in traces for s in collector.spans)
