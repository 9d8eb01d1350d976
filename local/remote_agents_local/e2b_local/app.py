"""The one ASGI app on the port: requests with an `E2b-Sandbox-Id` header go to that
sandbox's envd (Connect RPC services or plain HTTP), all others to the control plane."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from urllib.parse import parse_qs

from e2b.envd.filesystem.filesystem_connect import FilesystemASGIApplication
from e2b.envd.process.process_connect import ProcessASGIApplication
from remote_agents_local.e2b_local.control_api import ControlApi
from remote_agents_local.e2b_local.envd_filesystem import FilesystemService
from remote_agents_local.e2b_local.envd_http import EnvdHttp
from remote_agents_local.e2b_local.envd_process import ProcessService
from remote_agents_local.e2b_local.faults import RETRY_AFTER_SECONDS, Faults
from remote_agents_local.e2b_local.processes import SANDBOX_GONE
from remote_agents_local.e2b_local.sandboxes import SandboxManager
from remote_agents_local.e2b_local.store import RUNNING

log = logging.getLogger("e2b_local")
EXPIRY_CHECK_SECONDS = 0.25


async def _send_json(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


class LocalE2BApp:
    def __init__(self, manager: SandboxManager, api_key: str, faults: Faults) -> None:
        self.manager = manager
        self.faults = faults
        self.control = ControlApi(manager, api_key, faults).app()
        self.process = ProcessASGIApplication(ProcessService(manager))
        filesystem = FilesystemService(manager)
        manager.on_kill.append(filesystem.close_watchers)
        self.filesystem = FilesystemASGIApplication(filesystem)
        self.envd_http = EnvdHttp(manager).app()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.monotonic()
        status = [0]

        async def logged_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                log.info("%s %s%s -> %s (%.0f ms)", scope["method"], scope["path"],
                         f" sandbox={sandbox_id}" if sandbox_id else "", status[0],
                         (time.monotonic() - started) * 1000)
            await send(message)

        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        sandbox_id = headers.get("e2b-sandbox-id")
        if sandbox_id:
            await self._envd(scope, receive, logged_send, sandbox_id, headers)
        elif scope["path"] == "/files" and b"signature=" in scope.get("query_string", b""):
            await self._signed_file(scope, receive, logged_send)
        elif scope["path"] == "/health":
            await _send_json(logged_send, 200, {"status": "ok"})
        else:
            await self.control(scope, receive, logged_send)

    async def _envd(self, scope, receive, send, sandbox_id: str, headers: dict[str, str]) -> None:
        await self.faults.delay("envd")
        injected = self.faults.injected_status("envd")
        if injected is not None:
            await _send_json(send, injected, {"code": injected, "message": "injected envd failure"},
                             {"Retry-After": RETRY_AFTER_SECONDS})
            return
        record = self.manager.store.sandboxes.get(sandbox_id)
        if record is None:
            # What E2B's edge proxy answers for a paused/killed/unknown sandbox.
            await _send_json(send, 502, {"sandboxId": sandbox_id, "message": SANDBOX_GONE, "code": 502})
            return
        # Every envd route needs the sandbox's own token: without it a local process could run
        # commands in any sandbox it can name. Compared in constant time.
        token = headers.get("x-access-token", "")
        if not hmac.compare_digest(token.encode(), record.access_token.encode()):
            await _send_json(send, 401, {"code": 401, "message": "missing or invalid X-Access-Token"})
            return
        if record.state != RUNNING:
            await _send_json(send, 502, {"sandboxId": sandbox_id, "message": SANDBOX_GONE, "code": 502})
            return
        path = scope["path"]
        send = self._dropped_when_gone(send, sandbox_id)
        if path.startswith(self.process.path + "/"):
            await self.process(scope, receive, send)
        elif path.startswith(self.filesystem.path + "/"):
            await self.filesystem(scope, receive, send)
        else:
            await self.envd_http(scope, receive, send)

    def _dropped_when_gone(self, send, sandbox_id: str):
        """What E2B does to a call in flight when its sandbox is killed or paused: the connection
        drops (the VM is gone), so the SDK probes /health and reports the sandbox gone. A response
        still being sent for a sandbox that is no longer running is cut off instead of finished."""
        started = [False]

        async def guarded(message) -> None:
            if started[0]:
                record = self.manager.store.sandboxes.get(sandbox_id)
                if record is None or record.state != RUNNING:
                    raise ConnectionAbortedError(f"sandbox {sandbox_id} went away during the call")
            started[0] = started[0] or message["type"] == "http.response.start"
            await send(message)
        return guarded

    async def _signed_file(self, scope, receive, send) -> None:
        """A signed download/upload URL (the SDK's download_url / upload_url): it names no sandbox,
        so the sandbox is the one whose access token makes the signature; nothing else
        authenticates it. Signature = base64(sha256("path:op:user:token[:expiration]"))."""
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode(), keep_blank_values=True).items()}
        operation = "write" if scope["method"] == "POST" else "read"
        expiration = query.get("signature_expiration")
        if expiration is not None and not expiration.lstrip("-").isdigit():
            await _send_json(send, 400, {"code": 400, "message": "invalid signature_expiration"})
            return
        found = None
        for record in list(self.manager.store.sandboxes.values()):
            raw = f"{query.get('path', '')}:{operation}:{query.get('username', '')}:{record.access_token}"
            if expiration is not None:
                raw += f":{expiration}"
            expected = base64.b64encode(hashlib.sha256(raw.encode()).digest()).rstrip(b"=").decode()
            if hmac.compare_digest(f"v1_{expected}".encode(), query.get("signature", "").encode()):
                found = record
        if found is None:
            await _send_json(send, 401, {"code": 401, "message": "invalid signature"})
            return
        if expiration is not None and int(expiration) < time.time():
            await _send_json(send, 401, {"code": 401, "message": "signature is already expired"})
            return
        if found.state != RUNNING:
            await _send_json(send, 502, {"sandboxId": found.sandbox_id, "message": SANDBOX_GONE, "code": 502})
            return
        scope = {**scope, "headers": [*scope["headers"], (b"e2b-sandbox-id", found.sandbox_id.encode())]}
        await self.envd_http(scope, receive, send)

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK_SECONDS)
            try:
                await self.manager.expire()
            except Exception:  # a failed expiry must not stop all future ones
                log.exception("timeout handling failed")

    async def _lifespan(self, receive, send) -> None:
        task = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                task = asyncio.get_running_loop().create_task(self._expiry_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                self.manager.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
