"""Kubernetes Events about our objects, posted in the background: an Event must never block or
fail the work it describes (and posting works from any task, not only inside Kopf handlers)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from remote_agents.api.names import API_VERSION
from remote_agents.api.timestamps import now_rfc3339
from remote_agents.controller.clients.kube import api_path
from remote_agents.controller.clients.kube_http import KubeHttp

log = logging.getLogger(__name__)
EVENT_SOURCE = "remote-agents"
MESSAGE_LIMIT = 1024

# emit(body, type, reason, message): what every room is handed to report on an object.
EventSink = Callable[[Mapping[str, Any], str, str, str], None]


class EventRecorder:
    def __init__(self, http: KubeHttp):
        self.http = http
        self._pending: set[asyncio.Task] = set()

    def __call__(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        task = asyncio.get_running_loop().create_task(self._post(body, kind, reason, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        meta = body["metadata"]
        now = now_rfc3339()
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": body.get("apiVersion", API_VERSION), "kind": body.get("kind"),
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "reason": reason, "message": message[:MESSAGE_LIMIT], "type": kind, "count": 1, "firstTimestamp": now,
            "lastTimestamp": now, "source": {"component": EVENT_SOURCE}, "reportingComponent": EVENT_SOURCE,
            "reportingInstance": socket.gethostname()}
        try:
            await self.http.request("POST", api_path("events", meta["namespace"]), event)
        except ApiException as error:
            # A namespace being deleted refuses new Events: nothing left to tell anyone there.
            level = logging.DEBUG if "NamespaceTerminating" in (error.body or "") else logging.WARNING
            log.log(level, "could not record event %s for %s/%s: %s %s", reason, meta["namespace"], meta["name"],
                    error.status, error.reason)
        except OSError as error:
            log.warning("could not record event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], error)
