"""Asynchronous JSON requests to the API server, with the kubernetes client's configuration.

The calls every task makes (status, Events, its output ConfigMap) go through here, because the
official client is synchronous: each call would cost a thread hand-off plus its request building,
auth refresh and urllib3 machinery (measured in docs/benchmarks.md). Here a call is one request on
a pooled keep-alive connection, awaited on the event loop. Failures look the same as the
client's: an ApiException for a non-2xx answer, an OSError when the server cannot be reached.
"""

from __future__ import annotations

import json
import ssl
import time
from typing import Any

import aiohttp
from kubernetes.client import Configuration
from kubernetes.client.exceptions import ApiException

CONNECTIONS = 32
TOKEN_REFRESH_SECONDS = 60  # how long a bearer token is reused before the client's refresh hook runs again


class ApiUnreachable(ConnectionError):
    """No answer from the API server (connection refused or reset, timeout)."""


def _tls(configuration: Configuration) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif configuration.assert_hostname is False:
        context.check_hostname = False
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


class KubeHttp:
    """Create it on the event loop that uses it (aiohttp's sessions belong to one)."""

    def __init__(self, configuration: Configuration) -> None:
        self._configuration = configuration
        self._base = configuration.host.rstrip("/")
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=_tls(configuration), limit=CONNECTIONS),
            timeout=aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=30.0))
        self._proxy = configuration.proxy or None
        self._token: str | None = None
        self._token_expires = 0.0

    def _authorization(self) -> dict[str, str]:
        """The bearer token, if the configuration has one (client certificates need none)."""
        if time.monotonic() >= self._token_expires:
            self._token = self._configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
            self._token_expires = time.monotonic() + TOKEN_REFRESH_SECONDS
        return {"Authorization": self._token} if self._token else {}

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> dict[str, Any]:
        """The answer's JSON ({} when empty)."""
        headers = {"Accept": "application/json", "Content-Type": content_type, **self._authorization()}
        try:
            async with self._http.request(method, self._base + path, headers=headers, proxy=self._proxy,
                                          data=None if body is None else json.dumps(body)) as response:
                text = await response.text()
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            raise ApiUnreachable(f"{method} {path}: {type(error).__name__}: {error}") from error
        if not 200 <= response.status <= 299:
            failure = ApiException(status=response.status, reason=response.reason, body=text)
            failure.headers = response.headers
            raise failure
        return json.loads(text) if text else {}

    async def close(self) -> None:
        await self._http.close()
