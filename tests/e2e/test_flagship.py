"""The flagship, end to end: an agent of Dexter's shape (TypeScript on Bun, LangChain, the OpenAI
Responses API, one HTTP data tool; agents/research-demo) from one E2BTemplate that bakes Bun and its
dependencies in. The template builds on e2b-local, the agent is Ready without an install of its own,
a task's answer comes from the LLM stand-in after one tool call, the agent pauses and resumes, a
pool of 3 answers 9 tasks, and a template change rolls the pool with no task lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.kubectl import eventually
from tests.support.standins import llm_standin, market_data

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "agents"
AGENT_DIR = "/home/user/agent"  # where the operator checks the agent's code out (controller/agents/decide.py)
ACME = "ACME closed at 123.45 USD on 2026-11-30."
ANSWERS = {"ACME": ACME, "GLOBEX": "GLOBEX closed at 87.2 USD on 2026-11-30.",
           "INITECH": "INITECH closed at 12.5 USD on 2026-11-30."}


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """The LLM stand-in (scripted, OpenAI-compatible) and the market-data stand-in, on loopback
    (sandboxes share the host's network)."""
    logs = tmp_path_factory.mktemp("standins")
    with llm_standin(logs) as llm, market_data(logs) as data:
        yield {"llm": llm.url, "data": data.url, "llm_server": llm, "data_server": data}


def demo_files() -> dict[str, str]:
    """agents/research-demo and the harness it imports, at their paths in this repository."""
    return {path.relative_to(ROOT).as_posix(): path.read_text()
            for folder in ("harness", "research-demo") for path in (AGENTS / folder).rglob("*")
            if path.is_file() and "node_modules" not in path.parts}


@pytest.fixture
def demo_repo(git_server, request):
    return git_server.create(f"demo-{request.node.name}", demo_files())


def template_manifest(namespace: str, *extra_steps: dict) -> str:
    """The committed agents/research-demo/template.yaml (the shipped manifest is what is tested), with
    `extra_steps` appended to make a template change."""
    template = yaml.safe_load((AGENTS / "research-demo" / "template.yaml").read_text())
    template["metadata"]["namespace"] = namespace
    template["spec"]["steps"] += extra_steps
    return json.dumps(template)


def create_files_configmap(kubectl, namespace: str) -> None:
    """The ConfigMap the template copies its files from, made as its head says."""
    kubectl.run("create", "configmap", "research-demo", "-n", namespace,
                *(f"--from-file={AGENTS / folder}/" for folder in ("research-demo", "research-demo/src", "harness")))


def agent_spec(repo_url: str, standins: dict) -> dict:
    return {"templateRef": {"name": "research-demo"},
            "source": {"repo": repo_url, "ref": "main", "path": "agents/research-demo"},
            "query": {"command": "bun run src/query.ts", "timeoutSeconds": 300},
            "env": [{"name": "OPENAI_BASE_URL", "value": f"{standins['llm']}/v1"},
                    {"name": "MARKET_DATA_URL", "value": standins["data"]},
                    {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm", "key": "key"}}}]}


def task(namespace: str, name: str, query: str, **target) -> str:
    return json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "AgentTask",
                       "metadata": {"name": name, "namespace": namespace}, "spec": {"query": query, **target}})


def finished(kubectl, namespace: str, name: str, timeout: float = 300) -> dict:
    return eventually(lambda: (t := kubectl.get("agenttask", name, namespace)) and
                      (t.get("status") or {}).get("phase") in ("Succeeded", "Failed") and t, timeout,
                      interval=1, what=f"task {name} done")["status"]


def ready_template(kubectl, namespace: str, content: str | None = None) -> dict:
    return eventually(lambda: (s := ((kubectl.get("e2btemplate", "research-demo", namespace) or {})
                                     .get("status") or {})) and s.get("phase") in ("Ready", "Failed")
                      and s.get("readyContentHash", "") != content and s, 600, interval=2, what="the template built")


def test_the_flagship_from_one_template(kubectl, namespace, operator, e2b_client, demo_repo, standins):
    kubectl.run("create", "secret", "generic", "llm", "-n", namespace, "--from-literal=key=sk-standin")
    create_files_configmap(kubectl, namespace)
    kubectl.apply(template_manifest(namespace))
    first = ready_template(kubectl, namespace)
    assert first["phase"] == "Ready", first.get("buildLog")

    # One agent: Ready without an install of its own (no setup; Bun and node_modules came baked in).
    kubectl.apply(json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "RemoteAgent",
                              "metadata": {"name": "analyst", "namespace": namespace},
                              "spec": agent_spec(demo_repo.url, standins)}))
    kubectl.run("wait", "--for=condition=Ready", "--timeout=180s", "remoteagent/analyst", "-n", namespace,
                timeout=190)
    agent = kubectl.get("remoteagent", "analyst", namespace)
    assert not agent["spec"].get("setup")
    sandbox = e2b_client.connect(agent["status"]["sandboxID"])
    assert sandbox.files.exists(f"{AGENT_DIR}/agents/research-demo/node_modules/@langchain/openai/package.json")

    # A task: the answer from the LLM stand-in after one get_price call against the data stand-in.
    standins["llm_server"].forget()
    kubectl.apply(task(namespace, "acme", "What is the price of ACME?", agentRef={"name": "analyst"}))
    status = finished(kubectl, namespace, "acme")
    assert (status["phase"], status["output"].strip()) == ("Succeeded", ACME), status
    asked = standins["llm_server"].requests()
    assert [r["reply"].get("toolCall") for r in asked] == ["get_price", None] and asked[0]["api"] == "responses"
    assert "/prices/ACME" in standins["data_server"].get("/_requests")

    # Pause and resume: the same sandbox, answering again.
    kubectl.run("patch", "remoteagent/analyst", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":true}}')
    eventually(lambda: kubectl.get("remoteagent", "analyst", namespace)["status"].get("phase") == "Paused", 120,
               what="paused")
    assert e2b_client.info(agent["status"]["sandboxID"]).state.value == "paused"
    kubectl.run("patch", "remoteagent/analyst", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":false}}')
    kubectl.run("wait", "--for=jsonpath={.status.phase}=Ready", "--timeout=120s", "remoteagent/analyst",
                "-n", namespace, timeout=130)
    assert kubectl.get("remoteagent", "analyst", namespace)["status"]["sandboxID"] == agent["status"]["sandboxID"]
    kubectl.apply(task(namespace, "again", "And the price of GLOBEX?", agentRef={"name": "analyst"}))
    assert finished(kubectl, namespace, "again")["output"].strip() == ANSWERS["GLOBEX"]

    # A pool of 3 answers 9 tasks.
    kubectl.apply(json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "AgentPool",
                              "metadata": {"name": "desk", "namespace": namespace},
                              "spec": {"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "maxUnavailable": 1},
                                       "template": {"spec": agent_spec(demo_repo.url, standins)}}}))
    kubectl.run("wait", "--for=condition=Ready", "--timeout=300s", "agentpool/desk", "-n", namespace, timeout=310)
    tickers = list(ANSWERS) * 3
    for index, ticker in enumerate(tickers):
        kubectl.apply(task(namespace, f"q{index}", f"What is the price of {ticker}?", poolRef={"name": "desk"}))
    results = [finished(kubectl, namespace, f"q{index}") for index in range(len(tickers))]
    assert [r["output"].strip() for r in results] == [ANSWERS[t] for t in tickers]
    assert len({r["agent"] for r in results}) == 3

    # A template change rebuilds it and rolls the pool; tasks sent meanwhile are all answered.
    kubectl.apply(template_manifest(namespace, {"run": {"command": "echo 2 > /home/user/edition"}}))
    for index, ticker in enumerate(tickers):
        kubectl.apply(task(namespace, f"r{index}", f"What is the price of {ticker}?", poolRef={"name": "desk"}))
    second = ready_template(kubectl, namespace, first["readyContentHash"])
    assert second["phase"] == "Ready", second.get("buildLog")

    def of_new_build(sandbox_id: str) -> bool:
        files = e2b_client.connect(sandbox_id).files
        return files.exists("/home/user/edition") and files.read("/home/user/edition").strip() == "2"

    def rolled() -> bool:
        members = [a for a in kubectl.items("remoteagents", namespace, "-l", "remoteagents.io/pool=desk")
                   if not a["metadata"].get("deletionTimestamp")]
        return len(members) == 3 and all(
            (a.get("status") or {}).get("phase") == "Ready" and of_new_build(a["status"]["sandboxID"])
            for a in members)
    eventually(rolled, 600, interval=3, what="the pool rolled to the new build")
    during = [finished(kubectl, namespace, f"r{index}") for index in range(len(tickers))]
    assert [r["output"].strip() for r in during] == [ANSWERS[t] for t in tickers], during
