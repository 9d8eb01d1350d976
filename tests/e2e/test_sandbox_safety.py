"""A sandbox someone keeps is never killed, and one the operator owns never leaked: an agent whose
stored spec no longer parses keeps its sandbox; a deletion reaches the sandbox only with the
agent's own E2B key, waiting (with a Warning) while that key cannot be read."""

from __future__ import annotations

import json

from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.kubectl import eventually
from tests.support.sandbox_safety import (
    condition, events, lists_made, max_tasks_unbounded, store_unchecked, swept,
)

KEY_PROTECTION = "remoteagents.io/e2b-key-protection"


def test_an_agent_whose_stored_spec_no_longer_parses_keeps_its_sandbox(kubectl, namespace, operator, e2b_client,
                                                                        agent_repo):
    kubectl.apply(agent_manifest("legacy", namespace, agent_repo.url))
    agent = wait_ready(kubectl, "legacy", namespace)
    uid, sandbox_id = agent["metadata"]["uid"], agent["status"]["sandboxID"]

    # Stored while the schema allowed it; the constraint is back before the operator looks again.
    with max_tasks_unbounded(kubectl):
        store_unchecked(kubectl, "patch", "ra", "legacy", "-n", namespace, "--type=merge", "-p",
                        '{"spec":{"maxConcurrentTasks":100}}')

    stalled = eventually(lambda: condition(kubectl, "legacy", namespace, "Stalled"), 60, what="Stalled InvalidSpec")
    assert stalled["reason"] == "InvalidSpec" and "spec.maxConcurrentTasks" in stalled["message"], stalled
    warnings = [e for e in events(kubectl, namespace, "legacy") if e["type"] == "Warning"]
    assert any(e["reason"] == "InvalidSpec" and "spec.maxConcurrentTasks" in e["message"] for e in warnings)

    swept(operator, since=lists_made(operator.metrics_url))  # the orphan sweep has had every chance to take it for an orphan
    assert [s.sandbox_id for s in e2b_client.by_uid(uid)] == [sandbox_id]
    assert "killing orphaned sandbox" not in operator.log()

    # It can still be deleted, and its sandbox goes with it.
    kubectl.run("delete", "ra", "legacy", "-n", namespace, "--timeout=90s", timeout=100)
    assert e2b_client.by_uid(uid) == []


def test_deleting_an_agent_reaches_its_sandbox_with_its_own_key_only(kubectl, namespace, operator, e2b, e2b_client,
                                                                      agent_repo):
    kubectl.run("create", "secret", "generic", "tenant-e2b", "-n", namespace,
                f"--from-literal=apiKey={e2b.env['E2B_API_KEY']}")
    for name in ("tenant", "second"):
        kubectl.apply(agent_manifest(name, namespace, agent_repo.url,
                                     e2bApiKeySecretRef={"name": "tenant-e2b", "key": "apiKey"}))
    agents = {name: wait_ready(kubectl, name, namespace) for name in ("tenant", "second")}

    # The key is protected while agents use it: deleting it (as namespace deletion does first)
    # leaves it readable until the last of them has been deleted with it.
    assert KEY_PROTECTION in (kubectl.get("secret", "tenant-e2b", namespace)["metadata"].get("finalizers") or [])
    kubectl.run("delete", "secret", "tenant-e2b", "-n", namespace, "--wait=false")
    kubectl.run("delete", "ra", "tenant", "-n", namespace, "--timeout=90s", timeout=100)
    assert e2b_client.by_uid(agents["tenant"]["metadata"]["uid"]) == []
    assert kubectl.get("secret", "tenant-e2b", namespace)["metadata"].get("deletionTimestamp")

    # A key that cannot be read (its protection taken off by hand, then the Secret gone): the
    # deletion waits with a Warning naming it, the sandbox stays, and it never tries another account.
    kubectl.run("patch", "secret", "tenant-e2b", "-n", namespace, "--type=json", "-p",
                json.dumps([{"op": "remove", "path": "/metadata/finalizers"}]))
    eventually(lambda: kubectl.get("secret", "tenant-e2b", namespace) is None, 30, what="the key Secret to go")
    kubectl.run("delete", "ra", "second", "-n", namespace, "--wait=false")
    uid, sandbox_id = agents["second"]["metadata"]["uid"], agents["second"]["status"]["sandboxID"]

    def blocked() -> dict | None:
        return next((e for e in events(kubectl, namespace, "second")
                     if e["type"] == "Warning" and e["reason"] == "E2BKeyMissing"), None)
    assert "tenant-e2b" in eventually(blocked, 60, what="a Warning that the key is missing")["message"]
    assert kubectl.get("ra", "second", namespace) is not None
    assert [s.sandbox_id for s in e2b_client.by_uid(uid)] == [sandbox_id]

    # The key back: the deletion finishes, sandbox and all.
    kubectl.run("create", "secret", "generic", "tenant-e2b", "-n", namespace,
                f"--from-literal=apiKey={e2b.env['E2B_API_KEY']}")
    eventually(lambda: kubectl.get("ra", "second", namespace) is None, 180, what="the deletion to finish")
    assert e2b_client.by_uid(uid) == []
    eventually(lambda: kubectl.get("secret", "tenant-e2b", namespace) is not None and KEY_PROTECTION not in (
        kubectl.get("secret", "tenant-e2b", namespace)["metadata"].get("finalizers") or []), 30,
        what="the key's protection lifted once no agent uses it")


def test_an_agent_whose_key_e2b_rejects_is_deleted_when_it_never_had_a_sandbox(kubectl, namespace, operator,
                                                                              agent_repo):
    kubectl.run("create", "secret", "generic", "e2b", "-n", namespace, "--from-literal=apiKey=e2b_wrong_key")
    kubectl.apply(agent_manifest("rejected", namespace, agent_repo.url,
                                 e2bApiKeySecretRef={"name": "e2b", "key": "apiKey"}))
    assert eventually(lambda: condition(kubectl, "rejected", namespace, "Stalled"), 60,
                      what="Stalled")["reason"] == "E2BAuthFailed"
    kubectl.run("delete", "ra", "rejected", "-n", namespace, "--timeout=90s", timeout=100)
    assert any(e["reason"] == "E2BAuthFailed" and "nothing to delete" in e["message"]
               for e in events(kubectl, namespace, "rejected"))
