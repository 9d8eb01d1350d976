"""The rules that keep the operator from killing a sandbox someone keeps or leaking one it owns."""

from datetime import datetime, timezone

import pytest

from remote_agents.api.names import SANDBOX_NAMESPACE_KEY, SANDBOX_UID_KEY
from remote_agents.controller.agents import decide
from remote_agents.controller.sandboxes import ObservedSandbox

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def tagged(namespace: str | None) -> ObservedSandbox:
    metadata = {SANDBOX_UID_KEY: "u-1", **({SANDBOX_NAMESPACE_KEY: namespace} if namespace else {})}
    return ObservedSandbox("sb-1", "running", metadata, T0, T0)


@pytest.mark.parametrize("namespaces, sandbox_namespace, served", [
    ((), "a", True),  # cluster-wide: every sandbox of the cluster
    ((), None, True),
    (("a",), "a", True),
    (("a",), "b", False),  # another instance's
    (("a", "b"), "b", True),
    (("a",), None, False),  # untagged: only a cluster-wide instance judges it
    (("a",), "", False),
])
def test_an_instance_judges_only_the_sandboxes_of_namespaces_it_serves(namespaces, sandbox_namespace, served):
    assert decide.serves(namespaces, tagged(sandbox_namespace)) is served


@pytest.mark.parametrize("raw, problem_names", [
    ({"source": {"repo": "r"}, "maxConcurrentTasks": 100}, "spec.maxConcurrentTasks"),
    ({"source": {"repo": "r"}, "env": [{"name": "1BAD", "value": "v"}]}, "spec.env[0].name"),
    ({"template": "base"}, "spec.source"),
])
def test_an_unparseable_spec_is_reported_naming_the_field(raw, problem_names):
    spec, problem = decide.parse_spec(raw)
    assert spec is None and problem.startswith(problem_names)


def test_a_valid_spec_parses_without_a_problem():
    spec, problem = decide.parse_spec({"source": {"repo": "r"}})
    assert spec is not None and spec.source.repo == "r" and problem is None


def view(name: str, secret: str | None, namespace: str = "ns") -> decide.AgentView:
    return decide.AgentView(uid=name, namespace=namespace, name=name, paused=False, sandbox_id=None, revision=None,
                            repo="r", ref="main", config_hash="h", timeout_seconds=3600,
                            own_api_key=secret is not None, deleting=False, e2b_key_secret=secret)


@pytest.mark.parametrize("gone, now, others, unprotect", [
    (view("a", "key"), None, [], ("ns", "key")),  # the last user is deleted
    (view("a", "key"), None, [view("b", "key")], None),  # another agent still uses it
    (view("a", "key"), None, [view("b", "key", namespace="other")], ("ns", "key")),  # same name elsewhere
    (view("a", "key"), view("a", "key"), [], None),  # modified, same key
    (view("a", "key"), view("a", "new-key"), [], ("ns", "key")),  # switched keys
    (view("a", None), None, [], None),  # used the operator's key
    (None, view("a", "key"), [], None),  # first seen
])
def test_a_key_secret_is_unprotected_once_no_agent_uses_it(gone, now, others, unprotect):
    assert decide.unreferenced_key_secret(gone, now, others) == unprotect


def test_a_key_secret_an_e2b_template_names_is_in_use_without_any_agent():
    assert decide.key_secret_in_use(("ns", "key"), [], templates={("ns", "key")})
    assert not decide.key_secret_in_use(("ns", "key"), [view("b", "other")], templates={("other-ns", "key")})
    assert decide.key_secret_in_use(("ns", "key"), [view("b", "key")])


@pytest.mark.parametrize("raw, policy", [
    ({"deletionPolicy": "Delete"}, "Delete"),
    ({}, "Delete"),
    ({"deletionPolicy": "Orphan"}, "Orphan"),
    ({"deletionPolicy": "Keep"}, "Orphan"),  # a value this operator does not know: keep the sandbox
    ("garbage", "Delete"),
])
def test_deletion_policy_is_read_leniently(raw, policy):
    assert decide.deletion_policy_of(raw) == policy


@pytest.mark.parametrize("raw, ref", [
    ({}, None),
    ({"e2bApiKeySecretRef": {"name": "e2b", "key": "apiKey", "optional": "yes?"}}, ("e2b", "apiKey")),
    ({"e2bApiKeySecretRef": {"name": "e2b"}}, ("e2b", "")),
    ({"e2bApiKeySecretRef": "e2b"}, ("", "")),  # named but unreadable: treated as missing, never as none
])
def test_key_secret_is_read_leniently(raw, ref):
    assert decide.key_secret_of(raw) == ref


def test_a_blocked_deletion_backs_off_up_to_a_bound():
    delays = [decide.deletion_retry_delay(attempt, 10, 300) for attempt in range(7)]
    assert delays == [10, 20, 40, 80, 160, 300, 300]


def test_an_agent_whose_spec_does_not_parse_shows_no_drift():
    invalid = decide.AgentView(uid="u-1", namespace="ns", name="a", paused=True, sandbox_id="sb-1", revision=None,
                               repo="", ref="", config_hash="", timeout_seconds=0, own_api_key=False, deleting=False,
                               invalid_spec="spec.maxConcurrentTasks: too big")
    assert decide.drift(invalid, []) is None
