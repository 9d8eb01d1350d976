"""The two install paths deploy the same cluster objects: what `kubectl kustomize manifests/base`
renders equals what the Pulumi program declares (CRDs and RBAC exactly; the Deployment, its
disruption budget and the Services differ only by Pulumi's skipAwait annotation). The base adds no
Secrets; Pulumi adds them."""

from __future__ import annotations

from remote_agents.deploy import names
from tests.deploy.pulumi_harness import base_config, run_program
from tests.deploy.test_manifests import kustomize_build

POD_OBJECTS = {"Deployment", "PodDisruptionBudget", "Service"}


def _by_key(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def _without_skip_await(obj: dict) -> dict:
    metadata = {**obj["metadata"]}
    annotations = {k: v for k, v in metadata.pop("annotations", {}).items() if k != "pulumi.com/skipAwait"}
    if annotations:
        metadata["annotations"] = annotations
    return {**obj, "metadata": metadata}


def test_pulumi_and_kustomize_base_deploy_the_same_objects():
    base = _by_key(kustomize_build())
    pulumi_objects = _by_key([m for m in run_program(base_config()).manifests() if m["kind"] != "Secret"])
    assert sorted(base) == sorted(pulumi_objects)
    for key, obj in base.items():
        declared = pulumi_objects[key]
        if key[0] in POD_OBJECTS:
            assert declared["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true", key
            declared = _without_skip_await(declared)
        assert declared == obj, f"{key} differs between manifests/base and the Pulumi program"


def test_same_rbac_and_crds_in_both():
    base = _by_key(kustomize_build())
    pulumi_objects = _by_key(run_program(base_config()).manifests())
    shared = [key for key in base if key[0] in {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                                                "ServiceAccount"}]
    assert len(shared) == 7  # the 4 CRDs, the ClusterRole, its binding and the ServiceAccount
    assert ("ClusterRole", names.CLUSTER_ROLE) in shared
    for key in shared:
        assert pulumi_objects[key] == base[key], key
