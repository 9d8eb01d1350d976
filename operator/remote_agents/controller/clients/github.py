"""Publishing an AgentTask's output to GitHub with PyGithub: a comment on an issue or pull request,
or a pull request that adds the output as a file on a new branch.

`publish` is synchronous (PyGithub uses requests): call it with asyncio.to_thread. It is safe to
repeat after a crash for pull requests (an existing branch, file or open pull request is reused);
a repeated comment is posted again. The token only ever travels in PyGithub's Authorization
header; PublishError messages never contain it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import requests
from github import Auth, Github, GithubException, RateLimitExceededException, UnknownObjectException
from github.Repository import Repository
from pydantic import ValidationError

from remote_agents.api.models import DEFAULT_GITHUB_API_URL as DEFAULT_API_URL
from remote_agents.api.models import GitHubTarget, PullRequestTarget
from remote_agents.controller.redaction import MARKER

MAX_TEXT = 65536  # GitHub refuses longer comment and pull request bodies
DEFAULT_API_HOST = "api.github.com"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TRUNCATED = "\n\n… (truncated)"
TIMEOUT_SECONDS = 30


class PublishError(Exception):
    """retryable: the same call may succeed later (GitHub unreachable, 5xx, rate limit, conflict)."""

    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


def api_url_refusal(api_url: str, allowed_hosts: Iterable[str]) -> str | None:
    """Why the operator sends no token to `api_url` (None: it may). Whoever writes an AgentTask
    chooses the URL and a Secret of the namespace: the token goes only over https (plain http to a
    loopback host) and only to api.github.com or a host the operator's settings name."""
    parts = urlsplit(api_url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" and not (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        return f"spec.github.apiUrl {api_url!r} is refused: https only (plain http only to a loopback host)"
    allowed = {DEFAULT_API_HOST, *(name.lower() for name in allowed_hosts)}
    if host not in allowed:
        return (f"spec.github.apiUrl host {host!r} is not allowed: this operator publishes only to "
                f"{', '.join(sorted(allowed))} (more with --github-api-host)")
    return None


def publish(target: dict, token: str, title: str, body: str, base_url: str = DEFAULT_API_URL, *,
            pace: bool = True) -> str:
    """Publish `body` as `target` says; returns the html_url of the comment or pull request.
    pace=False drops PyGithub's client-side pacing (1 s between writes), for tests."""
    try:
        parsed = GitHubTarget.model_validate(target)
    except ValidationError as error:
        raise PublishError(f"invalid GitHub target: {error.errors()[0]['msg']}", retryable=False) from None
    if parsed.pull_request and not (parsed.pull_request.branch and parsed.pull_request.path):
        raise PublishError("invalid GitHub target: pullRequest needs branch and path", retryable=False)
    if not token:
        raise PublishError("no GitHub token", retryable=False)
    unpaced = {} if pace else {"seconds_between_requests": None, "seconds_between_writes": None}
    # lazy: objects are not fetched before use, so a comment is one request. retry=None: the
    # reconciler owns retrying (PublishError.retryable) instead of blocking a thread here.
    with Github(auth=Auth.Token(token), base_url=base_url, timeout=TIMEOUT_SECONDS, retry=None, lazy=True,
                **unpaced) as client:
        repo = client.get_repo(parsed.repo)
        if parsed.issue is not None:
            with _calling(f"comment on {parsed.repo}#{parsed.issue}", token):
                return repo.get_issue(parsed.issue).create_comment(_fit(f"**{title}**\n\n{body}")).html_url
        return _pull_request(repo, parsed.repo, parsed.pull_request, title, body, token)


def _pull_request(repo: Repository, full_name: str, pull: PullRequestTarget, title: str, body: str,
                  token: str) -> str:
    owner = full_name.split("/")[0]
    with _calling(f"read branch {pull.base} of {full_name}", token):
        base_commit = repo.get_git_ref(f"heads/{pull.base}").object.sha
    with _calling(f"create branch {pull.branch} in {full_name}", token):
        try:
            repo.create_git_ref(f"refs/heads/{pull.branch}", base_commit)
        except GithubException as error:
            if not (error.status == 422 and error_message(error) == "Reference already exists"):
                raise  # an existing branch is an earlier attempt of this publish: write onto it
    with _calling(f"write {pull.path} on branch {pull.branch} of {full_name}", token):
        _write_file(repo, pull.path, pull.branch, title, body)
    with _calling(f"open a pull request from {pull.branch} to {pull.base} in {full_name}", token):
        for existing in repo.get_pulls(state="open", head=f"{owner}:{pull.branch}", base=pull.base):
            return existing.html_url
        description = f"{title}\n\nThe output is in `{pull.path}`."
        return repo.create_pull(base=pull.base, head=pull.branch, title=pull.title or title,
                                body=_fit(description)).html_url


def _write_file(repo: Repository, path: str, branch: str, message: str, content: str) -> None:
    try:
        current = repo.get_contents(path, ref=branch)
    except UnknownObjectException:
        repo.create_file(path, message, content, branch=branch)
        return
    if isinstance(current, list):
        raise PublishError(f"{path} is a directory on branch {branch}", retryable=False)
    if current.decoded_content != content.encode():
        repo.update_file(path, message, content, current.sha, branch=branch)


def _fit(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - len(TRUNCATED)] + TRUNCATED


def error_message(error: GithubException) -> str:
    if not isinstance(error.data, dict):
        return str(error.data or "")[:300]
    details = [item["message"] for item in error.data.get("errors") or []
               if isinstance(item, dict) and "message" in item]
    return "; ".join([str(error.data.get("message", "")), *details])[:300]


@contextmanager
def _calling(action: str, token: str) -> Iterator[None]:
    """PyGithub and network errors of `action` as PublishError."""
    try:
        yield
    except GithubException as error:
        status = error.status or 0
        retryable = isinstance(error, RateLimitExceededException) or status in (409, 429) or status >= 500
        message = f"GitHub answered {error.status} to '{action}': {error_message(error)}".replace(token, MARKER)
        raise PublishError(message, retryable) from None
    except requests.RequestException as error:
        raise PublishError(f"GitHub unreachable during '{action}': {type(error).__name__}", retryable=True) from None
