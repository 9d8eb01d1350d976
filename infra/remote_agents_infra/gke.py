"""cluster=gke: a GKE Autopilot cluster and a kubeconfig for it. Optional: pulumi-gcp is not a
dependency of remote-agents (config.py checks it is importable before anything is declared)."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp


def _kubeconfig(name: str, endpoint: str, ca_certificate: str) -> str:
    # Credentials come from gke-gcloud-auth-plugin at use time; no long-lived token is stored.
    return f"""apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: https://{endpoint}
    certificate-authority-data: {ca_certificate}
contexts:
- name: {name}
  context: {{cluster: {name}, user: {name}}}
current-context: {name}
users:
- name: {name}
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: gke-gcloud-auth-plugin
      provideClusterInfo: true
"""


def autopilot_cluster(name: str, location: str, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
    cluster = gcp.container.Cluster(name, location=location, enable_autopilot=True, opts=opts)
    kubeconfig = pulumi.Output.all(cluster.name, cluster.endpoint, cluster.master_auth.cluster_ca_certificate)
    return pulumi.Output.secret(kubeconfig.apply(lambda values: _kubeconfig(*values)))
