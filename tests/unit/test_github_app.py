"""GitHub App installation tokens made by PyGithub against the fake GitHub, which verifies the
App's JWT with its public key; cached per installation and remade before they expire."""

from __future__ import annotations

import time

import pytest

from remote_agents.api.models import Source, SourceGitHubApp
from remote_agents.controller.agents.inputs import AgentInputs
from remote_agents.controller.clients.github import publish
from remote_agents.controller.clients.github_app import AppTokenError, Installation, InstallationTokens
from remote_agents.controller.redaction import Redactor
from remote_agents.controller.sources.git import GitUnavailable
from tests.support.fake_github import FakeGitHub
from tests.support.fake_kube import FakeKube

APP, INSTALLATION = 4242, 77


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def github():
    with FakeGitHub(tokens=(), token_lifetime_seconds=3600) as fake:
        fake.add_repo("octo/agent", issues=(12,))
        yield fake


def made(github: FakeGitHub) -> list[str]:
    return [path for method, path in github.calls if path.endswith("/access_tokens")]


def test_an_installation_token_publishes_and_is_reused(github):
    key = github.add_app(APP, INSTALLATION)
    tokens = InstallationTokens()
    installation = Installation(github.url, APP, INSTALLATION)
    token = tokens.token(installation, key)
    assert token.startswith("ghs_") and token in github.installation_tokens
    publish({"repo": "octo/agent", "issue": 12}, tokens.token(installation, key), "t", "the answer", github.url,
            pace=False)
    assert github.repos["octo/agent"].comments[0]["body"].endswith("the answer")
    assert made(github) == [f"/app/installations/{INSTALLATION}/access_tokens"]  # one token for both uses
    assert github.used_tokens == [("/repos/octo/agent/issues/12/comments", token)]


def test_a_token_is_remade_before_it_expires(github):
    key = github.add_app(APP, INSTALLATION)
    clock = Clock(time.time())
    tokens = InstallationTokens(clock=clock)
    installation = Installation(github.url, APP, INSTALLATION)
    first = tokens.token(installation, key)
    clock.now += 3600 - 301  # more than five minutes left: kept
    assert tokens.token(installation, key) == first
    clock.now += 2  # less than five minutes left: a new one
    second = tokens.token(installation, key)
    assert second != first and len(made(github)) == 2


def test_a_short_lived_token_is_remade_after_three_quarters_of_its_life(github):
    github.token_lifetime_seconds = 40
    key = github.add_app(APP, INSTALLATION)
    clock = Clock(time.time())
    tokens = InstallationTokens(clock=clock)
    installation = Installation(github.url, APP, INSTALLATION)
    first = tokens.token(installation, key)
    clock.now += 25
    assert tokens.token(installation, key) == first
    clock.now += 10  # 35 s of 40 (GitHub's expires_at has whole seconds): remade
    assert tokens.token(installation, key) != first


def test_installations_and_rotated_keys_get_tokens_of_their_own(github):
    key = github.add_app(APP, INSTALLATION)
    other_key = github.add_app(APP + 1, INSTALLATION + 1)
    tokens = InstallationTokens()
    one = tokens.token(Installation(github.url, APP, INSTALLATION), key)
    two = tokens.token(Installation(github.url, APP + 1, INSTALLATION + 1), other_key)
    rotated = github.add_app(APP, INSTALLATION)  # the App's key replaced: the old one no longer signs
    three = tokens.token(Installation(github.url, APP, INSTALLATION), rotated)
    assert len({one, two, three}) == 3


def test_a_jwt_signed_by_another_key_is_refused_without_the_key_in_the_message(github):
    github.add_app(APP, INSTALLATION)
    wrong = github.add_app(APP + 1, INSTALLATION + 1)
    with pytest.raises(AppTokenError) as caught:
        InstallationTokens().token(Installation(github.url, APP, INSTALLATION), wrong)
    assert "401" in str(caught.value) and not caught.value.retryable
    assert "PRIVATE KEY" not in str(caught.value) and wrong.splitlines()[1] not in str(caught.value)


def test_a_key_that_is_not_pem_is_a_permanent_error_before_any_request(github):
    with pytest.raises(AppTokenError, match="not a PEM RSA key") as caught:
        InstallationTokens().token(Installation(github.url, APP, INSTALLATION), "not-a-key")
    assert not caught.value.retryable and github.calls == []


def test_server_trouble_is_retryable(github):
    key = github.add_app(APP, INSTALLATION)
    with pytest.raises(AppTokenError, match="unreachable") as caught:
        InstallationTokens().token(Installation("http://127.0.0.1:9", APP, INSTALLATION), key)
    assert caught.value.retryable


def source_app(github: FakeGitHub) -> SourceGitHubApp:
    return SourceGitHubApp.model_validate({"appID": APP, "installationID": INSTALLATION, "apiUrl": github.url,
                                          "privateKeySecretRef": {"name": "app", "key": "private-key"}})


async def test_a_private_source_reads_with_an_installation_token_and_redacts_the_key(github):
    kube = FakeKube()
    key = github.add_app(APP, INSTALLATION)
    kube.add_secret("team", "app", {"private-key": key})
    inputs = AgentInputs(kube, InstallationTokens(), github_api_hosts=("127.0.0.1",))
    redact = Redactor()
    source = source_app(github)
    token = await inputs.git_token("team", Source(repo="octo/agent", github_app=source), redact)
    assert token in github.installation_tokens
    assert redact(f"{key.strip()} and {token}") == "[redacted] and [redacted]"
    assert redact(key.splitlines()[3]) == "[redacted]"


async def test_a_source_app_at_a_host_not_allowed_sends_nothing(github):
    kube = FakeKube()
    kube.add_secret("team", "app", {"private-key": github.add_app(APP, INSTALLATION)})
    with pytest.raises(GitUnavailable, match="not allowed"):
        await AgentInputs(kube).git_token("team", Source(repo="octo/agent", github_app=source_app(github)), Redactor())
    assert github.calls == []
