"""Everything the operator may do in the cluster, and nothing more. This is the only place the
permissions are written down; `manifests/base/rbac.yaml` and the Pulumi program both come from it."""

from __future__ import annotations

from typing import Any

from remote_agents.api.names import AGENTS, GROUP, LEADER_LEASE, POOLS, TASKS
from remote_agents.deploy import names

_OWN_KINDS = [AGENTS, POOLS, TASKS]


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


def cluster_role_rules() -> list[dict[str, Any]]:
    return [
        # Our own kinds: pools create and delete their agents; finished tasks are deleted after their TTL.
        _rule(GROUP, _OWN_KINDS, ["get", "list", "watch", "patch", "update", "create", "delete"]),
        _rule(GROUP, [f"{kind}/status" for kind in _OWN_KINDS], ["get", "patch", "update"]),
        # Secrets referenced by an agent's env, source credentials or E2B key: read by name only.
        _rule("", ["secrets"], ["get"]),
        # A task's output goes to a ConfigMap when it is too large for the status.
        _rule("", ["configmaps"], ["get", "list", "watch", "create", "update", "patch", "delete"]),
        # Kopf posts events through both APIs.
        _rule("", ["events"], ["create", "patch"]),
        _rule("events.k8s.io", ["events"], ["create", "patch"]),
        # Kopf watches namespaces when cluster-wide; kube-system's uid is the default cluster id.
        _rule("", ["namespaces"], ["get", "list", "watch"]),
        # Kopf discovers the resources it serves from the CRDs.
        _rule("apiextensions.k8s.io", ["customresourcedefinitions"], ["get", "list", "watch"]),
        *_leader_election_rules(),
    ]


def _leader_election_rules() -> list[dict[str, Any]]:
    """Leader election (controller/clients/lease.py): read and renew the operator's own Lease,
    by name. `create` makes it the first time and cannot be restricted to a name (a create
    request's URL names no object for resourceNames to match), hence a rule of its own."""
    return [{**_rule("coordination.k8s.io", ["leases"], ["get", "update"]), "resourceNames": [LEADER_LEASE]},
            _rule("coordination.k8s.io", ["leases"], ["create"])]


def service_account(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": names.SERVICE_ACCOUNT, "namespace": namespace, "labels": dict(names.LABELS)}}


def cluster_role() -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": names.CLUSTER_ROLE, "labels": dict(names.LABELS)},
            "rules": cluster_role_rules()}


def cluster_role_binding(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": names.CLUSTER_ROLE, "labels": dict(names.LABELS)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": names.CLUSTER_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": names.SERVICE_ACCOUNT, "namespace": namespace}]}


def objects(namespace: str) -> list[dict[str, Any]]:
    return [service_account(namespace), cluster_role(), cluster_role_binding(namespace)]
