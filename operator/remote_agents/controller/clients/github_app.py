"""GitHub App installation tokens, made with PyGithub's GithubIntegration (POST
/app/installations/{id}/access_tokens, authenticated by a JWT the App's private key signs) and kept
per installation until shortly before they expire, so every publish or ref lookup does not make one.

`token` is synchronous (PyGithub uses requests): call it with asyncio.to_thread. The private key
only signs the JWT inside PyGithub; neither it nor a token is written anywhere (callers add both to
their Redactor, and AppTokenError messages contain neither)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
import requests
from github import Auth, GithubException, GithubIntegration

from remote_agents.api.models import GitHubApp
from remote_agents.controller.clients.github import TIMEOUT_SECONDS, PublishError, api_url_refusal, error_message
from remote_agents.controller.clients.kube import Kube
from remote_agents.controller.redaction import Redactor

REFRESH_BEFORE_SECONDS = 300  # a cached token is replaced when it has less than this left (GitHub's last 1 h)...
REFRESH_BEFORE_SHARE = 0.25  # ...or less than this share of its life, when its life is short


class AppTokenError(PublishError):
    """No installation token: the App, its key or the installation is wrong, or GitHub is unreachable."""


@dataclass(frozen=True)
class Installation:
    api_url: str
    app_id: int
    installation_id: int


@dataclass(frozen=True)
class _Cached:
    token: str
    refresh_at: float


class InstallationTokens:
    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._cached: dict[tuple[Installation, str], _Cached] = {}
        self._lock = threading.Lock()  # one token request per installation at a time, not one per caller

    async def token_of(self, kube: Kube, namespace: str, app: GitHubApp, api_url: str,
                       allowed_hosts: tuple[str, ...], redact: Redactor) -> str:
        """The token of `app` (its key read from its Secret now: a rotated key is used at once),
        made at `api_url` only if the JWT may go there (else a permanent AppTokenError)."""
        if refusal := api_url_refusal(api_url, allowed_hosts):
            raise AppTokenError(refusal, retryable=False)
        ref = app.private_key_secret_ref
        private_key = await kube.secret_value(namespace, ref.name, ref.key) or ""
        for line in [private_key, *private_key.splitlines()]:  # the whole key, and any line of it printed alone
            redact.add(line)
        token = await asyncio.to_thread(self.token, Installation(api_url, app.app_id, app.installation_id), private_key)
        redact.add(token)
        return token

    def token(self, installation: Installation, private_key: str) -> str:
        """A token of `installation` with some life left; made (or remade) when it has too little.
        The key's digest is part of the cache key: a rotated key makes its own token."""
        key = (installation, hashlib.sha256(private_key.encode()).hexdigest())
        with self._lock:
            cached = self._cached.get(key)
            if cached is None or self.clock() >= cached.refresh_at:
                cached = self._cached[key] = self._create(installation, private_key)
            return cached.token

    def _create(self, installation: Installation, private_key: str) -> _Cached:
        what = f"an installation token of GitHub App {installation.app_id} (installation {installation.installation_id})"
        integration = GithubIntegration(auth=Auth.AppAuth(installation.app_id, private_key),
                                        base_url=installation.api_url, timeout=TIMEOUT_SECONDS, retry=None)
        try:
            issued = self.clock()
            authorization = integration.get_access_token(installation.installation_id)
        except jwt.exceptions.PyJWTError:
            raise AppTokenError(f"cannot make {what}: the private key is not a PEM RSA key", retryable=False) from None
        except GithubException as error:
            status = error.status or 0
            raise AppTokenError(f"GitHub answered {error.status} to making {what}: {error_message(error)}",
                                retryable=status == 429 or status >= 500) from None
        except requests.RequestException as error:
            raise AppTokenError(f"GitHub unreachable while making {what}: {type(error).__name__}",
                                retryable=True) from None
        finally:
            integration.close()
        life = authorization.expires_at.timestamp() - issued
        return _Cached(authorization.token,
                       issued + life - min(REFRESH_BEFORE_SECONDS, REFRESH_BEFORE_SHARE * life))
