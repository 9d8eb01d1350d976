"""The operator's Namespace, Deployment, PodDisruptionBudget and Services as plain dicts.

Two replicas with leader election: one acts, the other stands by to take over when the leader's
Lease expires (a crash, a lost node) or is released (a rollout, a drain)."""

from __future__ import annotations

from typing import Any

from remote_agents.deploy import names


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(names.LABELS)}}


def _secret_env(variable: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": variable, "valueFrom": {"secretKeyRef": ref}}


REPLICAS = 2
# A standby answers its probes as healthy and ready (metrics.py): the rollout's maxUnavailable 0
# needs a new standby to become ready, and the budget below counts the standby as available.
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
# The pod's own namespace is the Lease's (the operator reads it from its service account mount).
ARGS = ["operator", "--leader-election", "--webhook-port", str(names.WEBHOOK_PORT),
        "--metrics-port", str(names.METRICS_PORT)]


def _probe(path: str, period_seconds: int, failure_threshold: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "metrics"}, "periodSeconds": period_seconds,
            "timeoutSeconds": 5, "failureThreshold": failure_threshold}


def container(image: str = names.IMAGE, watched: tuple[str, ...] = ()) -> dict[str, Any]:
    """With `watched`, the operator serves only those namespaces (rbac.py grants no more)."""
    return {
        "name": "operator",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": [*ARGS, *(arg for watched_namespace in watched for arg in ("--namespace", watched_namespace))],
        "env": [
            _secret_env("E2B_API_KEY", names.E2B_SECRET, names.E2B_SECRET_KEY),
            # Without it the operator runs and only the GitHub push receiver stays off.
            _secret_env("GITHUB_WEBHOOK_SECRET", names.WEBHOOK_SECRET, names.WEBHOOK_SECRET_KEY, optional=True),
        ],
        "ports": [{"name": "webhook", "containerPort": names.WEBHOOK_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": names.METRICS_PORT, "protocol": "TCP"}],
        # Startup (Kopf discovery, first list) is covered by the initial failures the liveness probe allows.
        "livenessProbe": {**_probe("/healthz", 20, 3), "initialDelaySeconds": 15},
        "readinessProbe": _probe("/readyz", 10, 3),
        "resources": {kind: dict(values) for kind, values in RESOURCES.items()},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        # git (ls-remote) and Python need a writable temp dir; the root fs stays read-only.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def pod_security_context() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}


def anti_affinity(labels: dict[str, str]) -> dict[str, Any]:
    """Replicas on different nodes where the cluster has them (preferred: a one-node cluster still runs both)."""
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100,
        "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": dict(labels)}},
    }]}}


def deployment(namespace: str, image: str = names.IMAGE, watched: tuple[str, ...] = ()) -> dict[str, Any]:
    selector = dict(names.LABELS)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": names.DEPLOYMENT, "namespace": namespace, "labels": dict(names.LABELS)},
        "spec": {
            "replicas": REPLICAS,
            # A new replica is up (as a standby) before an old one stops; the stopping leader
            # releases its Lease, so a rollout hands over in about a retry period.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": dict(names.LABELS)},
                "spec": {
                    "serviceAccountName": names.SERVICE_ACCOUNT,
                    "securityContext": pod_security_context(),
                    "affinity": anti_affinity(selector),
                    "containers": [container(image, watched)],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                },
            },
        },
    }


def disruption_budget(namespace: str) -> dict[str, Any]:
    """A drain evicts one replica at a time: the other leads or takes over."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": names.DEPLOYMENT, "namespace": namespace, "labels": dict(names.LABELS)},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(names.LABELS)}}}


def _service(name: str, namespace: str, port: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(names.LABELS)},
            "spec": {"type": "ClusterIP", "selector": dict(names.LABELS), "ports": [port]}}


def webhook_service(namespace: str) -> dict[str, Any]:
    # What an Ingress (or a tunnel) exposes to GitHub at the webhook URL.
    return _service(names.WEBHOOK_SERVICE, namespace,
                    {"name": "webhook", "port": 443, "targetPort": names.WEBHOOK_PORT, "protocol": "TCP"})


def metrics_service(namespace: str) -> dict[str, Any]:
    # Separate from the webhook Service so that exposing the webhook never exposes metrics.
    return _service(names.METRICS_SERVICE, namespace,
                    {"name": "metrics", "port": names.METRICS_PORT, "targetPort": names.METRICS_PORT, "protocol": "TCP"})


def objects(namespace: str, image: str = names.IMAGE, watched: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [deployment(namespace, image, watched), disruption_budget(namespace), webhook_service(namespace),
            metrics_service(namespace)]
