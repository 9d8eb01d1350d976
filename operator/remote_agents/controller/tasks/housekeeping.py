"""What happens to finished tasks: their output is published to GitHub once when asked
(spec.github), and they are deleted after their TTL (spec.ttlSecondsAfterFinished)."""

from __future__ import annotations

import asyncio

from remote_agents.api.models import GitHubOutput
from remote_agents.api.timestamps import epoch
from remote_agents.controller.clients import github
from remote_agents.controller.clients.events import EventSink
from remote_agents.controller.clients.github_app import InstallationTokens
from remote_agents.controller.clients.kube import Kube, SecretMissing
from remote_agents.controller.redaction import Redactor
from remote_agents.controller.tasks import decide
from remote_agents.controller.tasks.book import Task, TaskBook

PUBLISH_RETRY_SECONDS = 30
TITLE_LIMIT = 200


class Housekeeping:
    def __init__(self, book: TaskBook, kube: Kube, emit: EventSink, github_api_hosts: tuple[str, ...],
                 app_tokens: InstallationTokens):
        self.book = book
        self.app_tokens = app_tokens
        self.kube = kube
        self.emit = emit
        self.github_api_hosts = github_api_hosts  # besides api.github.com
        self._publish_after: dict[str, float] = {}  # task uid -> earliest next publish attempt

    async def tidy(self, now: float) -> None:
        for task in self.book.finished():
            await self._publish_if_asked(task, now)
            await self._collect_if_expired(task, now)

    async def _publish_if_asked(self, task: Task, now: float) -> None:
        """Post a succeeded task's output to GitHub once; retry transient failures."""
        spec = self.book.spec(task)
        status, meta = task["status"], task["metadata"]
        if (not spec.github or status.get("phase") != "Succeeded" or status.get("githubUrl")
                or status.get("githubError") or now < self._publish_after.get(meta["uid"], 0)):
            return
        self._publish_after[meta["uid"]] = now + PUBLISH_RETRY_SECONDS
        redact = Redactor()
        try:
            token = await self._token(meta["namespace"], spec.github, redact)
            output = await self.kube.configmap_value(meta["namespace"], status["outputConfigMap"], "stdout")
            title = f"{meta['name']}: {decide.truncate(spec.query, TITLE_LIMIT)}"
            url = await asyncio.to_thread(github.publish, spec.github.target(meta["name"]), token, title,
                                          redact(output or ""), spec.github.api_url)
        except (github.PublishError, SecretMissing) as error:
            self.emit(task, "Warning", "PublishFailed", redact(str(error)))
            if isinstance(error, SecretMissing) or not error.retryable:
                await self.book.apply(task, {"githubError": redact(str(error))})
            return
        await self.book.apply(task, {"githubUrl": url})
        self._publish_after.pop(meta["uid"], None)
        self.emit(task, "Normal", "Published", f"output published to {url}")

    async def _token(self, namespace: str, output: GitHubOutput, redact: Redactor) -> str:
        """The Secret's token or a GitHub App installation's; nothing is read or sent (the key's
        JWT, the token) unless apiUrl is a host the token may go to."""
        if refusal := github.api_url_refusal(output.api_url, self.github_api_hosts):
            raise github.PublishError(refusal, retryable=False)
        if output.github_app:
            return await self.app_tokens.token_of(self.kube, namespace, output.github_app, output.api_url,
                                                  self.github_api_hosts, redact)
        if output.credentials_secret_ref is None:
            raise github.PublishError("spec.github names neither credentialsSecretRef nor githubApp", retryable=False)
        ref = output.credentials_secret_ref
        token = await self.kube.secret_value(namespace, ref.name, ref.key) or ""
        redact.add(token)
        return token

    async def _collect_if_expired(self, task: Task, now: float) -> None:
        done = epoch(task["status"].get("completionTime"))
        if done is not None and decide.expired(done, self.book.spec(task).ttl_seconds_after_finished, now):
            await self.book.delete(task)
