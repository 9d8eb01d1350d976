"""List, then watch, one custom resource kind, and hand every event to a callback on the loop.

For the operator's in-memory views: AgentTasks, its high-churn objects, which need nothing of
Kopf but the stream (no finalizers, no handler progress, no diff bases), and the fleet's view of
RemoteAgents, which must know when it is complete (`synced`): nothing may be judged gone before.

The stream follows the API's contract: a list gives the objects and a resourceVersion, a watch
from there gives every change; when the watch ends it is resumed from the last version seen, and
when that version is too old (410 Gone) everything is listed again, with objects that vanished
in between delivered as deleted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from remote_agents.controller.clients.kube import Kube, api_path

log = logging.getLogger(__name__)
WATCH_SECONDS = 300  # the server ends each watch after this long; it is resumed at once
RETRY_SECONDS = (1, 2, 5, 10, 30)  # after an error, waits before listing again (the last repeats)

Deliver = Callable[[str | None, dict[str, Any]], None]  # (None for listed / ADDED / MODIFIED / DELETED, object)


class ObjectWatch:
    def __init__(self, kube: Kube, plural: str, namespaces: tuple[str, ...], deliver: Deliver):
        self.kube = kube
        self.plural = plural
        self.namespaces = namespaces  # empty: all namespaces
        self.deliver = deliver
        self._stopped = threading.Event()
        self._unlisted = set(namespaces or (None,))  # namespaces whose first list is not delivered yet
        self.synced = asyncio.Event()  # set once every namespace's first list is delivered

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """One daemon thread per namespace (or one for all): each blocks on its stream."""
        for namespace in self.namespaces or (None,):
            threading.Thread(target=self._follow, args=(namespace, loop), daemon=True,
                             name=f"watch-{self.plural}-{namespace or 'all'}").start()

    def stop(self) -> None:
        """Deliver nothing more; the threads end when their current request does."""
        self._stopped.set()

    def _hand_over(self, loop: asyncio.AbstractEventLoop, kind: str | None, body: dict[str, Any]) -> None:
        if not self._stopped.is_set():
            loop.call_soon_threadsafe(self.deliver, kind, body)

    def _follow(self, namespace: str | None, loop: asyncio.AbstractEventLoop) -> None:
        path = api_path(self.plural, namespace, ours=True)
        known: set[str] = set()  # uids delivered and not deleted since
        failures = 0
        while not self._stopped.is_set():
            try:
                known, version = self._relist(path, known, loop)
                loop.call_soon_threadsafe(self._listed, namespace)
                while version is not None and not self._stopped.is_set():
                    version = self._watch(path, version, known, loop)
                failures = 0
            except Exception as error:  # the API server restarting, a timeout, a dropped connection
                pause = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("watch of %s failed (%s); listing again in %ss", self.plural, error, pause)
                self._stopped.wait(pause)

    def _listed(self, namespace: str | None) -> None:
        """On the loop, after the list's objects (call_soon keeps the order)."""
        self._unlisted.discard(namespace)
        if not self._unlisted:
            self.synced.set()

    def _relist(self, path: str, known: set[str], loop: asyncio.AbstractEventLoop) -> tuple[set[str], str]:
        listing = self.kube.get_json(path)
        items = listing.get("items") or []
        listed = {item["metadata"]["uid"] for item in items}
        for uid in known - listed:  # deleted while no watch was open
            self._hand_over(loop, "DELETED", {"metadata": {"uid": uid}})
        for item in items:
            self._hand_over(loop, None, item)
        return listed, listing["metadata"]["resourceVersion"]

    def _watch(self, path: str, version: str, known: set[str], loop: asyncio.AbstractEventLoop) -> str | None:
        """Follow one watch request; the version to resume from, or None when only a new list will do."""
        for event in self.kube.stream_json(path, {"watch": "1", "resourceVersion": version,
                                                  "allowWatchBookmarks": "true",
                                                  "timeoutSeconds": str(WATCH_SECONDS)}, WATCH_SECONDS + 30):
            kind, body = event["type"], event["object"]
            if kind == "ERROR":
                if body.get("code") == 410:  # the version is older than the server keeps
                    return None
                raise ApiException(status=body.get("code"), reason=body.get("message"))
            version = body["metadata"]["resourceVersion"]
            if kind == "BOOKMARK":
                continue
            uid = body["metadata"]["uid"]
            if kind == "DELETED":
                known.discard(uid)
            else:
                known.add(uid)
            self._hand_over(loop, kind, body)
        return version
