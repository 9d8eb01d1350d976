"""Templates built locally: their records, names and tags, uploaded files and layers.

A template has names (the SDK's `name`, formerly alias) and tags, each tag pointing at one ready
build; every ready build also becomes the `default` tag (what a bare name resolves to). A build's
layer is `STATE/templates/layers/<build id>/{home,root,tmp}`: the trees its steps wrote, which every
sandbox of it mounts read-only under its own writes. A layer lives while a tag points at its build
or a sandbox starts from it; `collect()` frees the others. Records are `STATE/templates.json`
(0600), replaced atomically like sandboxes.json; a finished build's log is its own file
`STATE/templates/logs/<build id>.json`, written once, so that the records stay small."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import string
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from remote_agents_local.e2b_local.sandboxes import ApiError
from remote_agents_local.e2b_local.store import UNREADABLE, Store, iso, set_aside, write_private

WAITING, BUILDING, READY, ERROR = "waiting", "building", "ready", "error"
DEFAULT_TAG = "default"
_ID_ALPHABET = string.ascii_lowercase + string.digits
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
_TAG = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}")
FILES_HASH = re.compile(r"[0-9a-f]{64}")
# Build logs are kept whole up to this many entries (a status poll pages through them).
MAX_LOG_ENTRIES = 20000
MAX_LOG_LINE = 4096


@dataclass
class BuildRecord:
    build_id: str
    template_id: str
    status: str
    created_at: float
    updated_at: float
    cpu_count: int
    memory_mb: int
    tags: list[str] = field(default_factory=list)  # assigned when the build is ready
    finished_at: float = 0.0
    logs: list[dict] = field(default_factory=list)  # BuildLogEntry dicts
    reason: dict | None = None  # BuildStatusReason dict, for error
    # What sandboxes of this build start with (set by its steps).
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = "user"
    start_cmd: str = ""
    ready_cmd: str = ""

    def log(self, message: str, level: str = "info", step: str | None = None) -> None:
        if len(self.logs) >= MAX_LOG_ENTRIES:
            if len(self.logs) == MAX_LOG_ENTRIES:
                self.logs.append(_entry(f"(build log truncated at {MAX_LOG_ENTRIES} entries)", "warn", step))
            return
        self.logs.append(_entry(message[:MAX_LOG_LINE], level, step))


def _entry(message: str, level: str, step: str | None) -> dict:
    entry = {"timestamp": iso(time.time()), "level": level, "message": message}
    if step is not None:
        entry["step"] = step
    return entry


@dataclass
class TemplateRecord:
    template_id: str
    names: list[str]
    created_at: float
    updated_at: float
    tags: dict[str, str] = field(default_factory=dict)  # tag -> ready build id
    tag_times: dict[str, float] = field(default_factory=dict)
    builds: list[str] = field(default_factory=list)  # every build id, oldest first
    spawn_count: int = 0
    last_spawned_at: float = 0.0


_BUILD_FIELDS = {f.name for f in fields(BuildRecord)}
_TEMPLATE_FIELDS = {f.name for f in fields(TemplateRecord)}


def split_name(reference: str) -> tuple[str, str | None]:
    """`name:tag` -> (name, tag); a namespaced `team/name` keeps only its last part."""
    name, _, tag = reference.rpartition("/")[2].partition(":")
    return name, tag or None


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ApiError(400, f"invalid template name {name!r}: lowercase letters, digits, '.', '_' and '-'")
    return name


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise ApiError(400, f"invalid tag {tag!r}: letters, digits, '.', '_' and '-'")
    return tag


class TemplateRegistry:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "templates.json"
        self.root = state_dir / "templates"
        self.layers = self.root / "layers"
        self.files = self.root / "files"
        self.logs = self.root / "logs"
        for directory in (self.root, self.layers, self.files, self.logs):
            directory.mkdir(exist_ok=True, mode=0o700)
        self.templates: dict[str, TemplateRecord] = {}
        self.builds: dict[str, BuildRecord] = {}
        if self.path.exists():
            self._load()
        for build in self.builds.values():
            if build.status in (WAITING, BUILDING):
                # Its steps ran (or were queued) in the previous server, whose processes are gone.
                build.status, build.finished_at = ERROR, time.time()
                build.reason = {"message": "the e2b-local server restarted during the build; build it again"}
                build.log(build.reason["message"], "error")
                self._write_log(build)
        self.save()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_bytes())
            templates = {k: TemplateRecord(**{f: v for f, v in r.items() if f in _TEMPLATE_FIELDS})
                         for k, r in data["templates"].items()}
            builds = {k: BuildRecord(**{f: v for f, v in r.items() if f in _BUILD_FIELDS})
                      for k, r in data["builds"].items()}
        except UNREADABLE as error:
            set_aside(self.path, error, "templates")
            return
        for build in builds.values():
            try:
                build.logs = json.loads(self._log_path(build.build_id).read_bytes())
            except (OSError, ValueError):
                build.logs = []  # in progress when the server stopped, or lost: no log to show
        self.templates, self.builds = templates, builds

    def save(self) -> None:
        data = {"templates": {k: asdict(v) for k, v in self.templates.items()},
                "builds": {k: {f: getattr(v, f) for f in _BUILD_FIELDS - {"logs"}} for k, v in self.builds.items()}}
        write_private(self.path, json.dumps(data, indent=1, sort_keys=True).encode())

    def _log_path(self, build_id: str) -> Path:
        return self.logs / f"{build_id}.json"

    def _write_log(self, build: BuildRecord) -> None:
        write_private(self._log_path(build.build_id), json.dumps(build.logs).encode())

    # -- lookups ---------------------------------------------------------------------------

    def find(self, id_or_name: str) -> TemplateRecord | None:
        """By id or by name (a `name:tag` or `team/name` reference names its template too)."""
        if id_or_name in self.templates:
            return self.templates[id_or_name]
        name, _ = split_name(id_or_name)
        return next((t for t in self.templates.values() if name in t.names), None)

    def get(self, id_or_name: str) -> TemplateRecord:
        template = self.find(id_or_name)
        if template is None:
            raise ApiError(404, f"template '{id_or_name}' not found")
        return template

    def build(self, template_id: str, build_id: str) -> BuildRecord:
        build = self.builds.get(build_id)
        if build is None or build.template_id != self.get(template_id).template_id:
            raise ApiError(404, f"build '{build_id}' of template '{template_id}' not found")
        return build

    def ready_build(self, reference: str) -> tuple[TemplateRecord, BuildRecord] | None:
        """The build a sandbox of `reference` (id or name, with an optional `:tag`) starts from;
        None when no template has that id or name."""
        template = self.find(reference)
        if template is None:
            return None
        tag = split_name(reference)[1] if reference not in self.templates else None
        build_id = template.tags.get(tag or DEFAULT_TAG)
        if build_id is None:
            raise ApiError(400, f"template '{reference}' has no ready build"
                                     + (f" tagged '{tag}'" if tag else " (its builds are not finished or failed)"))
        return template, self.builds[build_id]

    def layer(self, build_id: str) -> Path:
        return self.layers / build_id

    def file_path(self, files_hash: str) -> Path:
        return self.files / f"{files_hash}.tar"

    # -- changes ---------------------------------------------------------------------------

    def request(self, name: str, tags: list[str], cpu_count: int, memory_mb: int) -> tuple[TemplateRecord, BuildRecord]:
        """A new build of the template called `name` (created when new), waiting for its start."""
        now = time.time()
        template = self.find(check_name(name))
        if template is None:
            template_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))
            template = self.templates[template_id] = TemplateRecord(template_id, [name], now, now)
        build = BuildRecord(str(uuid.uuid4()), template.template_id, WAITING, now, now, cpu_count, memory_mb,
                            tags=[check_tag(t) for t in tags])
        self.builds[build.build_id] = build
        template.builds.append(build.build_id)
        template.updated_at = now
        self.save()
        return template, build

    def finish(self, build: BuildRecord, error: dict | None) -> None:
        build.status = ERROR if error else READY
        build.reason = error
        build.finished_at = build.updated_at = time.time()
        template = self.templates.get(build.template_id)
        if template is not None and not error:
            for tag in {DEFAULT_TAG, *build.tags}:
                template.tags[tag] = build.build_id
                template.tag_times[tag] = build.finished_at
            template.updated_at = build.finished_at
        if build.build_id in self.builds:
            self._write_log(build)
        self.save()

    def assign_tags(self, target: str, tags: list[str]) -> BuildRecord:
        found = self.ready_build(target)
        if found is None:
            raise ApiError(404, f"template '{split_name(target)[0]}' not found")
        template, build = found
        now = time.time()
        for tag in tags:
            template.tags[check_tag(tag)] = build.build_id
            template.tag_times[tag] = now
        self.save()
        return build

    def remove_tags(self, name: str, tags: list[str]) -> None:
        template = self.get(name)
        for tag in tags:
            if tag not in template.tags:
                raise ApiError(404, f"tag '{tag}' of template '{name}' not found")
            del template.tags[tag]
            template.tag_times.pop(tag, None)
        self.save()

    def delete(self, id_or_name: str) -> list[str]:
        """Forget the template and its builds; returns the build ids (their tasks are cancelled by
        the caller, their layers freed by collect())."""
        template = self.get(id_or_name)
        del self.templates[template.template_id]
        for build_id in template.builds:
            self.builds.pop(build_id, None)
            self._log_path(build_id).unlink(missing_ok=True)
        self.save()
        return template.builds

    def spawned(self, template: TemplateRecord) -> None:
        template.spawn_count += 1
        template.last_spawned_at = time.time()
        self.save()

    def collect(self, sandboxes: Store) -> list[Path]:
        """Set aside every layer no tag and no sandbox uses (nor a build in progress writes), and
        what a previous server set aside; returns them for remove(). Decided and renamed on the
        event loop, where sandboxes are created, so no new sandbox can start from one of them."""
        keep = {build_id for t in self.templates.values() for build_id in t.tags.values()}
        keep |= {b.build_id for b in self.builds.values() if b.status in (WAITING, BUILDING)}
        keep |= {Path(r.layer).name for r in sandboxes.sandboxes.values() if r.layer}
        doomed = []
        for layer in self.layers.iterdir():
            if layer.name.startswith(".freed-"):
                doomed.append(layer)
            elif layer.name not in keep:
                doomed.append(layer.rename(layer.with_name(f".freed-{layer.name}")))
        return doomed


def remove(layers: list[Path]) -> None:
    for layer in layers:
        shutil.rmtree(layer, ignore_errors=True)
