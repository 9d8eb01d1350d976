"""Publishing a task's output as a GitHub App: the operator makes installation tokens at the fake
GitHub (which verifies the App's JWT with its public key) and makes a new one once the first has
expired; the private key and the tokens appear in no status, Event or log."""

from __future__ import annotations

import json

from tests.e2e.test_agent_task import task_manifest
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
