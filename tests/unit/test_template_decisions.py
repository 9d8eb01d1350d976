"""controller/templates/decide.py and the template side of agents/ and pools/ decisions: when to
build, what a build's state means, what goes into the content hash, and when an agent's sandbox
may be replaced for its template's new build."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from remote_agents.api.models import AgentPoolSpec, E2BTemplateSpec, RemoteAgentSpec
from remote_agents.api.names import SANDBOX_CONFIG_KEY, SANDBOX_TEMPLATE_KEY
from remote_agents.controller.agents import decide as agents
from remote_agents.controller.pools import decide as pools
from remote_agents.controller.sandboxes import ObservedSandbox
from remote_agents.controller.templates import decide
from remote_agents.controller.templates.users import TemplateUsers

BUILDING = {"phase": "Building", "contentHash": "c1", "templateID": "t", "buildID": "b1"}


@pytest.mark.parametrize("status, following, expected", [
    ({}, False, decide.StartBuild("c1")),
    ({**BUILDING, "contentHash": "c0"}, False, decide.StartBuild("c1")),  # content changed mid-build
    (BUILDING, False, decide.FollowBuild("t", "b1")),  # after a restart: follow the recorded build
    (BUILDING, True, None),
    ({**BUILDING, "phase": "Ready"}, False, None),
    ({**BUILDING, "phase": "Failed"}, False, None),  # not retried for the same content
    ({"phase": "Failed", "contentHash": "c1"}, False, None),  # refused at request: no build id, still no retry
    ({**BUILDING, "phase": "Failed", "contentHash": "c0"}, False, decide.StartBuild("c1")),  # retried on change
    ({"contentHash": "c1"}, False, decide.StartBuild("c1")),  # recorded content, never started
], ids=["new", "changed-while-building", "building-unfollowed", "building-followed", "ready", "failed",
        "refused", "failed-then-changed", "not-started"])
def test_when_to_build(status, following, expected):
    assert decide.plan_template("c1", status, following) == expected


@pytest.mark.parametrize("state, phase, reason, stalled", [
    ("building", "Building", "Building", False),
    ("waiting", "Building", "Building", False),
    ("ready", "Ready", "BuildSucceeded", False),
    ("error", "Failed", "BuildFailed", True),
])
def test_a_builds_state_gives_phase_and_conditions(state, phase, reason, stalled):
    got_phase, outcome = decide.outcome_of(decide.BuildProgress(state=state, reason="exit 1", step="2"))
    assert (got_phase, outcome.reason, outcome.stalled, outcome.ready) == (phase, reason, stalled, state == "ready")
    if state == "error":
        assert "step 2" in outcome.message and "exit 1" in outcome.message


SPEC = E2BTemplateSpec.model_validate({"steps": [
    {"copy": {"git": {"repo": "file:///r", "ref": "main", "path": "app"}, "to": "/home/user/app"}},
    {"copy": {"configMapRef": {"name": "cm"}, "to": "/etc/agent"}},
    {"run": {"command": "make"}}]})


def test_the_content_hash_covers_spec_commits_and_config_map_contents():
    base = decide.content_hash(SPEC, {0: "a" * 40}, {1: {"conf": "x"}})
    assert base == decide.content_hash(SPEC, {0: "a" * 40}, {1: {"conf": "x"}})
    others = [decide.content_hash(SPEC, {0: "b" * 40}, {1: {"conf": "x"}}),
              decide.content_hash(SPEC, {0: "a" * 40}, {1: {"conf": "y"}}),
              decide.content_hash(E2BTemplateSpec.model_validate({**SPEC.model_dump(by_alias=True), "cpuCount": 4}),
                                  {0: "a" * 40}, {1: {"conf": "x"}})]
    assert base not in others and len(set(others)) == 3
    orphaning = E2BTemplateSpec.model_validate({**SPEC.model_dump(by_alias=True), "deletionPolicy": "Orphan"})
    assert decide.content_hash(orphaning, {0: "a" * 40}, {1: {"conf": "x"}}) == base  # builds nothing new


def test_the_recipe_maps_steps_in_order_with_copies_from_their_context_directories():
    recipe = decide.recipe(SPEC)
    assert recipe.instructions == [decide.CopyFiles("step-0/app", "/home/user/app"),
                                   decide.CopyFiles("step-1", "/etc/agent"), decide.RunCommand("make")]
    assert (recipe.from_image, recipe.from_template) == (decide.DEFAULT_BASE_IMAGE, None)
    assert decide.recipe(E2BTemplateSpec.model_validate({"base": {"fromTemplate": "code"}})).from_image is None


@pytest.mark.parametrize("items, expected", [
    (None, {"a": "1", "b": "2"}),
    ([("a", "dir/a.txt")], {"dir/a.txt": "1"}),
    ([("missing", "x")], None),
])
def test_config_map_files(items, expected):
    assert decide.config_map_files({"a": "1", "b": "2"}, items) == expected


def test_the_log_tail_is_bounded_and_starts_at_a_line():
    tail = decide.log_tail("", [f"line {i}" for i in range(1000)], limit=100)
    assert len(tail) <= 100 and tail.startswith("line ") and tail.endswith("line 999\n")


# ---- agents of a template -------------------------------------------------------------------------
AGENT = RemoteAgentSpec.model_validate({"source": {"repo": "file:///r", "ref": "a" * 40}, "templateRef": {"name": "t"}})


def sandbox(content: str | None) -> ObservedSandbox:
    now = datetime.now(timezone.utc)
    metadata = {SANDBOX_CONFIG_KEY: agents.config_hash(AGENT), **({SANDBOX_TEMPLATE_KEY: content} if content else {})}
    return ObservedSandbox("sb-1", "running", metadata, now, now)


def ready_template(content: str = "c2") -> dict:
    return {"status": {"templateID": "tpl-1", "readyContentHash": content, "phase": "Ready",
                       "conditions": [{"type": "Ready", "status": "True"}]}}


@pytest.mark.parametrize("template, may_replace, sandboxes, expected", [
    (None, True, [], []),  # the template does not exist: nothing is created
    ({"status": {"phase": "Building", "templateID": "tpl-1"}}, True, [], []),  # first build not done yet
    (ready_template(), True, [], ["Create", "Checkout"]),
    (ready_template("c1"), True, [sandbox("c1")], []),  # up to date
    (ready_template(), True, [sandbox("c1")], ["Kill:TemplateChanged", "Create", "Checkout"]),
    (ready_template(), False, [sandbox("c1")], []),  # busy or pooled: kept
    (None, True, [sandbox("c1")], []),  # template deleted: never killed on a guess
    ({"status": {"phase": "Failed", "templateID": "tpl-1", "readyContentHash": "c2",
                 "conditions": [{"type": "Ready", "status": "False"}]}}, True, [sandbox("c2")], []),
], ids=["missing", "not-built", "ready", "current", "changed-idle", "changed-busy", "deleted", "rebuild-failed"])
def test_an_agent_follows_its_templates_ready_build(template, may_replace, sandboxes, expected):
    state = agents.template_state(template, "t", may_replace)
    plan = agents.plan_agent(uid="u", spec=AGENT, recorded_sandbox_id="sb-1" if sandboxes else None,
                             recorded_revision="a" * 40 if sandboxes else None, sandboxes=sandboxes,
                             target_revision="a" * 40, template=state)
    names = [type(a).__name__ + (f":{a.reason}" if isinstance(a, agents.Kill) else "") for a in plan.actions]
    assert names == expected


def test_a_missing_or_unready_template_says_why():
    assert agents.template_state(None, "t", True).problem[0] == "TemplateNotFound"
    assert agents.template_state({"status": {"phase": "Building"}}, "t", True).problem[0] == "TemplateNotReady"
    assert agents.template_state(ready_template(), "t", True).problem is None


def test_the_agent_config_hash_is_unchanged_without_a_template_ref():
    plain = RemoteAgentSpec.model_validate({"source": {"repo": "file:///r"}})
    assert agents.config_hash(plain) != agents.config_hash(AGENT)
    assert agents.config_hash(plain) == "11392aafdfe25c0c"  # as before templateRef existed


# ---- pools of a template ----------------------------------------------------------------------------
POOL = AgentPoolSpec.model_validate({"replicas": 2, "template": {"spec": AGENT.model_dump(by_alias=True)}})


def child(name: str, template_hash: str) -> pools.Child:
    return pools.Child(name, template_hash, "a" * 40, False, True, False, 0, f"2026-01-01T00:00:0{name[-1]}Z")


def test_a_pool_rolls_when_its_templates_ready_build_changes_and_holds_without_one():
    old, new = pools.template_hash(POOL, "c1"), pools.template_hash(POOL, "c2")
    assert old != new
    children = [child("p-0", old), child("p-1", old)]
    assert pools.plan_pool("p", POOL, children, "c1").delete == []
    assert pools.plan_pool("p", POOL, children, "c2").delete == ["p-0"]  # maxUnavailable 1
    assert pools.plan_pool("p", POOL, children, None).delete == []  # no Ready build: nothing to roll to


def test_template_users_tell_only_of_what_changed_for_users():
    users = TemplateUsers()
    agent = {"metadata": {"namespace": "ns", "name": "a"}, "spec": {"templateRef": {"name": "t"}}}
    users.agent_changed(None, agent)
    users.pool_seen("ns", "p", "t")
    template = {"metadata": {"namespace": "ns", "name": "t"}, "status": {"phase": "Building"}}
    assert users.template_changed(None, template) is None  # listed at start
    assert users.template_changed("MODIFIED", template) is None  # nothing new for its users
    template["status"] = {"phase": "Ready", "templateID": "x", "readyContentHash": "c1"}
    assert users.template_changed("MODIFIED", template) == (["a"], ["p"])
    users.agent_changed("DELETED", agent)
    assert users.template_changed("DELETED", template) == ([], ["p"])


def test_the_pool_template_hash_is_unchanged_without_a_template_ref():
    plain = AgentPoolSpec.model_validate({"replicas": 1, "template": {"spec": {"source": {"repo": "x"},
                                                                               "env": [{"name": "A", "value": "1"}]}}})
    assert pools.template_hash(plain) == "94173308b0"  # as before templateRef existed: no rollout on upgrade
