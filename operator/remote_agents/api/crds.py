"""The CustomResourceDefinitions, generated from the typed models. `crds/` holds their YAML;
`remote-agents crds --check` (run by the tests) fails when it is stale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from remote_agents.api import models, names
from remote_agents.api.schema import structural_schema

# `kubectl get agents` lists all three kinds. It must not equal a plural: kubectl would expand the
# category instead of the resource (`kubectl get remoteagents` would list pools and tasks too).
CATEGORY = "agents"


def _ready_column(field: str = "status", name: str = "Ready", priority: int = 0) -> dict[str, Any]:
    """A column showing one field of the Ready condition (kubectl -o wide shows priority 1 too)."""
    column = {"name": name, "type": "string", "jsonPath": f'.status.conditions[?(@.type=="Ready")].{field}'}
    return {**column, "priority": priority} if priority else column


def _reason_column() -> dict[str, Any]:
    return _ready_column("reason", "Reason")


def _message_column() -> dict[str, Any]:
    return _ready_column("message", "Message", priority=1)


def _wide(name: str, kind: str, path: str) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path, "priority": 1}


def _age_column() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _crd(kind: str, plural: str, short: str, model: type[BaseModel], columns: list[dict[str, Any]],
         scale: dict[str, str] | None = None) -> dict[str, Any]:
    schema = structural_schema(model)
    subresources: dict[str, Any] = {"status": {}}
    if scale:
        subresources["scale"] = scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{names.GROUP}"},
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                      "shortNames": [short], "categories": [CATEGORY]},
            "versions": [{
                "name": names.VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "description": schema["description"],
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string", "description": f"{names.GROUP}/{names.VERSION}"},
                        "kind": {"type": "string", "description": kind},
                        # The API server refuses anything here but type: it documents ObjectMeta itself.
                        "metadata": {"type": "object"},
                        "spec": schema["properties"]["spec"],
                        "status": schema["properties"]["status"],
                    },
                }},
                "subresources": subresources,
                "additionalPrinterColumns": columns,
            }],
        },
    }


def definitions() -> list[dict[str, Any]]:
    return [
        _crd("RemoteAgent", names.AGENTS, "ra", models.RemoteAgent, [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            _ready_column(),
            _reason_column(),
            {"name": "Sandbox", "type": "string", "jsonPath": ".status.sandboxID"},
            {"name": "Revision", "type": "string", "jsonPath": ".status.shortRevision"},
            _age_column(),
            _wide("Paused", "boolean", ".spec.paused"),
            _wide("Repo", "string", ".spec.source.repo"),
            _wide("Ref", "string", ".spec.source.ref"),
            _wide("Tasks", "integer", ".status.activeTasks"),
            _wide("Sessions", "integer", ".status.sessions"),
            _message_column(),
        ]),
        _crd("AgentPool", names.POOLS, "apool", models.AgentPool, [
            {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Current", "type": "integer", "jsonPath": ".status.replicas"},
            {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
            {"name": "Updated", "type": "integer", "jsonPath": ".status.updatedReplicas"},
            {"name": "Paused", "type": "integer", "jsonPath": ".status.pausedReplicas"},
            _reason_column(),
            _age_column(),
            _wide("Repo", "string", ".spec.template.spec.source.repo"),
            _wide("Strategy", "string", ".spec.updateStrategy.type"),
            _wide("Queued", "integer", ".status.queuedTasks"),
            _wide("Max", "integer", ".spec.autoscaling.maxReplicas"),
            _message_column(),
        ], scale={"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                  "labelSelectorPath": ".status.selector"}),
        _crd("AgentTask", names.TASKS, "atask", models.AgentTask, [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Agent", "type": "string", "jsonPath": ".status.agent"},
            {"name": "Duration", "type": "string", "jsonPath": ".status.duration"},
            _reason_column(),
            _age_column(),
            _wide("Pool", "string", ".spec.poolRef.name"),
            _wide("Session", "string", ".spec.session"),
            _wide("Exit", "integer", ".status.exitCode"),
            _wide("Sandbox", "string", ".status.sandboxID"),
            _wide("Published", "string", ".status.githubUrl"),
            _wide("Priority", "integer", ".spec.priority"),
            _wide("Attempts", "integer", ".status.attempts"),
            _message_column(),
        ]),
        _crd("E2BTemplate", names.TEMPLATES, "e2bt", models.E2BTemplate, [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Template ID", "type": "string", "jsonPath": ".status.templateID"},
            _ready_column(),
            _reason_column(),
            _age_column(),
            _wide("Build", "string", ".status.buildID"),
            _wide("Content", "string", ".status.contentHash"),
            _message_column(),
        ]),
    ]


def render(crd: dict[str, Any]) -> str:
    header = "# Generated from operator/remote_agents/api/models.py by `remote-agents crds`. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=120)


def file_name(crd: dict[str, Any]) -> str:
    return f"{crd['metadata']['name']}.yaml"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for crd in definitions():
        path = directory / file_name(crd)
        path.write_text(render(crd))
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Names of CRD files in `directory` that differ from what the models generate."""
    return [file_name(crd) for crd in definitions()
            if not (directory / file_name(crd)).is_file() or (directory / file_name(crd)).read_text() != render(crd)]
