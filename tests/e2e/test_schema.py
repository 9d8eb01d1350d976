"""The CRD schemas as kubectl users meet them: explain, wide output, validated timestamps."""

import json

from remote_agents.api import models
from tests.support.kubectl import eventually


def _explain(kubectl, path: str) -> str:
    # The API server publishes a new CRD's OpenAPI a moment after it is Established.
    return eventually(lambda: kubectl.run("explain", path, check=False).stdout, timeout=60,
                      what=f"kubectl explain {path}")


def test_explain_shows_the_models_descriptions(kubectl, crds):
    # kubectl wraps long lines: compare with whitespace collapsed.
    spec = " ".join(_explain(kubectl, "remoteagent.spec").split())
    assert models.RemoteAgentSpec.__doc__ in spec
    for field in ("paused", "idle_pause_seconds", "deletion_policy", "max_concurrent_tasks"):
        assert models.RemoteAgentSpec.model_fields[field].description in spec, field
    assert models.Source.__doc__ in " ".join(_explain(kubectl, "remoteagent.spec.source").split())
    task = " ".join(_explain(kubectl, "agenttask.spec.query").split())
    assert "The question, handed to the agent's query command" in task
    phase = " ".join(_explain(kubectl, "agenttask.status.phase").split())
    assert "Pending (queued), Running, Succeeded or Failed." in phase


def test_conditions_are_a_map_and_times_are_checked_by_the_api_server(kubectl, crds, namespace):
    kubectl.apply(json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "RemoteAgent",
                              "metadata": {"name": "schema", "namespace": namespace},
                              "spec": {"source": {"repo": "owner/name"}}}))
    explained = _explain(kubectl, "remoteagent.status.conditions.lastTransitionTime")
    assert "<string>" in explained and "RFC 3339" in explained

    def patch_status(time: str):
        body = {"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": time}]}}
        return kubectl.run("patch", "remoteagent", "schema", "-n", namespace, "--subresource=status",
                           "--type=merge", "-p", json.dumps(body), check=False)

    refused = patch_status("yesterday")
    assert refused.returncode != 0 and "date-time" in refused.stderr
    assert patch_status("2030-01-01T00:00:00Z").returncode == 0
    duplicate = {"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Ready", "status": "True"}]}}
    refused = kubectl.run("patch", "remoteagent", "schema", "-n", namespace, "--subresource=status",
                          "--type=merge", "-p", json.dumps(duplicate), check=False)
    assert refused.returncode != 0 and "Duplicate value" in refused.stderr


def test_wide_output_adds_the_ready_message(kubectl, crds, namespace):
    kubectl.apply(json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "AgentTask",
                              "metadata": {"name": "columns", "namespace": namespace},
                              "spec": {"query": "q", "poolRef": {"name": "none"}}}))
    kubectl.run("patch", "agenttask", "columns", "-n", namespace, "--subresource=status", "--type=merge", "-p",
                json.dumps({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "PoolMissing",
                                                       "message": "no such pool"}]}}))
    default = kubectl.run("get", "agenttask", "columns", "-n", namespace).stdout.splitlines()
    assert default[0].split() == ["NAME", "PHASE", "AGENT", "DURATION", "REASON", "AGE"]
    assert "PoolMissing" in default[1].split()
    wide = kubectl.run("get", "agenttask", "columns", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-1] == "MESSAGE" and wide[1].endswith("no such pool")

