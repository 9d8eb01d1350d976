"""The Argo CD health checks (Lua 5.1, as Argo CD runs them) against every state of our conditions."""

import pytest

from remote_agents.deploy import argocd
from tests.support.argocd_health import health


def _conditions(ready="True", reconciling="False", stalled="False", reason="Ready", message="m", generation=1):
    return [{"type": kind, "status": status, "reason": reason, "message": message,
             "observedGeneration": generation}
            for kind, status in (("Ready", ready), ("Reconciling", reconciling), ("Stalled", stalled))]


def _object(kind, conditions=None, paused=False, generation=1, phase=None):
    status = {}
    if conditions is not None:
        status["conditions"] = conditions
    if phase:
        status["phase"] = phase
    return {"kind": kind, "metadata": {"name": "x", "generation": generation},
            "spec": {"paused": paused}, "status": status}


@pytest.mark.parametrize("kind", ["RemoteAgent", "AgentPool"])
@pytest.mark.parametrize("conditions, paused, generation, expected, message", [
    (None, False, 1, "Progressing", "Waiting for the operator to observe generation 1"),
    (_conditions(), False, 2, "Progressing", "Waiting for the operator to observe generation 2"),
    (_conditions(reason="Ready", message="sandbox is running"), False, 1, "Healthy", "Ready: sandbox is running"),
    (_conditions(ready="False", reconciling="True", reason="Creating", message="creating the sandbox"),
     False, 1, "Progressing", "Creating: creating the sandbox"),
    (_conditions(ready="False", stalled="True", reason="RefNotFound", message="no ref nope"),
     False, 1, "Degraded", "RefNotFound: no ref nope"),
    # A stuck object is Degraded even while paused; a pause still being carried out is Progressing.
    (_conditions(ready="False", stalled="True", reason="SecretNotFound"), True, 1, "Degraded", "SecretNotFound: m"),
    (_conditions(ready="False", reconciling="True", reason="Pausing"), True, 1, "Progressing", "Pausing: m"),
    (_conditions(reason="Paused", message="sandbox is paused (spec.paused)"), True, 1, "Suspended",
     "Paused: sandbox is paused (spec.paused)"),
    # Paused by the operator while idle (spec.paused false) is healthy: the next task resumes it.
    (_conditions(reason="IdlePaused", message=""), False, 1, "Healthy", "IdlePaused"),
    (_conditions(ready="False", reason="Broken"), False, 1, "Degraded", "Broken: m"),
    (_conditions(ready="Unknown", reason="Unknown"), False, 1, "Progressing", "Unknown: m"),
])
def test_reconciled_kinds(kind, conditions, paused, generation, expected, message):
    assert health(_object(kind, conditions, paused, generation)) == {"status": expected, "message": message}


@pytest.mark.parametrize("phase, conditions, expected, message", [
    (None, None, "Progressing", "Pending"),
    ("Pending", _conditions(ready="False", reconciling="True", reason="NoAgentFree", message="2 busy"),
     "Progressing", "NoAgentFree: 2 busy"),
    ("Running", _conditions(ready="False", reconciling="True", reason="Running", message="running on a"),
     "Progressing", "Running: running on a"),
    ("Succeeded", _conditions(reason="Succeeded", message="exit code 0"), "Healthy", "Succeeded: exit code 0"),
    ("Failed", _conditions(stalled="True", reason="DeadlineExceeded", message="ran 5s"), "Degraded",
     "DeadlineExceeded: ran 5s"),
])
def test_tasks_follow_their_phase(phase, conditions, expected, message):
    assert health(_object("AgentTask", conditions, phase=phase)) == {"status": expected, "message": message}


def test_checks_are_keyed_as_argo_cd_looks_them_up():
    data = argocd.config_map_patch()["data"]
    assert set(data) == {"resource.customizations.health.remoteagents.io_RemoteAgent",
                         "resource.customizations.health.remoteagents.io_AgentPool",
                         "resource.customizations.health.remoteagents.io_AgentTask"}
    assert all(script.rstrip().endswith("return hs") for script in data.values())
