"""publish() driving the real PyGithub against the in-memory GitHub stand-in."""

from __future__ import annotations

import socket

import pytest

from remote_agents.api.schema import structural_schema
from remote_agents.api.models import GitHubOutput
from remote_agents.controller.clients.github import MAX_TEXT, PublishError, api_url_refusal, publish
from remote_agents.controller.settings import OperatorSettings
from tests.support.fake_github import FakeGitHub

TOKEN = "ghp_good"
PR_TARGET = {"repo": "octo/agent", "pullRequest": {"base": "main", "branch": "results/t1", "path": "results/t1.md",
                                                   "title": "Results of t1"}}


@pytest.fixture(scope="module")
def server():
    with FakeGitHub(tokens=(TOKEN,)) as fake:
        yield fake


@pytest.fixture
def github(server):
    server.repos.clear()
    server.calls.clear()
    server.fail_next.clear()
    server.add_repo("Octo/Agent", issues=(12,))
    return server


def send(github: FakeGitHub, target: dict, body: str = "the answer is 42", token: str = TOKEN,
         title: str = "Task t1 succeeded") -> str:
    return publish(target, token, title, body, github.url, pace=False)


def test_comment_on_an_issue(github):
    url = send(github, {"repo": "octo/agent", "issue": 12})
    assert url.startswith("https://github.com/Octo/Agent/issues/12#issuecomment-")
    assert github.repos["octo/agent"].comments == [{"issue": 12, "body": "**Task t1 succeeded**\n\nthe answer is 42"}]
    assert github.calls == [("POST", "/repos/octo/agent/issues/12/comments")]


def test_long_comment_is_cut_to_what_github_accepts(github):
    send(github, {"repo": "octo/agent", "issue": 12}, body="x" * (MAX_TEXT + 10))
    body = github.repos["octo/agent"].comments[0]["body"]
    assert len(body) == MAX_TEXT and body.endswith("(truncated)")


def test_pull_request_adds_the_output_on_a_new_branch(github):
    url = send(github, PR_TARGET)
    repo = github.repos["octo/agent"]
    assert url == "https://github.com/Octo/Agent/pull/13"
    assert repo.file("results/t1", "results/t1.md") == b"the answer is 42"
    assert repo.file("main", "results/t1.md") is None  # base untouched
    assert [(pull["head"], pull["base"], pull["title"]) for pull in repo.pulls] == [
        ("results/t1", "main", "Results of t1")]
    assert github.calls == [
        ("GET", "/repos/octo/agent/git/ref/heads/main"), ("POST", "/repos/octo/agent/git/refs"),
        ("GET", "/repos/octo/agent/contents/results/t1.md"), ("PUT", "/repos/octo/agent/contents/results/t1.md"),
        ("GET", "/repos/octo/agent/pulls"), ("POST", "/repos/octo/agent/pulls")]


def test_pull_request_title_defaults_to_the_title(github):
    target = {"repo": "octo/agent", "pullRequest": {"branch": "results/t2", "path": "out.md"}}
    send(github, target)
    assert github.repos["octo/agent"].pulls[0]["title"] == "Task t1 succeeded"


def test_publishing_again_reuses_branch_and_pull_request(github):
    first = send(github, PR_TARGET)
    github.calls.clear()
    assert send(github, PR_TARGET) == first  # a retry after a crash: nothing new
    assert ("PUT", "/repos/octo/agent/contents/results/t1.md") not in github.calls
    assert send(github, PR_TARGET, body="a better answer") == first  # changed output updates the file
    repo = github.repos["octo/agent"]
    assert repo.file("results/t1", "results/t1.md") == b"a better answer"
    assert len(repo.pulls) == 1


def test_comment_on_the_pull_request_it_opened(github):
    number = int(send(github, PR_TARGET).rsplit("/", 1)[1])
    send(github, {"repo": "octo/agent", "issue": number}, body="follow-up")
    assert github.repos["octo/agent"].comments[0]["issue"] == number


def test_bad_token_is_a_publish_error_without_the_token(github, caplog):
    secret = "ghp_wrong_but_secret_0123456789"
    with caplog.at_level("DEBUG"), pytest.raises(PublishError) as caught:
        send(github, {"repo": "octo/agent", "issue": 12}, token=secret)
    assert "401" in str(caught.value) and "Bad credentials" in str(caught.value)
    assert not caught.value.retryable
    assert "GET" in caplog.text or "POST" in caplog.text  # PyGithub did log its request
    assert secret not in str(caught.value) and secret not in caplog.text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert github.repos["octo/agent"].comments == []


def test_empty_token_is_refused_before_any_request(github):
    with pytest.raises(PublishError, match="no GitHub token"):
        send(github, {"repo": "octo/agent", "issue": 12}, token="")
    assert github.calls == []


@pytest.mark.parametrize("target, fragment", [
    ({"repo": "octo/missing", "issue": 12}, "404"),
    ({"repo": "octo/agent", "issue": 99}, "404"),
    ({**PR_TARGET, "pullRequest": {**PR_TARGET["pullRequest"], "base": "nope"}}, "read branch nope"),
])
def test_missing_things_are_permanent_errors(github, target, fragment):
    with pytest.raises(PublishError, match=fragment) as caught:
        send(github, target)
    assert not caught.value.retryable


def test_path_that_is_a_directory_is_a_permanent_error(github):
    github.add_repo("octo/dirs", files={"results/t1.md/inner.txt": "x"})
    with pytest.raises(PublishError, match="is a directory") as caught:
        send(github, {"repo": "octo/dirs", "pullRequest": {"branch": "b", "path": "results/t1.md"}})
    assert not caught.value.retryable


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_trouble_is_retryable_and_a_retry_succeeds(github, status):
    github.fail_next.append(status)
    with pytest.raises(PublishError) as caught:
        send(github, PR_TARGET)
    assert caught.value.retryable and str(status) in str(caught.value)
    assert send(github, PR_TARGET).endswith("/pull/13")


def test_unreachable_github_is_retryable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket is closed
    with pytest.raises(PublishError, match="unreachable") as caught:
        publish({"repo": "octo/agent", "issue": 1}, TOKEN, "t", "b", f"http://127.0.0.1:{port}", pace=False)
    assert caught.value.retryable


@pytest.mark.parametrize("target", [
    {"repo": "octo/agent"},
    {"repo": "octo/agent", "issue": 1, "pullRequest": {"branch": "b", "path": "p"}},
    {"repo": "not a repo", "issue": 1},
    {"repo": "octo/agent", "issue": 0},
    {"repo": "octo/agent", "pullRequest": {"base": "main"}},
    {"repo": "octo/agent", "pullRequest": {"branch": "b", "path": "/abs"}},
])
def test_invalid_targets_are_refused_before_any_request(github, target):
    with pytest.raises(PublishError, match="invalid GitHub target") as caught:
        send(github, target)
    assert not caught.value.retryable
    assert github.calls == []


def test_spec_github_defaults_branch_and_path_from_the_task():
    spec = GitHubOutput.model_validate({"repo": "octo/agent", "pullRequest": {},
                                        "credentialsSecretRef": {"name": "gh", "key": "token"}})
    assert spec.api_url == "https://api.github.com"
    assert spec.target("t9") == {"repo": "octo/agent", "pullRequest": {
        "base": "main", "branch": "results/t9", "path": "results/t9.md"}}
    comment = GitHubOutput.model_validate({"repo": "octo/agent", "issue": 3,
                                           "credentialsSecretRef": {"name": "gh", "key": "token"}})
    assert comment.target("t9") == {"repo": "octo/agent", "issue": 3}


def test_spec_github_target_publishes(github):
    spec = GitHubOutput.model_validate({"repo": "octo/agent", "pullRequest": {},
                                        "credentialsSecretRef": {"name": "gh", "key": "token"}})
    send(github, spec.target("t9"))
    assert github.repos["octo/agent"].file("results/t9", "results/t9.md") == b"the answer is 42"


def test_spec_github_schema_is_structural_with_the_cel_rule():
    schema = structural_schema(GitHubOutput)
    assert set(schema["properties"]) == {"repo", "issue", "pullRequest", "credentialsSecretRef", "githubApp", "apiUrl"}
    assert [rule["rule"] for rule in schema["x-kubernetes-validations"]] == [
        "has(self.issue) != has(self.pullRequest)", "has(self.credentialsSecretRef) != has(self.githubApp)"]
    assert schema["required"] == ["repo"]
    assert schema["properties"]["githubApp"]["required"] == ["appID", "installationID", "privateKeySecretRef"]


@pytest.mark.parametrize("url, hosts, refused", [
    ("https://api.github.com", (), None),
    ("https://API.GitHub.com/", (), None),
    ("https://ghe.example.com/api/v3", ("ghe.example.com",), None),
    ("https://GHE.example.com:8443/api/v3", ("ghe.example.com",), None),
    ("http://127.0.0.1:8080", ("127.0.0.1",), None),
    ("http://[::1]:8080", ("::1",), None),
    ("http://localhost:8080", ("localhost",), None),
    ("https://ghe.example.com/api/v3", (), "not allowed"),
    ("https://api.github.com.evil.example", (), "not allowed"),
    ("https://evil.example/?api.github.com", (), "not allowed"),
    ("https://user@evil.example", ("user",), "not allowed"),
    ("http://127.0.0.1:8080", (), "not allowed"),  # loopback may be plain http, yet must be allowed too
    ("http://api.github.com", (), "https only"),
    ("http://ghe.example.com/api/v3", ("ghe.example.com",), "https only"),
    ("http://127.0.0.2", ("127.0.0.2",), "https only"),
    ("ftp://api.github.com", (), "https only"),
    ("https:///api", (), "not allowed"),
])
def test_the_token_goes_only_over_https_to_allowed_hosts(url, hosts, refused):
    reason = api_url_refusal(url, hosts)
    assert (reason is None) if refused is None else (refused in reason and "spec.github.apiUrl" in reason)


def test_spec_github_api_url_schema_refuses_plain_http_but_to_loopback():
    rule = structural_schema(GitHubOutput)["properties"]["apiUrl"]["x-kubernetes-validations"][0]
    assert "apiUrl" in rule["message"] and "https" in rule["message"]
    assert rule["rule"].startswith("self.startsWith('https://') || self.matches(")


def test_github_api_hosts_come_from_the_environment_and_flags(monkeypatch):
    monkeypatch.setenv("REMOTE_AGENTS_GITHUB_API_HOSTS", "ghe.example.com, git.corp.example ,")
    assert OperatorSettings.from_env().github_api_hosts == ("ghe.example.com", "git.corp.example")
    assert OperatorSettings.from_env(github_api_hosts=("flag.example",)).github_api_hosts == ("flag.example",)
    assert OperatorSettings.from_env(github_api_hosts=()).github_api_hosts == ("ghe.example.com", "git.corp.example")
