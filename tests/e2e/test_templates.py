"""E2BTemplate end to end, on the real control plane and e2b-local: the operator builds the template
through the e2b SDK, an agent naming it waits (Pending, TemplateNotReady) and then starts from it
with the baked-in files and no setup of its own; a bad step is Stalled with the build's reason; a
content change rebuilds and rolls a pool with a running task not lost; deleting one deletes its
template in e2b-local and leaves its agent's sandbox running; the schema refuses bad manifests
naming the field."""

from __future__ import annotations

import json

from remote_agents.api.names import FINALIZER
from remote_agents.controller.templates.decide import e2b_name
from tests.support.kubectl import eventually

BAKED = "/home/user/baked/version.txt"


def config_map(name: str, namespace: str, version: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
                       "data": {"version.txt": f"{version}\n"}})


def template_manifest(name: str, namespace: str, *steps: dict, **spec) -> str:
    return json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "E2BTemplate",
                       "metadata": {"name": name, "namespace": namespace},
                       "spec": {"steps": list(steps), **spec}})


def baking(config: str = "files") -> list[dict]:
    """Steps that bake a ConfigMap's file and a built marker into the template."""
    return [{"copy": {"configMapRef": {"name": config}, "to": "/home/user/baked"}},
            {"run": {"command": "echo built-by-template > /home/user/marker.txt"}}]


def agent_manifest(name: str, namespace: str, repo_url: str, **spec) -> str:
    return json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "RemoteAgent",
                       "metadata": {"name": name, "namespace": namespace},
                       "spec": {"source": {"repo": repo_url, "ref": "main"}, "templateRef": {"name": "tools"},
                                "query": {"command": "bash answer.sh"}, **spec}})


def ready_condition(body: dict | None) -> dict:
    return next((c for c in ((body or {}).get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})


def event_reasons(kubectl, namespace: str, name: str) -> list[str]:
    return kubectl.run("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}",
                       "-o", "jsonpath={.items[*].reason}").stdout.split()


def wait_template(kubectl, name: str, namespace: str, phase: str, timeout: int = 240) -> dict:
    return eventually(lambda: (t := kubectl.get("e2btemplate", name, namespace)) and
                      (t.get("status") or {}).get("phase") == phase and t, timeout, what=f"template {phase}")


def test_an_agent_waits_for_its_template_then_starts_from_it(kubectl, namespace, operator, e2b_client, agent_repo):
    kubectl.apply(agent_manifest("analyst", namespace, agent_repo.url))
    waiting = eventually(lambda: ready_condition(kubectl.get("remoteagent", "analyst", namespace)).get("reason")
                         == "TemplateNotReady" and kubectl.get("remoteagent", "analyst", namespace), 60,
                         what="the agent waiting for its template")
    assert waiting["status"]["phase"] == "Pending" and not waiting["status"].get("sandboxID")

    kubectl.apply(config_map("files", namespace, "v1"))
    kubectl.apply(template_manifest("tools", namespace, *baking()))
    template = wait_template(kubectl, "tools", namespace, "Ready")
    status = template["status"]
    assert status["templateID"] and status["buildID"] and status["readyContentHash"] == status["contentHash"]
    assert "echo built-by-template" in status["buildLog"]
    table = kubectl.run("get", "e2bt", "tools", "-n", namespace).stdout
    assert "PHASE" in table and "TEMPLATE ID" in table and status["templateID"] in table

    kubectl.run("wait", "--for=condition=Ready", "--timeout=120s", "remoteagent/analyst", "-n", namespace,
                timeout=130)
    agent = kubectl.get("remoteagent", "analyst", namespace)
    sandbox_id = agent["status"]["sandboxID"]
    assert e2b_client.info(sandbox_id).template_id == status["templateID"]
    # Baked into the template: there without any setup command of the agent's.
    assert e2b_client.read(sandbox_id, BAKED) == "v1\n"
    assert e2b_client.read(sandbox_id, "/home/user/marker.txt") == "built-by-template\n"
    template_ready = next(c for c in agent["status"]["conditions"] if c["type"] == "TemplateReady")
    assert template_ready["status"] == "True"
    reasons = event_reasons(kubectl, namespace, "tools")
    assert "BuildStarted" in reasons and "BuildSucceeded" in reasons


def test_a_bad_step_is_stalled_with_the_builds_reason(kubectl, namespace, operator):
    kubectl.apply(template_manifest("broken", namespace, {"run": {"command": "echo trying; exit 7"}}))
    template = wait_template(kubectl, "broken", namespace, "Failed")
    stalled = next(c for c in template["status"]["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "BuildFailed")
    assert "7" in stalled["message"], stalled["message"]
    assert ready_condition(template)["status"] == "False"
    assert "trying" in template["status"]["buildLog"]


def test_a_content_change_rebuilds_and_rolls_a_pool_without_losing_a_task(kubectl, namespace, operator,
                                                                          e2b_client, agent_repo):
    kubectl.apply(config_map("files", namespace, "v1"))
    kubectl.apply(template_manifest("tools", namespace, *baking()))
    first = wait_template(kubectl, "tools", namespace, "Ready")["status"]
    kubectl.apply(json.dumps({
        "apiVersion": "remoteagents.io/v1alpha1", "kind": "AgentPool",
        "metadata": {"name": "crew", "namespace": namespace},
        "spec": {"replicas": 2, "updateStrategy": {"type": "RollingUpdate", "maxUnavailable": 1},
                 "template": {"spec": {"source": {"repo": agent_repo.url, "ref": "main"},
                                       "templateRef": {"name": "tools"},
                                       # Long enough to be running while the template is rebuilt.
                                       "query": {"command": f"sleep 15; cat {BAKED}"}}}}}))
    kubectl.run("wait", "--for=condition=Ready", "--timeout=180s", "agentpool/crew", "-n", namespace, timeout=190)
    kubectl.apply(json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "AgentTask",
                              "metadata": {"name": "long", "namespace": namespace},
                              "spec": {"query": "which version?", "poolRef": {"name": "crew"}}}))
    eventually(lambda: ((kubectl.get("agenttask", "long", namespace) or {}).get("status") or {}).get("phase")
               == "Running", 60, what="the task running")

    kubectl.apply(config_map("files", namespace, "v2"))  # new content: the periodic look or an edit rebuilds
    kubectl.run("annotate", "e2btemplate/tools", "-n", namespace, "edited=now", "--overwrite")
    second = eventually(lambda: (s := (kubectl.get("e2btemplate", "tools", namespace) or {}).get("status") or {})
                        and s.get("phase") == "Ready" and s.get("readyContentHash") != first["readyContentHash"]
                        and s, 240, what="the template rebuilt")

    def rolled() -> bool:
        agents = [a for a in kubectl.items("remoteagents", namespace, "-l", "remoteagents.io/pool=crew")
                  if not a["metadata"].get("deletionTimestamp")]
        return len(agents) == 2 and all(
            ready_condition(a).get("status") == "True" and a["status"].get("sandboxID")
            and e2b_client.read(a["status"]["sandboxID"], BAKED) == "v2\n" for a in agents)
    eventually(rolled, 300, interval=2, what="both agents on the new build")
    task = eventually(lambda: (t := kubectl.get("agenttask", "long", namespace)) and
                      t["status"].get("phase") in ("Succeeded", "Failed") and t, 120, what="the task done")
    assert task["status"]["phase"] == "Succeeded", task["status"]
    assert task["status"]["output"].strip() == "v1"  # it ran to its end on the sandbox of the old build
    assert second["templateID"] == first["templateID"]


def test_deleting_a_template_deletes_it_in_e2b_and_its_agent_keeps_running(kubectl, namespace, operator,
                                                                            e2b_client, agent_repo):
    kubectl.apply(config_map("files", namespace, "v1"))
    kubectl.apply(template_manifest("tools", namespace, *baking()))
    template = wait_template(kubectl, "tools", namespace, "Ready")
    assert FINALIZER in template["metadata"]["finalizers"]
    name = e2b_name(namespace, "tools", kubectl.get("namespace", "kube-system")["metadata"]["uid"])
    assert e2b_client.template_exists(name)
    kubectl.apply(agent_manifest("analyst", namespace, agent_repo.url))
    kubectl.run("wait", "--for=condition=Ready", "--timeout=120s", "remoteagent/analyst", "-n", namespace,
                timeout=130)
    sandbox_id = kubectl.get("remoteagent", "analyst", namespace)["status"]["sandboxID"]

    kubectl.run("delete", "e2btemplate", "tools", "-n", namespace, "--timeout=60s", timeout=70)

    assert kubectl.get("e2btemplate", "tools", namespace) is None
    assert not e2b_client.template_exists(name)
    assert "TemplateDeleted" in event_reasons(kubectl, namespace, "tools")
    # A deleted template kills nothing: its agent's sandbox runs on, with the files baked into it.
    assert e2b_client.info(sandbox_id).state.value == "running"
    assert e2b_client.read(sandbox_id, BAKED) == "v1\n"


def test_the_schema_refuses_bad_manifests_naming_the_field(kubectl, namespace, operator, agent_repo):
    cases = [
        (template_manifest("both", namespace, {"run": {"command": "true"}, "workdir": "/home/user"}),
         "exactly one of run, copy, env and workdir"),
        (template_manifest("nosource", namespace, {"copy": {"to": "/home/user/x"}}),
         "exactly one of git and configMapRef"),
        (template_manifest("noready", namespace, startCommand="sleep infinity"),
         "readyCommand must be set when startCommand is"),
        (template_manifest("twobases", namespace, base={"fromTemplate": "base", "fromImage": "e2bdev/base"}),
         "at most one of fromTemplate and fromImage"),
        (template_manifest("relative", namespace, {"workdir": "home/user"}), "workdir"),
        (agent_manifest("both-templates", namespace, agent_repo.url, template="custom"),
         "templateRef and a template other than the default are exclusive"),
    ]
    for manifest, message in cases:
        result = kubectl.run("apply", "-f", "-", input=manifest, check=False)
        assert result.returncode != 0 and message in result.stderr, (message, result.stderr)
