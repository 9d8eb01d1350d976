"""GitHub App credentials end to end: the operator makes installation tokens at the fake GitHub
(which verifies the App's JWT with its public key) to publish a task's output, a new one once the
first has expired, and to read a private repository (ls-remote and the in-sandbox clone); the
private key and the tokens appear in no status, Event or log."""

from __future__ import annotations

import json

from tests.e2e.test_agent_task import task_manifest
from tests.e2e.test_private_repo import serve_privately
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.fake_github import FakeGitHub
from tests.support.kubectl import eventually

APP, INSTALLATION = 4242, 77
TOKEN_LIFETIME_SECONDS = 20  # GitHub's last an hour; short here so one expires during the test


def test_output_is_published_as_a_github_app_with_a_new_token_after_the_first_expired(kubectl, namespace, operator,
                                                                                      agent_repo):
    with FakeGitHub(tokens=(), token_lifetime_seconds=TOKEN_LIFETIME_SECONDS) as github:
        github.add_repo("quant/research", issues=(7,))
        private_key = github.add_app(APP, INSTALLATION)
        kubectl.run("create", "secret", "generic", "gh-app", "-n", namespace, f"--from-literal=private-key={private_key}")
        kubectl.apply(agent_manifest("publisher", namespace, agent_repo.url, query={"command": "bash answer.sh"}))
        wait_ready(kubectl, "publisher", namespace)

        def publish(name: str) -> str:
            """Publish task `name`'s output; returns the token its comment was posted with."""
            task = json.loads(task_manifest(name, namespace, f"query {name}", agent="publisher"))
            task["spec"]["github"] = {"repo": "quant/research", "issue": 7, "apiUrl": github.url, "githubApp": {
                "appID": APP, "installationID": INSTALLATION,
                "privateKeySecretRef": {"name": "gh-app", "key": "private-key"}}}
            kubectl.apply(json.dumps(task))

            def published():
                status = kubectl.get("agenttask", name, namespace).get("status") or {}
                assert not status.get("githubError"), status["githubError"]
                return status.get("githubUrl")
            assert "quant/research/issues/7#issuecomment-" in eventually(published, 90, what=f"{name} published")
            return [token for path, token in github.used_tokens if path.endswith("/comments")][-1]

        first = publish("first")
        assert first in github.installation_tokens  # an installation token, not a personal one
        eventually(lambda: github.expired(first), TOKEN_LIFETIME_SECONDS * 3, what="the first token to expire")
        second = publish("second")
        assert second != first and second in github.installation_tokens
        # Each comment went through the gate, which refuses expired tokens: the second was not.
        assert [body["body"].split("\n")[0] for body in github.repos["quant/research"].comments] == [
            "**first: query first**", "**second: query second**"]

        key_line = private_key.splitlines()[5]
        seen = "\n".join([operator.log(), json.dumps(kubectl.items("events", namespace)),
                          json.dumps(kubectl.items("agenttasks", namespace))])
        for secret in (key_line, first, second):
            assert secret not in seen


def test_a_private_repository_is_read_with_the_apps_installation_tokens(kubectl, namespace, operator, e2b_client,
                                                                       git_server, tmp_path):
    with FakeGitHub(tokens=()) as github:
        private_key = github.add_app(APP, INSTALLATION)
        server = serve_privately(git_server, tmp_path, "app-source",
                                 accepts=lambda token: token in github.installation_tokens and not github.expired(token))
        try:
            kubectl.run("create", "secret", "generic", "repo-app", "-n", namespace,
                        f"--from-literal=private-key={private_key}")
            url = f"{server.url}/agent.git"
            kubectl.apply(agent_manifest("app-reader", namespace, url, source={"repo": url, "ref": "main", "githubApp": {
                "appID": APP, "installationID": INSTALLATION, "apiUrl": github.url,
                "privateKeySecretRef": {"name": "repo-app", "key": "private-key"}}}))
            status = wait_ready(kubectl, "app-reader", namespace)["status"]
            assert e2b_client.read(status["sandboxID"], f"{status['workdir']}/agent.txt") == "secret sauce\n"
            assert any(authorised for _, authorised in server.requests)
            assert any(path.endswith(f"/app/installations/{INSTALLATION}/access_tokens") for _, path in github.calls)
            seen = "\n".join([operator.log(), json.dumps(kubectl.items("events", namespace)),
                              json.dumps(kubectl.items("remoteagents", namespace))])
            for secret in (private_key.splitlines()[5], *github.installation_tokens):
                assert secret not in seen
        finally:
            server.stop()
