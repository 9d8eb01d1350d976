"""The Pulumi program under mocks: every resource, its inputs, what stays secret, what is exported."""

from __future__ import annotations

import json

import pytest
from pulumi.runtime import rpc

from remote_agents.deploy import names, rbac, workload
from remote_agents_infra import config as stack_config
from remote_agents_infra.config import ConfigError
from tests.deploy.pulumi_harness import FAKE_WEBHOOK_SECRET, SECRETS, base_config, run_program, unwrap

K8S_PROVIDER = "pulumi:providers:kubernetes"


@pytest.fixture(scope="module")
def run():
    return run_program(base_config())


def manifest(run, kind: str, name: str) -> dict:
    found = [m for m in run.manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} declared"
    return found[0]


def test_components_and_one_explicit_kubernetes_provider(run):
    for component in ("ClusterAccess", "Secrets", "Operator", "Webhooks"):
        run.one(f"remote-agents:infra:{component}")
    provider = run.one(K8S_PROVIDER)
    assert rpc.is_rpc_secret(provider.inputs["kubeconfig"])
    assert unwrap(provider.inputs["kubeconfig"]) == SECRETS["kubeconfig"]
    for resource in run.kubernetes():
        assert resource.provider and f"{K8S_PROVIDER}::{provider.name}::" in resource.provider, resource.name


def test_kubeconfig_is_optional_ambient_then(run):
    ambient = run_program({key: value for key, value in base_config().items() if key != "kubeconfig"})
    assert "kubeconfig" not in ambient.one(K8S_PROVIDER).inputs


def test_operator_objects_are_the_deploy_modules_output(run):
    ns = names.NAMESPACE
    assert manifest(run, "Namespace", ns) == workload.namespace(ns)
    for obj in rbac.objects(ns):
        assert manifest(run, obj["kind"], obj["metadata"]["name"]) == obj
    for obj in workload.objects(ns):
        declared = manifest(run, obj["kind"], obj["metadata"]["name"])
        assert declared["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
        declared["metadata"].pop("annotations")
        assert declared == obj


def test_crds_are_declared_protected_with_full_content(run):
    crd_type = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
    declared = {r.name: unwrap(r.inputs) for r in run.of_type(crd_type)}
    assert sorted(c["metadata"]["name"] for c in declared.values()) == [
        "agentpools.remoteagents.io", "agenttasks.remoteagents.io", "e2btemplates.remoteagents.io",
        "remoteagents.remoteagents.io"]
    for name, crd in declared.items():
        assert crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"], name
        assert run.protect[(crd_type, name)] is True


def test_crd_protection_can_be_turned_off():
    unprotected = run_program(base_config(protectCrds="false"))
    crd_type = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
    assert [unprotected.protect[(crd_type, r.name)] for r in unprotected.of_type(crd_type)] == [False] * 4


def test_namespace_and_image_are_configurable():
    custom = run_program(base_config(namespace="agents-prod", operatorImage="registry.example/op:9"))
    deployment = manifest(custom, "Deployment", names.DEPLOYMENT)
    assert deployment["metadata"]["namespace"] == "agents-prod"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/op:9"
    binding = manifest(custom, "ClusterRoleBinding", names.CLUSTER_ROLE)
    assert binding["subjects"][0]["namespace"] == "agents-prod"
    assert {s["metadata"]["namespace"] for s in custom.manifests() if s["kind"] == "Secret"} == {"agents-prod"}
    assert custom.outputs["namespace"] == ("agents-prod", False)


def test_secrets_carry_config_values_and_stay_secret(run):
    secrets = {r.inputs["metadata"]["name"]: r for r in run.of_type("kubernetes:core/v1:Secret")}
    assert set(secrets) == {"remote-agents-e2b", "remote-agents-webhook", "agent-keys"}
    for name, secret in secrets.items():
        assert rpc.is_rpc_secret(secret.inputs["stringData"]), name
    data = {name: unwrap(secret.inputs["stringData"]) for name, secret in secrets.items()}
    assert data["remote-agents-e2b"] == {"apiKey": SECRETS["e2bApiKey"]}
    assert data["agent-keys"] == {"OPENAI_API_KEY": SECRETS["openaiApiKey"],
                                  "FINANCIAL_DATASETS_API_KEY": SECRETS["financialDatasetsApiKey"]}
    assert all(s.inputs["metadata"]["namespace"] == names.NAMESPACE for s in secrets.values())


def test_agent_keys_secret_only_when_keys_are_configured():
    minimal = run_program({"e2bApiKey": SECRETS["e2bApiKey"]})
    declared = {r.inputs["metadata"]["name"] for r in minimal.of_type("kubernetes:core/v1:Secret")}
    assert declared == {"remote-agents-e2b", "remote-agents-webhook"}
    assert minimal.of_type("github:index/repositoryWebhook:RepositoryWebhook") == []


def test_webhook_secret_is_generated_once_and_shared_with_the_receiver(run):
    password = run.one("random:index/randomPassword:RandomPassword")
    assert password.inputs["length"] >= 32
    receiver = next(r for r in run.of_type("kubernetes:core/v1:Secret")
                    if r.inputs["metadata"]["name"] == names.WEBHOOK_SECRET)
    assert unwrap(receiver.inputs["stringData"]) == {names.WEBHOOK_SECRET_KEY: FAKE_WEBHOOK_SECRET}
    hooks = run.of_type("github:index/repositoryWebhook:RepositoryWebhook")
    assert hooks
    for hook in hooks:
        # A secret anywhere in an object input makes the whole object secret on the wire.
        assert rpc.is_rpc_secret(hook.inputs["configuration"])
        assert unwrap(hook.inputs["configuration"])["secret"] == FAKE_WEBHOOK_SECRET


def test_one_push_webhook_per_repository_through_its_owners_provider(run):
    hooks = {r.inputs["repository"]: r for r in run.of_type("github:index/repositoryWebhook:RepositoryWebhook")}
    assert set(hooks) == {"research-agent", "dexter-fork", "tools"}
    for hook in hooks.values():
        assert hook.inputs["active"] is True
        assert sorted(hook.inputs["events"]) == ["ping", "push"]
        configuration = unwrap(hook.inputs["configuration"])
        assert configuration["url"] == "https://hooks.example.com/github"
        assert configuration["contentType"] == "json"
        assert configuration["insecureSsl"] is False
    providers = {r.name: r for r in run.of_type("pulumi:providers:github")}
    assert {p.inputs["owner"] for p in providers.values()} == {"acme", "other-org"}
    for provider in providers.values():
        assert rpc.is_rpc_secret(provider.inputs["token"])
        assert unwrap(provider.inputs["token"]) == SECRETS["githubToken"]
    assert "::webhooks-acme::" in hooks["dexter-fork"].provider
    assert "::webhooks-other-org::" in hooks["tools"].provider


def test_stack_outputs_are_names_never_values(run):
    assert set(run.outputs) == {"namespace", "webhookUrl", "secretNames"}
    assert run.outputs["secretNames"][0] == {"e2b": "remote-agents-e2b", "webhook": "remote-agents-webhook",
                                             "agentKeys": "agent-keys"}
    assert run.outputs["webhookUrl"][0] == "https://hooks.example.com/github"
    assert not any(is_secret for _, is_secret in run.outputs.values())
    exported = json.dumps([value for value, _ in run.outputs.values()])
    for value in (*SECRETS.values(), FAKE_WEBHOOK_SECRET):
        assert value not in exported


@pytest.mark.parametrize("config, message", [
    ({"cluster": "eks"}, "cluster must be one of existing, gke"),
    ({"repositories": ["not-a-repo"]}, "not owner/name"),
    ({"webhookUrl": ""}, "webhookUrl"),
    ({"watchNamespaces": ["Not A Namespace"]}, "watchNamespaces: 'Not A Namespace' is not a namespace name"),
])
def test_bad_configuration_fails_before_anything_is_declared(config, message):
    with pytest.raises(ConfigError, match=message):
        run_program(base_config(**config))


def test_gke_without_pulumi_gcp_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(stack_config, "gcp_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"cluster=gke needs the pulumi-gcp package \(`pip install pulumi-gcp`\)"):
        run_program(base_config(cluster="gke", gkeLocation="europe-west1"))


def test_watch_namespaces_declare_a_namespaced_install():
    scoped = run_program(base_config(watchNamespaces=["team-a", "team-b"]))
    for obj in rbac.objects(names.NAMESPACE, ("team-a", "team-b")):
        assert manifest_in(scoped, obj) == obj
    cluster_roles = [m["metadata"]["name"] for m in scoped.manifests() if m["kind"] == "ClusterRole"]
    assert cluster_roles == [rbac.cluster_role_name(names.NAMESPACE, ("team-a", "team-b"))]
    args = manifest(scoped, "Deployment", names.DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["--namespace", "team-a", "--namespace", "team-b"]


def manifest_in(run, obj: dict) -> dict:
    meta = obj["metadata"]
    found = [m for m in run.manifests() if m["kind"] == obj["kind"] and m["metadata"]["name"] == meta["name"]
             and m["metadata"].get("namespace") == meta.get("namespace")]
    assert len(found) == 1, f"{obj['kind']}/{meta['name']}: {len(found)} declared"
    return found[0]
