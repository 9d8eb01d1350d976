"""TemplateReconciler and the agents and pools of an E2BTemplate, on the fakes: a template is built
once per content (git commit and ConfigMap contents included), followed to its end (after a
restart too), a failed build is Stalled until the content changes; agents wait for a Ready build,
start from it, and roll to a new one only as allowed; deleting one deletes its E2B template in its
own account (deletionPolicy Orphan: leaves it), retried until E2B did, and kills nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from remote_agents.api.names import (
    AGENTS, API_VERSION, FINALIZER, KEY_PROTECTION_FINALIZER, POOL_LABEL, RECONCILE_REQUEST_ANNOTATION,
    SANDBOX_TEMPLATE_KEY, TEMPLATES,
)
from remote_agents.controller.clients.e2b import E2BRejected, E2BUnavailable
from remote_agents.controller.retry import RetryLater
from remote_agents.controller.templates import reconcile as template_reconcile
from tests.support.fake_e2b import Program
from tests.support.world import NAMESPACE, World, agent_spec

BAKED = "/home/user/baked/answer.txt"
CONFIG_STEP = {"copy": {"configMapRef": {"name": "files"}, "to": "/home/user/baked"}}


async def create_template(world: World, name: str = "t", **spec) -> None:
    await world.kube.create(TEMPLATES, NAMESPACE, {"apiVersion": API_VERSION, "kind": "E2BTemplate",
                                                   "metadata": {"name": name},
                                                   "spec": {"steps": [CONFIG_STEP], **spec}})
    await world.kube.flush()


def template(world: World, name: str = "t") -> dict:
    return world.kube.object(TEMPLATES, NAMESPACE, name)


async def reconcile_template(world: World, name: str = "t") -> None:
    await world.operator.templates.reconcile(template(world, name))
    await world.kube.flush()


def condition(body: dict, kind: str) -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


async def built(world: World, name: str = "t") -> dict:
    """Finish the build in progress and wait until the template says Ready."""
    world.e2b.templates.finish()
    await world.eventually(lambda: world.status(name, TEMPLATES).get("phase") == "Ready", "the template is Ready")
    await world.kube.flush()
    return template(world, name)


def set_files(world: World, text: str) -> None:
    world.kube._store("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "data": {"answer.txt": text},
                                     "metadata": {"name": "files", "namespace": NAMESPACE}})


@pytest.fixture
def files(world):
    set_files(world, "42\n")


@pytest.fixture(autouse=True)
def quick_follow(monkeypatch):
    monkeypatch.setattr(template_reconcile, "POLL_SECONDS", 0.01)


async def test_a_template_is_built_once_and_reports_its_build(world, files):
    await create_template(world, steps=[CONFIG_STEP, {"run": {"command": "make"}}])
    await reconcile_template(world)
    status = world.status("t", TEMPLATES)
    build = world.e2b.templates.latest()
    assert (status["phase"], status["templateID"], status["buildID"]) == ("Building", build.template_id, build.build_id)
    assert build.files == {BAKED: "42\n"}
    assert condition(template(world), "Reconciling")["status"] == "True"
    await reconcile_template(world)  # again, while it builds: followed already, not built twice
    body = await built(world)
    assert len(world.e2b.templates.builds) == 1
    assert body["status"]["readyContentHash"] == body["status"]["contentHash"]
    assert "build ready" in body["status"]["buildLog"]
    assert condition(body, "Ready")["status"] == "True"
    assert world.events.reasons("t") == ["BuildStarted", "BuildSucceeded"]


async def test_a_failed_build_is_stalled_with_its_reason_and_retried_only_on_change(world, files):
    world.e2b.templates.failing.add("exit 3")
    await create_template(world, steps=[CONFIG_STEP, {"run": {"command": "exit 3"}}])
    await reconcile_template(world)
    await world.eventually(lambda: world.status("t", TEMPLATES).get("phase") == "Failed", "the build fails")
    stalled = condition(template(world), "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "BuildFailed")
    assert "exit 3" in stalled["message"] and "step 2" in stalled["message"]
    assert world.events.reasons("t")[-1] == "BuildFailed"
    await reconcile_template(world)  # a retry of the handler, or the periodic look: the same content
    assert len(world.e2b.templates.builds) == 1
    set_files(world, "43\n")  # new content: built again
    await reconcile_template(world)
    assert len(world.e2b.templates.builds) == 2
    assert world.e2b.templates.latest().files == {BAKED: "43\n"}


async def test_a_missing_config_map_is_stalled_naming_the_step(world):
    await create_template(world)
    with pytest.raises(RetryLater):
        await reconcile_template(world)
    stalled = condition(template(world), "Stalled")
    assert stalled["reason"] == "ConfigMapNotFound" and "steps[0].copy.configMapRef" in stalled["message"]
    assert world.e2b.templates.builds == []


def git_repo(path: Path, files: dict[str, str]) -> str:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    return commit(path, files)


def commit(path: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "files"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


async def test_git_files_come_from_the_resolved_commit_and_a_moved_branch_rebuilds(world, tmp_path):
    repo = tmp_path / "repo"
    git_repo(repo, {"app/run.sh": "echo one\n", "other.txt": "not copied\n"})
    world.kube.add_secret(NAMESPACE, "git", {"token": "s3cret-token"})
    step = {"copy": {"git": {"repo": f"file://{repo}", "ref": "main", "path": "app",
                             "credentialsSecretRef": {"name": "git", "key": "token"}}, "to": "/home/user/app"}}
    await create_template(world, steps=[step])
    await reconcile_template(world)
    assert world.e2b.templates.latest().files == {"/home/user/app/run.sh": "echo one\n"}
    await built(world)
    commit(repo, {"app/run.sh": "echo two\n"})
    await reconcile_template(world)  # what the periodic look does
    assert world.e2b.templates.latest().files == {"/home/user/app/run.sh": "echo two\n"}
    everything = str(template(world)) + str(world.events.events) + str(world.e2b.templates.builds)
    assert "s3cret-token" not in everything


async def test_a_restart_follows_the_recorded_build_instead_of_building_again(world, files):
    await create_template(world)
    await reconcile_template(world)
    await world.restart()
    await reconcile_template(world)  # Kopf's resume
    body = await built(world)
    assert len(world.e2b.templates.builds) == 1 and body["status"]["phase"] == "Ready"


# ---- deleting a template ---------------------------------------------------------------------------
async def delete_template(world: World, name: str = "t", body: dict | None = None, attempt: int = 0) -> None:
    """kubectl delete, then Kopf's delete handler (with `body`, Kopf's copy, when given) and the
    finalizer's removal, which a failing handler prevents."""
    await world.kube.patch(TEMPLATES, NAMESPACE, name, {"metadata": {"finalizers": [FINALIZER]}})
    await world.kube.delete(TEMPLATES, NAMESPACE, name)
    await world.operator.templates.delete(body or template(world, name), attempt)
    await world.kube.patch(TEMPLATES, NAMESPACE, name, {"metadata": {"finalizers": None}})
    await world.kube.flush()


async def test_deleting_a_template_deletes_its_e2b_template_in_its_account_and_kills_nothing(world, files):
    world.kube.add_secret(NAMESPACE, "e2b", {"key": "e2b_team_key"})
    await create_template(world, e2bApiKeySecretRef={"name": "e2b", "key": "key"})
    await reconcile_template(world)
    template_id = (await built(world))["status"]["templateID"]
    await world.ready_agent("a", templateRef={"name": "t"}, e2bApiKeySecretRef={"name": "e2b", "key": "key"})
    await delete_template(world)
    assert template(world) is None
    assert world.e2b.templates.deleted == [template_id]  # with the operator's key it would find nothing
    assert world.events.reasons("t")[-1] == "TemplateDeleted"
    assert world.e2b.killed == [] and world.status("a")["sandboxID"] in world.e2b.sandboxes


def key_protected(world: World) -> bool:
    return KEY_PROTECTION_FINALIZER in (world.kube.object("secrets", NAMESPACE, "e2b")["metadata"].get("finalizers")
                                        or [])


async def test_a_templates_e2b_key_stays_protected_while_anything_uses_it_and_is_let_go_after(world, files):
    world.kube.add_secret(NAMESPACE, "e2b", {"key": "e2b_team_key"})
    key = {"name": "e2b", "key": "key"}
    await create_template(world, e2bApiKeySecretRef=key)
    await reconcile_template(world)
    await built(world)
    assert key_protected(world)  # the build read it: its deletion will need it
    await world.ready_agent("a", e2bApiKeySecretRef=key)
    await world.delete_agent("a")
    fleet = world.operator.fleet
    await world.eventually(lambda: all(job.done() for job in fleet._background), "the agent's release looked")
    assert key_protected(world)  # the template still names it

    await delete_template(world)
    await world.eventually(lambda: not key_protected(world), "the key let go with its last user")


async def test_an_orphaned_or_never_built_template_leaves_e2b_alone(world, files):
    await create_template(world, deletionPolicy="Orphan")
    await reconcile_template(world)
    await built(world)
    await create_template(world, "unbuilt")
    await delete_template(world)
    await delete_template(world, "unbuilt")
    assert template(world) is None and template(world, "unbuilt") is None
    assert world.e2b.templates.deleted == []
    assert world.events.reasons("t")[-1] == "TemplateOrphaned" and world.events.reasons("unbuilt") == []


async def test_a_build_in_flight_stops_and_its_template_is_deleted_even_from_a_stale_body(world, files):
    await create_template(world)
    stale = template(world)  # Kopf's copy, from before the build was recorded
    await reconcile_template(world)
    building = world.status("t", TEMPLATES)
    assert world.operator.templates.following(stale["metadata"]["uid"]) == building["buildID"]
    await delete_template(world, body=stale)
    assert world.e2b.templates.deleted == [building["templateID"]]
    assert world.operator.templates.following(stale["metadata"]["uid"]) is None


async def test_a_reconcile_after_the_deletion_began_builds_nothing(world, files):
    await create_template(world)
    await world.kube.patch(TEMPLATES, NAMESPACE, "t", {"metadata": {"finalizers": [FINALIZER]}})
    await world.kube.delete(TEMPLATES, NAMESPACE, "t")
    await reconcile_template(world)  # one that waited for the deletion's lock, or raced it
    assert world.e2b.templates.builds == []


E2B_REFUSALS = {
    # what E2B answers the delete -> the Event's type and reason
    "unavailable": (E2BUnavailable("503 after retries"), "Normal", "E2BUnavailable"),
    "rejected": (E2BRejected("template_delete: 400: bad request"), "Warning", "E2BRejected"),
}


@pytest.mark.parametrize("error, kind, reason", E2B_REFUSALS.values(), ids=E2B_REFUSALS.keys())
async def test_a_delete_e2b_did_not_do_keeps_the_finalizer_and_is_retried_with_backoff(world, files, error, kind,
                                                                                        reason):
    await create_template(world)
    await reconcile_template(world)
    template_id = (await built(world))["status"]["templateID"]
    world.e2b.templates.fail("delete", error)
    with pytest.raises(RetryLater) as retry:
        await delete_template(world, attempt=2)
    assert retry.value.delay == min(world.settings.stalled_retry_delay_seconds, world.settings.retry_delay_seconds * 4)
    assert template(world) is not None and world.e2b.templates.deleted == []
    [event] = [e for e in world.events.events if e.reason == reason]
    assert event.type == kind and template_id in event.message
    await world.operator.templates.delete(template(world), 3)  # Kopf's retry
    assert world.e2b.templates.deleted == [template_id]


async def test_a_key_that_cannot_be_read_keeps_the_finalizer(world, files):
    world.kube.add_secret(NAMESPACE, "e2b", {"key": "e2b_team_key"})
    await create_template(world, e2bApiKeySecretRef={"name": "e2b", "key": "key"})
    await reconcile_template(world)
    await built(world)
    world.kube.remove("secrets", NAMESPACE, "e2b")
    with pytest.raises(RetryLater):
        await delete_template(world)
    assert template(world) is not None and world.e2b.templates.deleted == []
    assert world.events.reasons("t")[-1] == "E2BKeyMissing"


# ---- agents and pools of a template ---------------------------------------------------------------
async def test_an_agent_waits_for_the_build_then_starts_from_it(world, files):
    await create_template(world)
    await world.ready_agent("a", templateRef={"name": "t"})
    status = world.status("a")
    assert (status["phase"], condition(world.agent("a"), "Ready")["reason"]) == ("Pending", "TemplateNotReady")
    assert world.e2b.of(world.agent("a")["metadata"]["uid"]) == []
    await reconcile_template(world)
    body = await built(world)
    # The template's change reaches its agent: a reconcile is requested on it.
    await world.eventually(lambda: RECONCILE_REQUEST_ANNOTATION in world.agent("a")["metadata"].get("annotations", {}),
                           "the agent is poked")
    await world.reconcile_agent("a")
    [sandbox] = world.e2b.of(world.agent("a")["metadata"]["uid"])
    assert sandbox.template == body["status"]["templateID"]
    assert sandbox.files[BAKED] == "42\n"  # baked into the template: no setup of the agent's own
    assert sandbox.metadata[SANDBOX_TEMPLATE_KEY] == body["status"]["readyContentHash"]
    assert world.status("a")["phase"] == "Ready"
    assert condition(world.agent("a"), "TemplateReady")["status"] == "True"


async def ready_agent_of_template(world: World, name: str = "a") -> str:
    await create_template(world)
    await reconcile_template(world)
    await built(world)
    await world.ready_agent(name, templateRef={"name": "t"})
    return world.status(name)["sandboxID"]


async def rebuild(world: World, text: str) -> None:
    set_files(world, text)
    await reconcile_template(world)
    await built(world)


async def test_an_idle_standalone_agent_takes_the_new_build(world, files):
    first = await ready_agent_of_template(world)
    await rebuild(world, "43\n")
    await world.reconcile_agent("a")
    assert first in world.e2b.killed
    [sandbox] = world.e2b.of(world.agent("a")["metadata"]["uid"])
    assert sandbox.files[BAKED] == "43\n"


async def test_a_busy_standalone_agent_keeps_its_sandbox_until_its_task_ends(world, files):
    first = await ready_agent_of_template(world)
    world.e2b.programs["answer"] = Program(held=True)
    world.start_task_loop()
    await world.create_task("job", agent="a")
    await world.eventually(lambda: world.e2b.processes, "the task runs")
    await rebuild(world, "43\n")
    with pytest.raises(RetryLater):
        await world.reconcile_agent("a")
    assert world.e2b.killed == []
    assert condition(world.agent("a"), "TemplateReady")["reason"] == "TemplateUpdatePending"
    world.e2b.processes[0].end()
    await world.eventually(lambda: world.status("job", "agenttasks").get("phase") == "Succeeded", "the task ends")
    await world.eventually(lambda: not world.status("a").get("activeTasks"), "the agent's status says so", creep=1)
    await world.reconcile_agent("a")
    assert world.e2b.killed == [first]


async def test_a_deleted_template_kills_nothing_and_the_agent_says_why(world, files):
    first = await ready_agent_of_template(world)
    await world.kube.delete(TEMPLATES, NAMESPACE, "t")
    await world.kube.flush()
    await world.reconcile_agent("a")
    assert world.e2b.killed == [] and world.status("a")["sandboxID"] == first
    template_ready = condition(world.agent("a"), "TemplateReady")
    assert (template_ready["status"], template_ready["reason"]) == ("False", "TemplateNotFound")
    assert condition(world.agent("a"), "Ready")["status"] == "True"


async def test_a_pool_rolls_its_agents_to_the_new_build_by_its_strategy(world, files):
    await create_template(world)
    await reconcile_template(world)
    await built(world)
    await world.create_pool("p", 2, template={"spec": agent_spec(templateRef={"name": "t"})})
    await world.operator.pools.reconcile(NAMESPACE, "p")
    for name in ("p-0", "p-1"):
        await world.reconcile_agent(name)
    set_files(world, "43\n")
    await reconcile_template(world)
    world.e2b.templates.finish()
    await world.eventually(lambda: world.status("t", TEMPLATES).get("phase") == "Ready", "rebuilt")
    for name in ("p-0", "p-1"):  # pool agents never replace their own sandbox: the pool rolls them
        await world.reconcile_agent(name)
    assert world.e2b.killed == []
    await world.operator.pools.reconcile(NAMESPACE, "p")
    deleting = [n for n in ("p-0", "p-1") if world.agent(n)["metadata"].get("deletionTimestamp")]
    assert len(deleting) == 1  # maxUnavailable 1
    [replacement] = set(world.kube.names(AGENTS, NAMESPACE, f"{POOL_LABEL}=p")) - {"p-0", "p-1"}
    await world.reconcile_agent(replacement)
    [sandbox] = world.e2b.of(world.agent(replacement)["metadata"]["uid"])
    assert sandbox.files[BAKED] == "43\n"
