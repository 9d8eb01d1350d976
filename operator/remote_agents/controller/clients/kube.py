"""The few Kubernetes API calls the reconcilers make outside Kopf's own patching: reading
Secrets, writing status as work progresses, poking an object to be reconciled, and children."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from remote_agents.api.names import (
    GROUP, KEY_PROTECTION_FINALIZER, ORPHANS_CONFIGMAP, ORPHANS_LABEL, PUSHED_REVISION_ANNOTATION,
    RECONCILE_REQUEST_ANNOTATION, VERSION,
)
from remote_agents.api.timestamps import now_rfc3339
from remote_agents.controller.clients.kube_http import KubeHttp

log = logging.getLogger(__name__)
# The client is synchronous: calls run in this many threads, over as many pooled connections
# (fewer connections than threads and every call past the pool pays a fresh TLS handshake).
API_THREADS = 32


def api_path(resource: str, namespace: str | None = None, name: str = "", ours: bool = False) -> str:
    """The REST path of a collection (all namespaces when `namespace` is None) or of one object:
    a core `v1` resource, or one of ours."""
    root = f"/apis/{GROUP}/{VERSION}" if ours else "/api/v1"
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{root}{scope}/{resource}" + (f"/{name}" if name else "")


class SecretMissing(Exception):
    """A referenced Secret or key does not exist (the message names which, never a value)."""


def load_config() -> None:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


def _value(secret: dict[str, Any], namespace: str, name: str, key: str) -> str:
    data = secret.get("data") or {}
    if key not in data:
        raise SecretMissing(f"key {key!r} not found in Secret {namespace}/{name}")
    return base64.b64decode(data[key]).decode()


class Kube:
    def __init__(self) -> None:
        configuration = kubernetes.client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = API_THREADS
        self.client = kubernetes.client.ApiClient(configuration)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.http = KubeHttp(configuration)  # the calls every task makes

    async def secret_value(self, namespace: str, name: str, key: str, optional: bool = False) -> str | None:
        try:
            return _value(await self._secret(namespace, name), namespace, name, key)
        except SecretMissing:
            if optional:
                return None
            raise

    async def _secret(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return await self.http.request("GET", api_path("secrets", namespace, name))
        except ApiException as error:
            if error.status == 404:
                raise SecretMissing(f"Secret {namespace}/{name} not found") from None
            raise

    async def e2b_key(self, namespace: str, name: str, key: str) -> str:
        """An agent's own E2B key, its Secret protected by our finalizer while agents use it (see
        KEY_PROTECTION_FINALIZER). SecretMissing when it cannot be read: optional or not, there is
        no other account to use instead."""
        secret = await self._secret(namespace, name)
        value = _value(secret, namespace, name, key)
        meta = secret.get("metadata") or {}
        if KEY_PROTECTION_FINALIZER not in (meta.get("finalizers") or []) and not meta.get("deletionTimestamp"):
            try:
                await self.http.request("PATCH", api_path("secrets", namespace, name),
                                        {"metadata": {"finalizers": [KEY_PROTECTION_FINALIZER]}},
                                        "application/strategic-merge-patch+json")
            except ApiException as error:  # the agent still works; only its deletion may have to wait for a human
                log.warning("could not protect E2B key Secret %s/%s: %s %s", namespace, name, error.status,
                            error.reason)
        return value

    async def unprotect_secret(self, namespace: str, name: str) -> None:
        """Take our finalizer off an E2B key Secret no agent uses any more."""
        log.info("no agent uses E2B key Secret %s/%s any more: removing its protection", namespace, name)
        await self._unless_gone(self.http.request(
            "PATCH", api_path("secrets", namespace, name),
            {"metadata": {"$deleteFromPrimitiveList/finalizers": [KEY_PROTECTION_FINALIZER]}},
            "application/strategic-merge-patch+json"))

    def _request(self, method: str, path: str, query: dict[str, str] | None = None,
                 read_timeout: float | None = None) -> Any:
        """Send one blocking request over the client's connections and credentials, without its
        typed models: validating, building and parsing those costs more than the request itself
        on the task stream's lists and watches. The response, its body not read yet; an
        ApiException when the status is not 2xx."""
        request = self.client.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            auth_settings=["BearerToken"], header_params={"Accept": "application/json"})
        response = self.client.call_api(*request, _request_timeout=(10, read_timeout) if read_timeout else None)
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=response.read().decode(), data=None)
        return response

    def get_json(self, path: str) -> dict[str, Any]:
        """Blocking GET of any API path, as JSON."""
        return json.loads(self._request("GET", path).read().decode())

    def stream_json(self, path: str, query: dict[str, str], read_timeout: float) -> Iterator[dict[str, Any]]:
        """Blocking: the objects of a streaming GET (a watch: one JSON object per line) as they
        arrive, until the server ends it."""
        response = self._request("GET", path, query=query, read_timeout=read_timeout).response
        try:
            for line in response:
                if line.strip():
                    yield json.loads(line)
        finally:
            response.release_conn()

    @staticmethod
    async def _unless_gone(call: Awaitable[Any]) -> Any:
        """The call's result; None when its object is gone (404): deleted meanwhile, so there is
        nothing left to read, change or report on."""
        try:
            return await call
        except ApiException as error:
            if error.status != 404:
                raise
            return None

    async def patch_status(self, plural: str, namespace: str, name: str,
                           status: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch the status subresource; the updated object, or None when it is gone."""
        return await self._unless_gone(self.http.request(
            "PATCH", api_path(plural, namespace, name, ours=True) + "/status", {"status": status},
            "application/merge-patch+json"))

    async def scale(self, plural: str, namespace: str, name: str, replicas: int) -> None:
        """Set spec.replicas through the /scale subresource, as an HPA does."""
        await self._unless_gone(self.http.request(
            "PATCH", api_path(plural, namespace, name, ours=True) + "/scale", {"spec": {"replicas": replicas}},
            "application/merge-patch+json"))

    async def configmap_value(self, namespace: str, name: str, key: str) -> str | None:
        config_map = await self._unless_gone(asyncio.to_thread(self.core.read_namespaced_config_map, name, namespace))
        return (config_map.data or {}).get(key) if config_map else None

    async def configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data, or None when it does not exist."""
        config_map = await self._unless_gone(asyncio.to_thread(self.core.read_namespaced_config_map, name, namespace))
        return dict(config_map.data or {}) if config_map else None

    async def apply_configmap(self, namespace: str, name: str, data: dict[str, str], owner: dict[str, str]) -> None:
        """Create the ConfigMap, or replace its data; owned by `owner` so it goes with it."""
        body = {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                "metadata": {"name": name, "namespace": namespace, "ownerReferences": [
                    {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["name"],
                     "uid": owner["uid"]}]}}
        await self._create_config_map_or(namespace, body, partial(
            self.http.request, "PUT", api_path("configmaps", namespace, name), body))

    async def _create_config_map_or(self, namespace: str, body: dict[str, Any],
                                    on_conflict: Callable[[], Awaitable[Any]]) -> None:
        """Create a ConfigMap; if it exists already, do `on_conflict` (replace or patch it) instead."""
        try:
            await self.http.request("POST", api_path("configmaps", namespace), body)
        except ApiException as error:
            if error.status != 409:
                raise
            await on_conflict()

    async def request_reconcile(self, plural: str, namespace: str, name: str,
                                pushed_revision: str | None = None) -> None:
        """Touch an annotation so Kopf hands the object to its update handler (a level-triggered poke).
        A webhook also records the pushed commit, for people reading the object."""
        annotations = {RECONCILE_REQUEST_ANNOTATION: now_rfc3339()}
        if pushed_revision:
            annotations[PUSHED_REVISION_ANNOTATION] = pushed_revision
        await self.patch(plural, namespace, name, {"metadata": {"annotations": annotations}})

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._unless_gone(asyncio.to_thread(self.custom.get_namespaced_custom_object, GROUP, VERSION,
                                                         namespace, plural, name))

    async def list(self, plural: str, namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        result = await asyncio.to_thread(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace,
                                         plural, label_selector=label_selector or "")
        return result["items"]

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        """Create; False when the name is taken already (a repeat after a crash or a stale view)."""
        try:
            await asyncio.to_thread(self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace,
                                    plural, body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    async def delete(self, plural: str, namespace: str, name: str) -> None:
        await self._unless_gone(asyncio.to_thread(self.custom.delete_namespaced_custom_object, GROUP, VERSION,
                                                  namespace, plural, name))

    async def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch one of our objects; the updated object, or None when it is gone. Over the
        fast path (kube_http.py), as a pool's rollout patches each of its agents."""
        return await self._unless_gone(self.http.request(
            "PATCH", api_path(plural, namespace, name, ours=True), body, "application/merge-patch+json"))

    async def record_orphan(self, namespace: str, sandbox_id: str, owner: str) -> None:
        """Remember a sandbox left running by deletionPolicy Orphan, so the sweeper leaves it alone
        (E2B metadata cannot be changed after create, so "untagging" is recorded on our side)."""
        body = {"apiVersion": "v1", "kind": "ConfigMap", "data": {sandbox_id: owner},
                "metadata": {"name": ORPHANS_CONFIGMAP, "labels": {ORPHANS_LABEL: "true"}}}
        await self._create_config_map_or(namespace, body, partial(
            self.http.request, "PATCH", api_path("configmaps", namespace, ORPHANS_CONFIGMAP), body,
            "application/merge-patch+json"))

    async def orphaned_sandboxes(self, namespaces: tuple[str, ...]) -> set[str]:
        """The sandboxes recorded by record_orphan in these namespaces (all when empty: a namespaced
        operator may list ConfigMaps only in the namespaces it serves)."""
        selector = f"{ORPHANS_LABEL}=true"
        if namespaces:
            results = await asyncio.gather(*(asyncio.to_thread(
                self.core.list_namespaced_config_map, namespace, label_selector=selector) for namespace in namespaces))
        else:
            results = [await asyncio.to_thread(self.core.list_config_map_for_all_namespaces, label_selector=selector)]
        return {sandbox_id for result in results for item in result.items for sandbox_id in (item.data or {})}

    async def cluster_id(self) -> str:
        """The uid of kube-system: stable for the life of the cluster, unique across clusters."""
        namespace = await asyncio.to_thread(self.core.read_namespace, "kube-system")
        return namespace.metadata.uid
