"""The operator's Namespace, Deployment and Services as plain dicts."""

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


def _probe(period_seconds: int, failure_threshold: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": period_seconds,
            "timeoutSeconds": 5, "failureThreshold": failure_threshold}


def _container(image: str, watched: tuple[str, ...]) -> dict[str, Any]:
    return {
        "name": "operator",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["operator", "--webhook-port", str(names.WEBHOOK_PORT), "--metrics-port", str(names.METRICS_PORT),
                 *(arg for watched_namespace in watched for arg in ("--namespace", watched_namespace))],
        "env": [
            _secret_env("E2B_API_KEY", names.E2B_SECRET, names.E2B_SECRET_KEY),
            # Without it the operator runs and only the GitHub push receiver stays off.
            _secret_env("GITHUB_WEBHOOK_SECRET", names.WEBHOOK_SECRET, names.WEBHOOK_SECRET_KEY, optional=True),
        ],
        "ports": [{"name": "webhook", "containerPort": names.WEBHOOK_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": names.METRICS_PORT, "protocol": "TCP"}],
        # Startup (Kopf discovery, first list) is covered by the initial failures the liveness probe allows.
        "livenessProbe": {**_probe(20, 3), "initialDelaySeconds": 15},
        "readinessProbe": _probe(10, 3),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        # git (ls-remote) and Python need a writable temp dir; the root fs stays read-only.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def deployment(namespace: str, image: str = names.IMAGE, watched: tuple[str, ...] = ()) -> dict[str, Any]:
    """The operator's Deployment; with `watched`, it serves only those namespaces (rbac.py grants no more)."""
    selector = dict(names.LABELS)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": names.DEPLOYMENT, "namespace": namespace, "labels": dict(names.LABELS)},
        "spec": {
            # Kopf runs standalone (no peering): exactly one instance, and never two during a rollout.
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": dict(names.LABELS)},
                "spec": {
                    "serviceAccountName": names.SERVICE_ACCOUNT,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [_container(image, watched)],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                },
            },
        },
    }


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
    return [deployment(namespace, image, watched), webhook_service(namespace), metrics_service(namespace)]
