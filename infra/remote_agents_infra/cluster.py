"""ClusterAccess: the one explicit kubernetes provider every Kubernetes resource uses, so nothing
depends on whichever context happens to be current on the machine running `pulumi up`."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from remote_agents_infra.config import InfraConfig


class ClusterAccess(pulumi.ComponentResource):
    provider: k8s.Provider

    def __init__(self, name: str, config: InfraConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("remote-agents:infra:ClusterAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        kubeconfig = config.kubeconfig
        if config.cluster == "gke":
            from remote_agents_infra import gke  # imports pulumi_gcp, present only when chosen

            kubeconfig = gke.autopilot_cluster(f"{name}-gke", config.gke_location, child)
        # kubeconfig None: the provider uses KUBECONFIG / ~/.kube/config and its current context.
        self.provider = k8s.Provider(f"{name}-kubernetes", kubeconfig=kubeconfig, opts=child)
        self.register_outputs({})
