"""Everything the operator may do in the cluster, and nothing more. This is the only place the
permissions are written down; `manifests/base/rbac.yaml` and the Pulumi program both come from it.

Two shapes, one set of rules:
- cluster-wide (no watched namespaces, `manifests/base`): one ClusterRole with every rule, bound
  cluster-wide. Agents may live in any namespace, so Secret `get` and the ConfigMap writes hold in
  every namespace, kube-system's included: RBAC has no deny rules, no label selectors, and
  `create` cannot be limited by name. docs/deploy.md states the trade-off.
- namespaced (the operator run with `--namespace`): a Role and RoleBinding with the namespace
  rules in each watched namespace, and a ClusterRole with only the cluster-scoped reads.
"""

from __future__ import annotations

from typing import Any

from remote_agents.api.names import AGENTS, GROUP, LEADER_LEASE, ORPHANS_CONFIGMAP, POOLS, TASKS, TEMPLATES
from remote_agents.deploy import names

_OWN_KINDS = [AGENTS, POOLS, TASKS, TEMPLATES]
RBAC_API = "rbac.authorization.k8s.io/v1"


def _rule(group: str, resources: list[str], verbs: list[str], resource_names: list[str] | None = None
          ) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": [group], "resources": resources, "verbs": verbs}
    if resource_names:
        rule["resourceNames"] = resource_names
    return rule


def namespace_rules() -> list[dict[str, Any]]:
    """What the operator does where agents live."""
    return [
        # Our own kinds (Kopf and the operator only ever PATCH them): pools create and delete their
        # agents; finished tasks are deleted after their TTL.
        _rule(GROUP, _OWN_KINDS, ["get", "list", "watch", "patch", "create", "delete"]),
        _rule(GROUP, [f"{kind}/status" for kind in _OWN_KINDS], ["patch"]),
        # An autoscaled pool's replicas are written as an HPA writes them.
        _rule(GROUP, [f"{POOLS}/scale"], ["patch"]),
        # Secrets referenced by an agent's env, source credentials or E2B key, or a task's GitHub
        # token: read by name only, never listed or watched; patched only to add or remove the E2B
        # key's protection finalizer (names.KEY_PROTECTION_FINALIZER).
        _rule("", ["secrets"], ["get", "patch"]),
        # A task's output ConfigMap (created, replaced when a finish is repeated, read to publish),
        # the ConfigMaps E2BTemplates copy files from (read), and the record of sandboxes left running by deletionPolicy Orphan (listed by the sweeper).
        _rule("", ["configmaps"], ["get", "list", "create", "update"]),
        _rule("", ["configmaps"], ["patch"], [ORPHANS_CONFIGMAP]),
        # Events on our objects (the operator's and Kopf's, both through the core API).
        _rule("", ["events"], ["create"]),
    ]


def cluster_rules(namespaced: bool) -> list[dict[str, Any]]:
    """Reads of cluster-scoped objects: Kopf watches the CRDs to learn when its resources appear;
    kube-system's uid is the default cluster id; a namespaced Kopf lists the namespaces it serves."""
    rules = [_rule("apiextensions.k8s.io", ["customresourcedefinitions"], ["list", "watch"]),
             _rule("", ["namespaces"], ["get"], ["kube-system"])]
    if namespaced:
        rules.append(_rule("", ["namespaces"], ["list", "watch"]))
    return rules


def leader_election_rules() -> list[dict[str, Any]]:
    """Leader election (controller/clients/lease.py): read and renew the operator's own Lease,
    by name. `create` makes it the first time and cannot be restricted to a name (a create
    request's URL names no object for resourceNames to match), hence a rule of its own."""
    return [_rule("coordination.k8s.io", ["leases"], ["get", "update"], [LEADER_LEASE]),
            _rule("coordination.k8s.io", ["leases"], ["create"])]


def cluster_role_rules() -> list[dict[str, Any]]:
    """The cluster-wide install's ClusterRole."""
    return [*namespace_rules(), *cluster_rules(namespaced=False)]


def _metadata(name: str, namespace: str | None = None) -> dict[str, Any]:
    return {"name": name, **({"namespace": namespace} if namespace else {}), "labels": dict(names.LABELS)}


def _binding(kind: str, name: str, role_kind: str, operator_namespace: str, namespace: str | None = None
             ) -> dict[str, Any]:
    return {"apiVersion": RBAC_API, "kind": kind, "metadata": _metadata(name, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": names.SERVICE_ACCOUNT, "namespace": operator_namespace}]}


def service_account(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(names.SERVICE_ACCOUNT, namespace)}


def cluster_role_name(namespace: str, watched: tuple[str, ...] = ()) -> str:
    """The name of the ClusterRole (and of a namespaced install's Roles): a namespaced install's is
    its own, so that several can share a cluster."""
    return f"{names.CLUSTER_ROLE}-{namespace}" if watched else names.CLUSTER_ROLE


def objects(namespace: str, watched: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The ServiceAccount in `namespace` and its RBAC: cluster-wide when `watched` is empty, else
    for exactly the watched namespaces."""
    role = cluster_role_name(namespace, watched)
    rules = cluster_rules(namespaced=True) if watched else cluster_role_rules()
    found = [service_account(namespace),
             {"apiVersion": RBAC_API, "kind": "ClusterRole", "metadata": _metadata(role), "rules": rules},
             _binding("ClusterRoleBinding", role, "ClusterRole", namespace)]
    for agents_namespace in watched:
        found += [{"apiVersion": RBAC_API, "kind": "Role", "metadata": _metadata(role, agents_namespace),
                   "rules": namespace_rules()},
                  _binding("RoleBinding", role, "Role", namespace, agents_namespace)]
    # The Lease lives in the operator's own namespace: a Role there, in both shapes (a ClusterRole
    # would let it create Leases in every namespace).
    election = f"{role}-leader-election"
    found += [{"apiVersion": RBAC_API, "kind": "Role", "metadata": _metadata(election, namespace),
               "rules": leader_election_rules()},
              _binding("RoleBinding", election, "Role", namespace, namespace)]
    return found
