"""The control plane's logic: sandbox lifecycle, limits, idempotency, timeouts.

HTTP-agnostic: failures are `ApiError(status, message)`, rendered by control_api."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import string
import time
from dataclasses import dataclass
from pathlib import Path

from remote_agents_local.e2b_local.cgroups import SandboxCgroups
from remote_agents_local.e2b_local.config import DEFAULT_SANDBOX_TIMEOUT, Settings
from remote_agents_local.e2b_local.isolation import DEFAULT_PATH, BoundaryConfig, SandboxFiles, SandboxInit
from remote_agents_local.e2b_local.processes import ProcessTable
from remote_agents_local.e2b_local.store import PAUSED, RUNNING, SandboxRecord, Store

log = logging.getLogger("e2b_local")
_ID_ALPHABET = string.ascii_lowercase + string.digits
_IDEMPOTENCY_KEY = re.compile(r"[a-z0-9-]{1,255}")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Runtime:
    """What exists of a running or paused sandbox besides its record."""
    files: SandboxFiles
    init: SandboxInit
    processes: ProcessTable


class SandboxManager:
    def __init__(self, settings: Settings, boundary: BoundaryConfig, cgroups: SandboxCgroups) -> None:
        self.settings = settings
        self.boundary = boundary
        self.cgroups = cgroups
        self.store = Store(settings.state_dir / "sandboxes.json")
        self.sandbox_root = settings.state_dir / "sandboxes"
        self.sandbox_root.mkdir(exist_ok=True, mode=0o700)
        self.runtimes: dict[str, Runtime] = {}
        self.on_kill: list = []  # callbacks(sandbox_id) of what else holds a sandbox's resources (watchers)
        self._report_orphans()

    def _report_orphans(self) -> None:
        """Sandbox directories without a record (a state file set aside, say) are kept and named."""
        for directory in sorted(p for p in self.sandbox_root.iterdir() if p.is_dir()):
            if directory.name not in self.store.sandboxes:
                log.warning("sandbox directory %s has no record in %s (its files are kept; remove the "
                            "directory once they are not needed)", directory, self.store.path.name)

    # -- lookups --------------------------------------------------------------------------

    def get(self, sandbox_id: str) -> SandboxRecord:
        record = self.store.sandboxes.get(sandbox_id)
        if record is None:
            raise ApiError(404, f"sandbox \"{sandbox_id}\" doesn't exist or you don't have access to it")
        return record

    def user_of(self, sandbox_id: str, name: str | None) -> str | None:
        """The user a call names, else its sandbox's default: its template's last USER (as on E2B),
        else None (`user`)."""
        record = self.store.sandboxes.get(sandbox_id)
        return name or (record.default_user if record is not None and record.default_user else None)

    def runtime(self, sandbox_id: str) -> Runtime:
        """The sandbox's runtime, rebuilt on demand (e.g. for sandboxes loaded after a restart)."""
        runtime = self.runtimes.get(sandbox_id)
        if runtime is None:
            record = self.get(sandbox_id)
            files = SandboxFiles(self.sandbox_root / sandbox_id, Path(record.layer) if record.layer else None)
            files.create(self.boundary)
            init = SandboxInit(self.boundary, files, self.cgroups.create(sandbox_id, record.memory_mb << 20),
                               sandbox_id)
            processes = ProcessTable(init, env=lambda: self._base_env(record), workdir=record.workdir)
            runtime = self.runtimes[sandbox_id] = Runtime(files, init, processes)
        return runtime

    @staticmethod
    def _base_env(record: SandboxRecord) -> dict[str, str]:
        return {
            "PATH": DEFAULT_PATH,
            "LANG": "C.UTF-8",
            "E2B_SANDBOX": "true",
            "E2B_SANDBOX_ID": record.sandbox_id,
            **record.template_env,
            **record.env_vars,
        }

    def running_count(self) -> int:
        return sum(1 for r in self.store.sandboxes.values() if r.state == RUNNING)

    def _check_timeout(self, timeout: int) -> int:
        if not isinstance(timeout, int) or timeout < 0:
            raise ApiError(400, "timeout must be a non-negative integer (seconds)")
        if timeout > self.settings.max_timeout:
            raise ApiError(400, f"Timeout cannot be greater than {self.settings.max_timeout} seconds")
        return timeout

    def _check_capacity(self) -> None:
        if self.running_count() >= self.settings.max_running:
            raise ApiError(429, f"You have reached the maximum number of concurrent E2B sandboxes "
                                f"({self.settings.max_running}). Please kill or pause some sandboxes.")

    # -- lifecycle ----------------------------------------------------------------------

    def create(self, body: dict, idempotency_key: str | None, launch: dict | None = None) -> SandboxRecord:
        """`launch`: the SandboxRecord fields of the built template the body names (templates.py)."""
        if idempotency_key is not None:
            if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
                raise ApiError(400, "Idempotency-Key must be 1-255 characters of [a-z0-9-]")
            existing = self.store.idempotency.get(idempotency_key)
            if existing in self.store.sandboxes:
                return self.store.sandboxes[existing]
        template = body.get("templateID")
        if not isinstance(template, str) or not template:
            raise ApiError(400, "templateID is required")
        timeout = self._check_timeout(body.get("timeout", DEFAULT_SANDBOX_TIMEOUT))
        self._check_capacity()
        now = time.time()
        record = SandboxRecord(
            sandbox_id="i" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(19)),
            state=RUNNING,
            started_at=now,
            end_at=now + timeout,
            access_token=secrets.token_hex(16),
            auto_pause=bool(body.get("autoPause", False)),
            auto_pause_memory=body.get("autoPauseMemory", True) is not False,
            metadata={str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
            env_vars={str(k): str(v) for k, v in (body.get("envVars") or {}).items()},
            **{"template_id": template, **(launch or {})},
        )
        self.store.sandboxes[record.sandbox_id] = record
        if idempotency_key is not None:
            self.store.idempotency[idempotency_key] = record.sandbox_id
        self.runtime(record.sandbox_id)
        self.store.save()
        return record

    def connect(self, sandbox_id: str, timeout: int | None) -> tuple[SandboxRecord, bool]:
        """Returns the record and whether it was resumed (paused before)."""
        record = self.get(sandbox_id)
        seconds = self._check_timeout(timeout if timeout is not None else DEFAULT_SANDBOX_TIMEOUT)
        now = time.time()
        if record.state == RUNNING:
            # Connecting to a running sandbox only ever extends its TTL.
            record.end_at = max(record.end_at, min(now + seconds, record.started_at + self.settings.max_timeout))
            self.store.save()
            return record, False
        self._check_capacity()
        self.runtime(sandbox_id)
        self.cgroups.thaw(sandbox_id)
        record.state = RUNNING
        record.started_at = now  # a resume restarts the max-runtime clock, as on E2B
        record.end_at = now + seconds
        self.store.save()
        return record, True

    async def pause(self, sandbox_id: str, keep_memory: bool = True) -> None:
        """Freeze every process (a full pause), or, filesystem-only, end them all and keep the
        files: the next use after resume starts a new init, i.e. boots the sandbox again."""
        record = self.get(sandbox_id)
        if record.state == PAUSED:
            raise ApiError(409, f"Sandbox {sandbox_id} is already paused")
        runtime = self.runtime(sandbox_id)
        runtime.processes.drop_streams()
        if keep_memory:
            self.cgroups.freeze(sandbox_id)
        else:
            del self.runtimes[sandbox_id]
            self.cgroups.kill(sandbox_id)
            await runtime.init.stop()
            await asyncio.to_thread(self.cgroups.remove, sandbox_id)
        record.state = PAUSED
        self.store.save()

    async def kill(self, sandbox_id: str) -> None:
        self.get(sandbox_id)
        del self.store.sandboxes[sandbox_id]
        self.store.save()
        runtime = self.runtimes.pop(sandbox_id, None)
        for callback in self.on_kill:
            callback(sandbox_id)
        if runtime is not None:
            runtime.processes.drop_streams()
            # The pid namespace dies with its init: nothing the sandbox started survives, whatever
            # session, process group or cgroup it moved to. cgroup.kill also takes what is still
            # entering (a command's helper joins the cgroups before the namespaces).
            self.cgroups.kill(sandbox_id)
            await runtime.init.stop()
        else:
            self.cgroups.kill(sandbox_id)
        await asyncio.to_thread(self.cgroups.remove, sandbox_id)
        await asyncio.to_thread(SandboxFiles(self.sandbox_root / sandbox_id).destroy)

    def set_timeout(self, sandbox_id: str, timeout: int) -> None:
        record = self.get(sandbox_id)
        seconds = self._check_timeout(timeout)
        # However often it is extended, a sandbox never outlives start + max runtime.
        record.end_at = min(time.time() + seconds, record.started_at + self.settings.max_timeout)
        self.store.save()

    def list(self, states: set[str], metadata: dict[str, str], template: str | None,
             order: str) -> list[SandboxRecord]:
        records = [
            r for r in self.store.sandboxes.values()
            if r.state in states
            and all(r.metadata.get(k) == v for k, v in metadata.items())
            and (template is None or template in (r.template_id, r.template_alias))
        ]
        records.sort(key=lambda r: (r.started_at, r.sandbox_id), reverse=(order == "desc"))
        return records

    async def expire(self) -> None:
        """Timeout action for every running sandbox past its end: pause if autoPause, else kill."""
        now = time.time()
        for record in [r for r in self.store.sandboxes.values() if r.state == RUNNING and r.end_at <= now]:
            if record.auto_pause:
                await self.pause(record.sandbox_id, keep_memory=record.auto_pause_memory)
            else:
                await self.kill(record.sandbox_id)

    def shutdown(self) -> None:
        """Server exit: sandbox processes cannot outlive it (their pipes end here), records and files stay."""
        for sandbox_id, runtime in self.runtimes.items():
            self.cgroups.kill(sandbox_id)
            runtime.init.stop_now()
            self.cgroups.remove(sandbox_id)
        self.runtimes.clear()
        self.cgroups.release()
