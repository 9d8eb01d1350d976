"""An agent's resident process (spec.server, docs/resident-protocol.md): started after setup,
probed from inside the sandbox at each reconcile, restarted when it died (saying which sessions'
memory went with it), and restarted on a code update only when no task runs on the agent.

The operator keeps the process's stream open while it runs: when the process ends, a reconcile
is requested, which starts it again. A stream broken by a pause is picked up again by the
reconcile that resumes the sandbox, and after an operator restart by the reconcile on resume.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from remote_agents.api.models import RemoteAgentSpec
from remote_agents.api.names import AGENTS
from remote_agents.api.timestamps import now_rfc3339
from remote_agents.controller import resident
from remote_agents.controller.agents import decide
from remote_agents.controller.clients.e2b import E2BError, SandboxGateway
from remote_agents.controller.clients.events import EventSink
from remote_agents.controller.clients.kube import Kube
from remote_agents.controller.sandboxes import SandboxAddress

log = logging.getLogger(__name__)
PROBE_SECONDS = 30  # one health probe (no waiting) may take this long as a command
LOG_TAIL_CHARS = 2000
LOST_SESSIONS_LISTED = 64  # status.server.lostSessions keeps this many names


class ServerNotReady(Exception):
    """The resident process did not answer /healthz within spec.server.readyTimeoutSeconds."""


class ResidentServers:
    def __init__(self, gateway: SandboxGateway, kube: Kube, emit: EventSink):
        self.gateway = gateway
        self.kube = kube
        self.emit = emit
        # Set by the operator once the task room exists: tasks running on an agent now, and the
        # sessions it holds (both by namespace and agent name).
        self.running_tasks: Callable[[str, str], int] = lambda namespace, name: 0
        self.sessions_held: Callable[[str, str], list[str]] = lambda namespace, name: []
        self._watchers: dict[str, tuple[int, asyncio.Task]] = {}  # agent uid -> (pid, its watch)

    def forget(self, uid: str) -> None:
        watched = self._watchers.pop(uid, None)
        if watched:
            watched[1].cancel()

    async def ensure(self, body: Mapping[str, Any], spec: RemoteAgentSpec, sandbox: SandboxAddress,
                     env: dict[str, str], revision: str | None, recorded: Mapping[str, Any]) -> dict[str, Any]:
        """Make sure the agent's resident process runs (the right code, when that can be had
        without interrupting a task); returns status.server."""
        meta = body["metadata"]
        server = spec.server
        assert server is not None
        port = resident.port_of(server.port, meta["uid"])
        # A process recorded in another sandbox (replaced since) is not this one's to miss.
        recorded = dict(recorded) if recorded.get("sandboxID") == sandbox.sandbox_id else {}
        pid = await self._probe(sandbox, port, 0)
        if pid is not None and pid == recorded.get("pid"):
            if recorded.get("revision") == revision or self.running_tasks(meta["namespace"], meta["name"]):
                self._watch(body, sandbox, pid)
                return recorded  # (an upgrade waits for the tasks: their end requests a reconcile)
            self.forget(meta["uid"])  # (its end is ours, not news)
            await self.gateway.run(sandbox, resident.stop_command(pid), envs={}, cwd=None, timeout_seconds=30)
            why, lost = "CodeUpdated", self.sessions_held(meta["namespace"], meta["name"])
        elif pid is not None:
            # Running but not recorded (the operator stopped between starting it and writing status).
            self._watch(body, sandbox, pid)
            return {**recorded, "pid": pid, "sandboxID": sandbox.sandbox_id, "revision": revision,
                    "startedAt": recorded.get("startedAt") or now_rfc3339()}
        elif recorded.get("pid"):
            why, lost = "Died", self.sessions_held(meta["namespace"], meta["name"])
        else:
            why, lost = "Started", []
        self.forget(meta["uid"])
        new_pid, handle = await self._start(sandbox, spec, env, port, meta["uid"])
        restarts = int(recorded.get("restarts") or 0) + (why == "Died")
        if why == "Died":
            said = f"; the in-memory state of sessions {', '.join(lost)} was lost" if lost else ""
            self.emit(body, "Warning", "ServerRestarted",
                      f"resident process (pid {recorded['pid']}) was not running; started it again as pid "
                      f"{new_pid}{said}")
        elif why == "CodeUpdated":
            said = f"; sessions {', '.join(lost)} start afresh" if lost else ""
            self.emit(body, "Normal", "ServerUpgraded",
                      f"restarted the resident process on {str(revision)[:12]} as pid {new_pid}{said}")
        else:
            self.emit(body, "Normal", "ServerStarted", f"started the resident process as pid {new_pid}")
        self._watch(body, sandbox, new_pid, handle)
        return {"pid": new_pid, "sandboxID": sandbox.sandbox_id, "restarts": restarts, "startedAt": now_rfc3339(),
                "revision": revision,
                "lostSessions": lost[:LOST_SESSIONS_LISTED] if why != "Started" else []}

    async def _probe(self, sandbox: SandboxAddress, port: int, wait_seconds: float) -> int | None:
        outcome = await self.gateway.run(sandbox, resident.health_command(wait_seconds),
                                         envs=resident.client_env(port), cwd=None,
                                         timeout_seconds=wait_seconds + PROBE_SECONDS)
        return resident.parse_pid(outcome.stdout) if outcome.exit_code == 0 else None

    async def _start(self, sandbox: SandboxAddress, spec: RemoteAgentSpec, env: dict[str, str],
                     port: int, agent_uid: str) -> tuple[int, Any]:
        """The process's pid (as it reports it) and the start call's handle."""
        server = spec.server
        assert server is not None
        handle = await self.gateway.start_background(
            sandbox, resident.server_command(decide.workdir(spec)),
            envs={**env, **resident.client_env(port, resident.relay_port_of(port, agent_uid)),
                  "AGENT_SERVER_COMMAND": server.command})
        pid = await self._probe(sandbox, port, server.ready_timeout_seconds)
        if pid is None:
            tail = await self.gateway.run(sandbox, resident.log_tail_command(LOG_TAIL_CHARS), envs={}, cwd=None,
                                          timeout_seconds=30)
            raise ServerNotReady(f"the resident process did not answer GET /healthz on port {port} within "
                                 f"{server.ready_timeout_seconds}s; its log ends: {tail.stdout}")
        return pid, handle

    def _watch(self, body: Mapping[str, Any], sandbox: SandboxAddress, pid: int, handle: Any = None) -> None:
        """Hold the process's stream (the start call's, or attached by pid). When the process
        ends, ask for a reconcile, which starts it again. A stream that broke while the process
        may live on (a pause, a lost connection) is left: never probed from here, as reaching a
        paused sandbox would resume it; the reconcile after a resume attaches again."""
        meta = body["metadata"]
        watched = self._watchers.get(meta["uid"])
        if watched and watched[0] == pid and not watched[1].done():
            return
        self.forget(meta["uid"])

        async def watch(handle: Any) -> None:
            where = f"resident process {pid} of {meta['namespace']}/{meta['name']}"
            try:
                handle = handle or await self.gateway.attach(sandbox, pid)
            except E2BError as error:
                log.info("cannot follow %s: %s", where, error)
                return
            code = await self.gateway.wait_process(handle)
            if code is None:
                log.info("%s: its stream broke (not the process)", where)
                return
            log.info("%s exited (%s); requesting a reconcile", where, code)
            await self.kube.request_reconcile(AGENTS, meta["namespace"], meta["name"])
        self._watchers[meta["uid"]] = (pid, asyncio.get_running_loop().create_task(watch(handle)))
