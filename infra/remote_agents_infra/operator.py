"""Operator: the namespace, the CRDs, the ServiceAccount and RBAC, the Deployment and Services;
all built by remote_agents.deploy, exactly what manifests/base holds."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from remote_agents.deploy import rbac, workload
from remote_agents_infra import kube


class Operator(pulumi.ComponentResource):
    namespace: pulumi.Output[str]

    def __init__(self, name: str, *, namespace: str, watch_namespaces: tuple[str, ...], image: str,
                 crds: list[dict[str, Any]], protect_crds: bool, provider: k8s.Provider,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("remote-agents:infra:Operator", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        ns = kube.declare(workload.namespace(namespace), child)
        self.namespace = ns.metadata.name
        # Deleting a CRD deletes every object of its kind, in every namespace: protected by default.
        crd_resources = [kube.declare(crd, pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
            protect=protect_crds))) for crd in crds]
        in_namespace = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[ns]))
        for manifest in rbac.objects(namespace, watch_namespaces):
            kube.declare(manifest, in_namespace)
        # No kubelet may run the Pod right away (or at all, in a test cluster): do not wait for rollout.
        after_crds = pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=crd_resources))
        for manifest in workload.objects(namespace, image, watch_namespaces):
            kube.declare(kube.with_annotations(manifest, kube.SKIP_AWAIT), after_crds)
        self.register_outputs({"namespace": self.namespace})
