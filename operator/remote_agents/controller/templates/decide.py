"""What to do for one E2BTemplate, given its spec, what its files resolve to and its status. Pure.

The build itself runs in E2B: the operator asks for one whenever the content hash (the spec plus
the resolved git commits and ConfigMap contents) differs from the latest build's, and follows a
build in progress until it ends. A failed build is not retried until the content changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from remote_agents.api.models import CopyStep, E2BTemplateSpec
from remote_agents.controller.status import Outcome

BUILD_LOG_CHARS = 4000  # status.buildLog keeps this much of the log's end
DEFAULT_BASE_IMAGE = "e2bdev/base"  # the E2B base image, what the SDK builds on by default


# ---- the recipe handed to the SDK's template builder (clients/e2b_templates.py) ----------------
@dataclass(frozen=True)
class RunCommand:
    command: str
    user: str | None = None


@dataclass(frozen=True)
class CopyFiles:
    source: str  # relative to the build's file context (where the operator put the files)
    destination: str
    user: str | None = None


@dataclass(frozen=True)
class SetEnv:
    values: dict[str, str]


@dataclass(frozen=True)
class SetWorkdir:
    path: str


Instruction = RunCommand | CopyFiles | SetEnv | SetWorkdir


@dataclass(frozen=True)
class Recipe:
    from_template: str | None
    from_image: str | None
    instructions: list[Instruction]
    start_command: str | None
    ready_command: str | None
    cpu_count: int
    memory_mb: int


def context_dir(index: int) -> str:
    """Where the files of step `index` are put in the build's file context, by the operator."""
    return f"step-{index}"


def copy_source(index: int, step: CopyStep) -> str:
    """What the SDK copies for step `index`: a git path inside its checkout, or the ConfigMap's files."""
    path = step.git.path.strip("/") if step.git else ""
    return f"{context_dir(index)}/{path}" if path else context_dir(index)


def recipe(spec: E2BTemplateSpec) -> Recipe:
    instructions: list[Instruction] = []
    for index, step in enumerate(spec.steps):
        if step.run:
            instructions.append(RunCommand(step.run.command, step.run.user))
        elif step.copy_:
            instructions.append(CopyFiles(copy_source(index, step.copy_), step.copy_.to, step.copy_.user))
        elif step.env is not None:
            instructions.append(SetEnv(dict(step.env)))
        elif step.workdir:
            instructions.append(SetWorkdir(step.workdir))
    base = spec.base
    return Recipe(from_template=base.from_template,
                  from_image=base.from_image or (None if base.from_template else DEFAULT_BASE_IMAGE),
                  instructions=instructions, start_command=spec.start_command, ready_command=spec.ready_command,
                  cpu_count=spec.cpu_count, memory_mb=spec.memory_mb)


# ---- what goes into the build, and whether to build ---------------------------------------------
def content_hash(spec: E2BTemplateSpec, commits: dict[int, str], config_maps: dict[int, dict[str, str]]) -> str:
    """Hash of everything the build is made of: the spec (Secrets by name only), the commit each git
    step resolved to and the files each ConfigMap step copies (by step index). Not deletionPolicy:
    what happens at deletion builds nothing."""
    content = {"spec": spec.model_dump(by_alias=True, mode="json", exclude_none=True, exclude={"deletion_policy"}),
               "commits": {str(i): sha for i, sha in sorted(commits.items())},
               "configMaps": {str(i): files for i, files in sorted(config_maps.items())}}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def config_map_files(data: dict[str, str], items: list[tuple[str, str]] | None) -> dict[str, str] | None:
    """relative path -> text of the files a ConfigMap step copies; None when an item's key is missing."""
    if items is None:
        return dict(data)
    if any(key not in data for key, _ in items):
        return None
    return {path: data[key] for key, path in items}


@dataclass(frozen=True)
class StartBuild:
    content_hash: str


@dataclass(frozen=True)
class FollowBuild:
    template_id: str
    build_id: str


Action = StartBuild | FollowBuild


def plan_template(content: str, status: dict[str, Any], following: bool) -> Action | None:
    """`status`: the object's; `following`: its recorded build is being followed already."""
    if status.get("contentHash") != content:
        return StartBuild(content)
    phase = status.get("phase")
    if phase in ("Ready", "Failed"):
        return None  # built; a failed build is tried again only for other content
    if phase == "Building" and status.get("buildID") and status.get("templateID"):
        return None if following else FollowBuild(status["templateID"], status["buildID"])
    return StartBuild(content)


# ---- what a build's progress means for status ---------------------------------------------------
@dataclass(frozen=True)
class BuildProgress:
    """A look at a build in E2B (clients/e2b_templates.py makes these)."""
    state: str  # building | waiting | ready | error
    log_lines: list[str] = field(default_factory=list)  # new since the last look
    reason: str | None = None  # why it failed
    step: str | None = None  # the failing step, as E2B names it


def log_tail(previous: str | None, new_lines: list[str], limit: int = BUILD_LOG_CHARS) -> str:
    """The log's last `limit` characters, cut at a line start when it is cut."""
    text = (previous or "") + "".join(line.rstrip("\n") + "\n" for line in new_lines)
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    return cut[cut.find("\n") + 1:] if "\n" in cut[:-1] else cut


def finished(progress: BuildProgress) -> bool:
    return progress.state in ("ready", "error")


def outcome_of(progress: BuildProgress) -> tuple[str, Outcome]:
    """The phase and conditions a build's state gives the template."""
    if progress.state == "ready":
        return "Ready", Outcome(ready=True, reason="BuildSucceeded", message="the build is ready")
    if progress.state == "error":
        where = f" (step {progress.step})" if progress.step else ""
        why = progress.reason or "no reason given"
        return "Failed", Outcome(False, "BuildFailed", f"the build failed{where}: {why}", stalled=True)
    return "Building", Outcome(False, "Building", "the template is being built", reconciling=True)


def e2b_name(namespace: str, name: str, cluster_id: str) -> str:
    """The template's name in E2B: readable, and distinct per cluster sharing an E2B account."""
    digest = hashlib.sha256(cluster_id.encode()).hexdigest()[:6]
    return f"{namespace}-{name}-{digest}".replace(".", "-")[:120].lower()
