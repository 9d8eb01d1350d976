"""An in-memory Kubernetes API behind the methods of the operator's `Kube` client
(controller/clients/kube.py), with their semantics: merge patches (a null deletes a key),
status only through patch_status (which returns the updated object), None for an object that is
gone (404), False for a create whose name is taken (409), SecretMissing for a missing Secret or
key, a resourceVersion bumped by every write (one counter, as etcd's revision), a generation
bumped by spec changes, finalizers holding a deleted object (deletionTimestamp) until they are
removed, and watch streams of our kinds (the listed objects, then ADDED / MODIFIED / DELETED,
delivered on the event loop after the write, as clients/watch.py delivers them).

Modelled only as far as the operator uses it: no garbage collection through ownerReferences, no
CRD schema validation or defaulting (a created object has no status until one is written), no
Kopf (a test calls the reconcilers itself), and no `http` (Events go to an EventLog sink).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from remote_agents.api.names import (
    KEY_PROTECTION_FINALIZER, ORPHANS_CONFIGMAP, ORPHANS_LABEL, PUSHED_REVISION_ANNOTATION, RECONCILE_REQUEST_ANNOTATION,
)
from remote_agents.api.timestamps import now_rfc3339
from remote_agents.controller.clients.kube import SecretMissing
from tests.support.faults import Faults

Key = tuple[str, str, str]  # (plural, namespace, name); core kinds by their plural too: "secrets", "configmaps"
Deliver = Callable[[str | None, dict[str, Any]], None]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def matches_selector(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated."""
    for term in filter(None, (selector or "").split(",")):
        term = term.strip()
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.faults = Faults()
        self.kube_system_uid = str(uuid.uuid4())
        self._revision = 0
        self._watchers: dict[str, list[Deliver]] = defaultdict(list)
        self._in_flight = 0  # watch deliveries scheduled and not yet run

    # ---- what tests use to set up and look -----------------------------------------------------
    def fail(self, operation: str, error: BaseException, **options: Any) -> None:
        """See Faults.add; `operation` is a method name (create, patch, patch_status, ...); the
        details `when` sees are plural, namespace, name and, for patches, body."""
        self.faults.add(operation, error, **options)

    def object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the stored object, or None."""
        found = self.objects.get((plural, namespace, name))
        return copy.deepcopy(found) if found else None

    def names(self, plural: str, namespace: str, label_selector: str | None = None) -> list[str]:
        return [o["metadata"]["name"] for o in self._select(plural, namespace, label_selector)]

    def add_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self._store("secrets", {"apiVersion": "v1", "kind": "Secret",
                                "metadata": {"name": name, "namespace": namespace},
                                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})

    def remove(self, plural: str, namespace: str, name: str) -> None:
        """The object vanishes (whatever its finalizers): as if someone else removed it."""
        gone = self.objects.pop((plural, namespace, name), None)
        if gone:
            self._tell(plural, "DELETED", gone)

    def watch(self, plural: str, deliver: Deliver, synced: asyncio.Event | None = None) -> Callable[[], None]:
        """Stream one of our kinds to `deliver`: the objects there are now (event type None), then
        `synced` is set, then every change. Returns what ends the stream."""
        self._watchers[plural].append(deliver)
        for (kind, _, _), body in list(self.objects.items()):
            if kind == plural:
                self._schedule(deliver, None, body)
        if synced is not None:
            asyncio.get_running_loop().call_soon(synced.set)  # after the listed objects, as ObjectWatch does
        return lambda: self._watchers[plural].remove(deliver)

    async def flush(self) -> None:
        """Return once every watch delivery scheduled so far has run."""
        while self._in_flight:
            await asyncio.sleep(0)

    # ---- the Kube interface --------------------------------------------------------------------
    async def e2b_key(self, namespace: str, name: str, key: str) -> str:
        """As Kube.e2b_key: the value, and our protection finalizer on its Secret."""
        value = await self.secret_value(namespace, name, key)
        secret = self.objects[("secrets", namespace, name)]
        meta = secret["metadata"]
        if KEY_PROTECTION_FINALIZER not in (meta.get("finalizers") or []) and not meta.get("deletionTimestamp"):
            meta["finalizers"] = [*(meta.get("finalizers") or []), KEY_PROTECTION_FINALIZER]
            self._bump(secret)
        return value

    async def unprotect_secret(self, namespace: str, name: str) -> None:
        found = self.objects.get(("secrets", namespace, name))
        if found:
            found["metadata"]["finalizers"] = [f for f in found["metadata"].get("finalizers") or []
                                               if f != KEY_PROTECTION_FINALIZER]
            self._bump(found)

    async def secret_value(self, namespace: str, name: str, key: str, optional: bool = False) -> str | None:
        self.faults.check("secret_value", after=False, namespace=namespace, name=name)
        secret = self.objects.get(("secrets", namespace, name))
        if secret is None:
            if optional:
                return None
            raise SecretMissing(f"Secret {namespace}/{name} not found")
        data = secret.get("data") or {}
        if key not in data:
            if optional:
                return None
            raise SecretMissing(f"key {key!r} not found in Secret {namespace}/{name}")
        return base64.b64decode(data[key]).decode()

    async def patch_status(self, plural: str, namespace: str, name: str,
                           status: dict[str, Any]) -> dict[str, Any] | None:
        self.faults.check("patch_status", after=False, plural=plural, namespace=namespace, name=name, body=status)
        found = self.objects.get((plural, namespace, name))
        if found is None:
            return None
        found["status"] = merge_patch(found.get("status") or {}, status)
        self._changed(plural, found)
        self.faults.check("patch_status", after=True, plural=plural, namespace=namespace, name=name, body=status)
        return copy.deepcopy(found)

    async def scale(self, plural: str, namespace: str, name: str, replicas: int) -> None:
        """The /scale subresource: spec.replicas only."""
        self.faults.check("scale", after=False, plural=plural, namespace=namespace, name=name)
        await self.patch(plural, namespace, name, {"spec": {"replicas": replicas}})

    async def configmap_value(self, namespace: str, name: str, key: str) -> str | None:
        found = self.objects.get(("configmaps", namespace, name))
        return (found.get("data") or {}).get(key) if found else None

    async def configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self.objects.get(("configmaps", namespace, name))
        return dict(found.get("data") or {}) if found else None

    async def apply_configmap(self, namespace: str, name: str, data: dict[str, str], owner: dict[str, str]) -> None:
        self.faults.check("apply_configmap", after=False, namespace=namespace, name=name)
        self._store("configmaps", {  # created, or replaced whole (PUT)
            "apiVersion": "v1", "kind": "ConfigMap", "data": dict(data),
            "metadata": {"name": name, "namespace": namespace, "ownerReferences": [
                {k: owner[k] for k in ("apiVersion", "kind", "name", "uid")}]}})

    async def request_reconcile(self, plural: str, namespace: str, name: str,
                                pushed_revision: str | None = None) -> None:
        annotations = {RECONCILE_REQUEST_ANNOTATION: now_rfc3339()}
        if pushed_revision:
            annotations[PUSHED_REVISION_ANNOTATION] = pushed_revision
        await self.patch(plural, namespace, name, {"metadata": {"annotations": annotations}})

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.faults.check("get", after=False, plural=plural, namespace=namespace, name=name)
        return self.object(plural, namespace, name)

    async def list(self, plural: str, namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        self.faults.check("list", after=False, plural=plural, namespace=namespace)
        return [copy.deepcopy(o) for o in self._select(plural, namespace, label_selector)]

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        name = body["metadata"]["name"]
        self.faults.check("create", after=False, plural=plural, namespace=namespace, name=name, body=body)
        if (plural, namespace, name) in self.objects:
            return False
        created = copy.deepcopy(body)
        created.pop("status", None)  # the status subresource: never written by a create
        created["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), generation=1,
                                   creationTimestamp=now_rfc3339())
        self._store(plural, created)
        self.faults.check("create", after=True, plural=plural, namespace=namespace, name=name, body=body)
        return True

    async def delete(self, plural: str, namespace: str, name: str) -> None:
        self.faults.check("delete", after=False, plural=plural, namespace=namespace, name=name)
        found = self.objects.get((plural, namespace, name))
        if found is None:
            return
        if found["metadata"].get("finalizers"):
            if not found["metadata"].get("deletionTimestamp"):
                found["metadata"]["deletionTimestamp"] = now_rfc3339()
                self._changed(plural, found)
        else:
            self.remove(plural, namespace, name)

    async def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.faults.check("patch", after=False, plural=plural, namespace=namespace, name=name, body=body)
        found = self.objects.get((plural, namespace, name))
        if found is None:
            return None
        patched = merge_patch(found, {k: v for k, v in body.items() if k != "status"})  # status: subresource only
        if patched.get("spec") != found.get("spec"):
            patched["metadata"]["generation"] = found["metadata"].get("generation", 1) + 1
        found.clear()
        found.update(patched)
        if found["metadata"].get("deletionTimestamp") and not found["metadata"].get("finalizers"):
            self.remove(plural, namespace, name)
            return None
        self._changed(plural, found)
        return copy.deepcopy(found)

    async def record_orphan(self, namespace: str, sandbox_id: str, owner: str) -> None:
        key = ("configmaps", namespace, ORPHANS_CONFIGMAP)
        existing = self.objects.get(key) or {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": ORPHANS_CONFIGMAP, "namespace": namespace, "labels": {ORPHANS_LABEL: "true"}}}
        self._store("configmaps", merge_patch(existing, {"data": {sandbox_id: owner}}))

    async def orphaned_sandboxes(self, namespaces: tuple[str, ...]) -> set[str]:
        return {sandbox_id for (plural, namespace, _), found in self.objects.items()
                if plural == "configmaps" and (not namespaces or namespace in namespaces)
                and matches_selector(found["metadata"].get("labels") or {}, f"{ORPHANS_LABEL}=true")
                for sandbox_id in found.get("data") or {}}

    async def cluster_id(self) -> str:
        return self.kube_system_uid

    # ---- storage and streams -------------------------------------------------------------------
    def _select(self, plural: str, namespace: str, label_selector: str | None) -> list[dict[str, Any]]:
        return [found for (kind, ns, _), found in self.objects.items() if kind == plural and ns == namespace
                and matches_selector(found["metadata"].get("labels") or {}, label_selector)]

    def _store(self, plural: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (plural, meta["namespace"], meta["name"])
        is_new = key not in self.objects
        if not is_new:
            meta.setdefault("uid", self.objects[key]["metadata"].get("uid"))
        meta.setdefault("uid", str(uuid.uuid4()))
        self.objects[key] = body
        self._bump(body)
        self._tell(plural, "ADDED" if is_new else "MODIFIED", body)

    def _changed(self, plural: str, body: dict[str, Any]) -> None:
        self._bump(body)
        self._tell(plural, "MODIFIED", body)

    def _bump(self, body: dict[str, Any]) -> None:
        self._revision += 1
        body["metadata"]["resourceVersion"] = str(self._revision)

    def _tell(self, plural: str, event_type: str, body: dict[str, Any]) -> None:
        for deliver in self._watchers.get(plural, ()):
            self._schedule(deliver, event_type, body)

    def _schedule(self, deliver: Deliver, event_type: str | None, body: dict[str, Any]) -> None:
        snapshot = copy.deepcopy(body)
        self._in_flight += 1

        def run() -> None:
            self._in_flight -= 1
            deliver(event_type, snapshot)
        asyncio.get_running_loop().call_soon(run)
