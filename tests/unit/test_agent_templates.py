"""The agents' E2B templates copy exactly the files the agents are made of, where their relative
imports expect them (a file added to an agent but not to its template would be missing in E2B)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "agents"
TEMPLATES = {  # template file -> the agent directories its ConfigMap is made from (README, agents/README.md)
    ROOT / "manifests/samples/dexter.yaml": ["dexter", "harness"],
    AGENTS / "research-demo/template.yaml": ["research-demo", "harness"],
}
PARTS = ("*.ts", "package.json", "bun.lock")


def config_map_items(path: Path) -> list[dict]:
    [template] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc["kind"] == "E2BTemplate"]
    return [item for step in template["spec"]["steps"] if "copy" in step and "configMapRef" in step["copy"]
            for item in step["copy"]["configMapRef"]["items"]]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_a_template_copies_every_file_of_its_agents_at_its_path_under_agents(template):
    items = config_map_items(template)
    copied = {item["path"] for item in items}
    wanted = {str(file.relative_to(AGENTS)) for directory in TEMPLATES[template] for part in PARTS
              for file in (AGENTS / directory).rglob(part) if "node_modules" not in file.parts}
    assert copied == wanted
    assert all(Path(item["path"]).name == item["key"] for item in items)  # kubectl create configmap --from-file


def test_dexter_commands_name_the_runner_where_the_template_puts_it():
    docs = list(yaml.safe_load_all((ROOT / "manifests/samples/dexter.yaml").read_text()))
    [template] = [doc for doc in docs if doc["kind"] == "E2BTemplate"]
    [runner_copy] = [step["copy"] for step in template["spec"]["steps"] if "configMapRef" in step.get("copy", {})]
    agent = next(doc["spec"] for doc in docs if doc["kind"] == "RemoteAgent")
    pool = next(doc["spec"]["template"]["spec"] for doc in docs if doc["kind"] == "AgentPool")
    for command in (agent["query"]["command"], pool["server"]["command"]):
        script = command.split()[-1]
        assert script.startswith(runner_copy["to"] + "/")
        assert (AGENTS / script.removeprefix(runner_copy["to"] + "/")).is_file(), command
    [dexter_copy] = [step["copy"]["git"] for step in template["spec"]["steps"] if "git" in step.get("copy", {})]
    assert agent["source"]["ref"] == pool["source"]["ref"] == dexter_copy["ref"]  # the checkout keeps node_modules
