"""The foundation: a real API server with RBAC, garbage collection and CRDs."""

import json

from tests.support.kubectl import eventually


def test_server_version_and_admin_rights(kubectl):
    version = json.loads(kubectl.run("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.37.")
    assert kubectl.run("auth", "can-i", "*", "*").stdout.strip() == "yes"
    names = kubectl.run("get", "namespaces", "-o", "name").stdout.split()
    assert "namespace/default" in names and "namespace/kube-system" in names


def test_rbac_is_enforced_for_other_identities(kubectl, namespace):
    kubectl.run("create", "serviceaccount", "nobody", "-n", namespace)
    answer = kubectl.run("auth", "can-i", "list", "secrets", "-n", namespace,
                         f"--as=system:serviceaccount:{namespace}:nobody", check=False)
    assert answer.stdout.strip() == "no"


def test_garbage_collector_deletes_dependents(kubectl, namespace):
    kubectl.run("create", "configmap", "owner", "-n", namespace)
    owner_uid = kubectl.get("configmap", "owner", namespace)["metadata"]["uid"]
    kubectl.apply(json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dependent", "namespace": namespace,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                                          "uid": owner_uid}]},
    }))
    kubectl.run("delete", "configmap", "owner", "-n", namespace)
    eventually(lambda: kubectl.get("configmap", "dependent", namespace) is None, timeout=90,
               what="the garbage collector to delete the dependent ConfigMap")


def test_crd_applied_server_side_becomes_established(kubectl):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.test"},
        "spec": {"group": "example.test", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}]},
    }
    kubectl.run("apply", "--server-side", "-f", "-", input=json.dumps(crd))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/widgets.example.test")


def test_cluster_up_is_idempotent(cluster):
    from pathlib import Path

    from remote_agents_local.cluster import control_plane

    again = control_plane.up(Path(cluster.state_dir))
    assert again.kubeconfig == cluster.kubeconfig and again.pids == cluster.pids
