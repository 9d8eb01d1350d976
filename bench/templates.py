"""A pool of N Dexter-shaped agents (agents/research-demo: Bun, LangChain) from 0 to Ready, twice
in one run: from the committed E2BTemplate (agents/research-demo/template.yaml: Bun and the
dependencies baked in), and from its installs run as setup commands (each agent installs Bun and
runs `bun install`).

    python bench/templates.py [--agents N]

Both against the ideal: N / creates_per_second + create latency + one checkout (timed on a
sandbox of the template); and, as a control, a pool with neither template nor setup. Goals: the template path within 1.2x of the ideal, and at least 3x faster
than the setup path. The template's build is timed too, but outside the template path (it is paid
once, before any agent). The operator runs with REMOTE_AGENTS_E2B_CREATES_PER_SECOND=5.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import harness
from remote_agents.controller.sources import git
from tests.e2e.test_flagship import AGENT_DIR, create_files_configmap, demo_files, template_manifest

CREATES_PER_SECOND = 5.0
CREATE_LATENCY = 1.0  # matches harness.E2B_LATENCY_ARGS
TARGET_RATIO = 1.2
TARGET_SPEEDUP = 3.0


def agent_spec(repo_url: str, **spec) -> dict:
    return {"source": {"repo": repo_url, "ref": "main", "path": "agents/research-demo"},
            "query": {"command": "bun run src/query.ts"}, **spec}


def setup_of_template(manifest: str) -> dict:
    """The committed template's installs as setup commands of each agent, with its environment: the
    same two installs, run in every agent instead of once."""
    steps = json.loads(manifest)["spec"]["steps"]
    env = {name: value for step in steps for name, value in (step.get("env") or {}).items()}
    return {"setup": [step["run"]["command"] for step in steps if "run" in step],
            "env": [{"name": name, "value": value} for name, value in env.items()]}


def pool(name: str, namespace: str, spec: dict) -> str:
    return json.dumps({"apiVersion": "remoteagents.io/v1alpha1", "kind": "AgentPool",
                       "metadata": {"name": name, "namespace": namespace},
                       "spec": {"replicas": 0, "template": {"spec": spec}}})


def time_to_ready(stack: harness.Stack, name: str, agents: int, timeout: float) -> float:
    """Scale pool `name` from 0 to `agents`; seconds until all of its agents are Ready."""
    started = time.monotonic()
    stack.kubectl.run("scale", f"agentpool/{name}", "-n", stack.namespace, f"--replicas={agents}")

    def all_ready(rows: list[harness.AgentRow]) -> bool:
        mine = [row for row in rows if row.name.startswith(f"{name}-")]
        return len(mine) == agents and all(row.converged for row in mine)
    return stack.wait_agents(all_ready, timeout, f"{agents} Ready agents of {name}") - started


def scale_to_zero(stack: harness.Stack, name: str) -> None:
    stack.kubectl.run("scale", f"agentpool/{name}", "-n", stack.namespace, "--replicas=0")
    stack.wait_agents(lambda rows: not [r for r in rows if r.name.startswith(f"{name}-")], 300,
                      f"the agents of {name} gone", interval=1)


def checkout_seconds(stack: harness.Stack, template_id: str, repo_url: str, revision: str) -> float:
    """One checkout of the agent's code in a sandbox of the template, as the operator runs it."""
    from e2b import Sandbox  # the SDK reads E2B_* from the environment set below

    os.environ.update(stack.e2b.env)
    script = git.checkout_script(repo_url, revision, AGENT_DIR)
    box = Sandbox.create(template=template_id, timeout=600)
    try:
        started = time.monotonic()
        box.commands.run(script, timeout=120)
        return time.monotonic() - started
    finally:
        box.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=20)
    args = parser.parse_args()
    agents = args.agents

    env = {"REMOTE_AGENTS_E2B_CREATES_PER_SECOND": str(CREATES_PER_SECOND)}
    with harness.Stack("templates", operator_env=env, max_running=agents + 10) as stack:
        repo = stack.git.create("research-demo", demo_files())
        head = repo.commit({"README.md": "research demo\n"}, "readme")

        harness.log("building the template")
        started = time.monotonic()
        create_files_configmap(stack.kubectl, stack.namespace)
        stack.apply(template_manifest(stack.namespace))
        template: dict = {}

        def built() -> bool:
            found = stack.kubectl.get("e2btemplate", "research-demo", stack.namespace) or {}
            template.update(found.get("status") or {})
            return template.get("phase") in ("Ready", "Failed")
        build_s = stack.wait(built, 900, "the template built", interval=1) - started
        if template["phase"] != "Ready":
            raise SystemExit(f"the template failed to build: {template.get('buildLog')}")
        checkout_s = checkout_seconds(stack, template["templateID"], repo.url, head)

        stack.apply(pool("from-template", stack.namespace, agent_spec(repo.url, templateRef={"name": "research-demo"})))
        harness.log(f"template path: 0 -> {agents}")
        template_s = time_to_ready(stack, "from-template", agents, 120 + agents * 10)
        scale_to_zero(stack, "from-template")

        # The control: the same pool with neither template nor setup (Ready, though it could not
        # answer), so what the operator adds at this size is told apart from what templates add.
        stack.apply(pool("bare", stack.namespace, agent_spec(repo.url)))
        harness.log(f"bare path (control): 0 -> {agents}")
        bare_s = time_to_ready(stack, "bare", agents, 120 + agents * 10)
        scale_to_zero(stack, "bare")

        stack.apply(pool("from-setup", stack.namespace, agent_spec(
            repo.url, **setup_of_template(template_manifest(stack.namespace)))))
        harness.log(f"setup path: 0 -> {agents}")
        setup_s = time_to_ready(stack, "from-setup", agents, 600 + agents * 60)
        scale_to_zero(stack, "from-setup")

    ideal = agents / CREATES_PER_SECOND + CREATE_LATENCY + checkout_s
    figures = {"agents": agents, "creates_per_second": CREATES_PER_SECOND, "template_build_s": build_s,
               "checkout_s": checkout_s, "ideal_s": ideal, "template_path_s": template_s, "setup_path_s": setup_s,
               "bare_path_s": bare_s, "template_vs_ideal": template_s / ideal, "bare_vs_ideal": bare_s / ideal, "setup_vs_template": setup_s / template_s}
    harness.report("templates", figures, [
        harness.Target("template path / ideal", template_s / ideal, TARGET_RATIO, "x"),
        harness.Target("setup path / template path", setup_s / template_s, TARGET_SPEEDUP, "x",
                       higher_is_better=True),
    ])


if __name__ == "__main__":
    main()
