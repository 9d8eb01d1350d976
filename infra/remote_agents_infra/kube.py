"""Declare a Kubernetes object given as a plain manifest dict (what remote_agents.deploy builds)."""

from __future__ import annotations

import re
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

_RESOURCE_TYPES: dict[tuple[str, str], type[pulumi.CustomResource]] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "Service"): k8s.core.v1.Service,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): k8s.rbac.v1.ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): k8s.rbac.v1.ClusterRoleBinding,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): k8s.apiextensions.v1.CustomResourceDefinition,
}

SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


# A namespaced install has a Role of one name in each namespace it serves.
_ONE_PER_NAMESPACE = {"Role", "RoleBinding"}


def logical_name(manifest: dict[str, Any]) -> str:
    name = f"{manifest['kind'].lower()}-{manifest['metadata']['name']}"
    return f"{name}-{manifest['metadata']['namespace']}" if manifest["kind"] in _ONE_PER_NAMESPACE else name


def declare(manifest: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    resource_type = _RESOURCE_TYPES[(manifest["apiVersion"], manifest["kind"])]
    # Top-level fields become constructor arguments (roleRef -> role_ref); nested ones pass through as camelCase.
    fields = {_snake(key): value for key, value in manifest.items() if key not in ("apiVersion", "kind")}
    return resource_type(logical_name(manifest), **fields, opts=opts)


def with_annotations(manifest: dict[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
    metadata = manifest["metadata"]
    return {**manifest, "metadata": {**metadata, "annotations": {**metadata.get("annotations", {}), **annotations}}}
