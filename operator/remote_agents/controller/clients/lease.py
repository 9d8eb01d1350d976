"""Leader election on a `coordination.k8s.io/v1` Lease, with the `kubernetes` client's own
`kubernetes.leaderelection` (the acquire/renew protocol, expiry judged by the local clock since
the record last changed, so clock skew between replicas does not matter).

What this module adds around it (docs/architecture.md, "Leader election", says why):
- every Lease request has a timeout, and an unreachable API server is a failed attempt instead of
  an exception that would end the library's loop (it catches only ApiException);
- `release()` on a clean stop: no renewal is written after it, and the Lease is left without a
  holder so a standby takes it at its next attempt instead of waiting for it to expire;
- a deadline of its own: `expired()` is true once no renewal has succeeded for the renew
  deadline, even while a request still hangs (the library checks its deadline only between
  attempts), so the leader stops acting before any standby may take over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import kubernetes
import urllib3
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from remote_agents.controller.settings import LeaderElectionSettings

log = logging.getLogger(__name__)


class _WithTimeout:
    """The API's methods, each called with a request timeout."""

    def __init__(self, api: Any, timeout: float):
        self._api, self._timeout = api, timeout

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return partial(getattr(self._api, name), _request_timeout=self._timeout)


class _Unreachable:
    """What `get` reports when no answer came: no body, so the library logs it and retries
    (it creates the Lease only on an answered 404)."""

    def __init__(self, error: Exception):
        self.reason = f"API server unreachable: {error}"
        self.body = None


_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class GuardedLeaseLock(LeaseLock):
    def __init__(self, name: str, namespace: str, identity: str, request_timeout: float):
        super().__init__(name, namespace, identity)
        self.api_instance = _WithTimeout(kubernetes.client.CoordinationV1Api(), request_timeout)
        self._writing = threading.Lock()  # a renewal and the release never interleave
        self._released = False
        self.renewed_at: float | None = None  # monotonic start of the last write that made us holder

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        try:
            return super().get(name, namespace)
        except _TRANSPORT_ERRORS as error:
            return False, _Unreachable(error)

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        return self._write(partial(super().create, name, namespace, election_record))

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        return self._write(partial(super().update, name, namespace, updated_record))

    def _write(self, write: Callable[[], bool]) -> bool:
        started = time.monotonic()  # the Lease runs from when the request left, not when it was answered
        with self._writing:
            if self._released:
                return False
            try:
                written = write()
            except _TRANSPORT_ERRORS as error:
                log.warning("Lease %s/%s not written: API server unreachable: %s", self.namespace, self.name, error)
                return False
            if written:
                self.renewed_at = started
            return written

    def release(self) -> None:
        """Never renew again; if we hold the Lease, leave it without a holder."""
        with self._writing:
            self._released = True
            if self.renewed_at is None:
                return
            try:
                lease = self.api_instance.read_namespaced_lease(self.name, self.namespace)
                if lease.spec.holder_identity != self.identity:
                    return
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                self.api_instance.replace_namespaced_lease(self.name, self.namespace, lease)
                log.info("released Lease %s/%s", self.namespace, self.name)
            except (kubernetes.client.ApiException, *_TRANSPORT_ERRORS) as error:
                log.warning("Lease %s/%s not released (it expires instead): %s", self.namespace, self.name, error)


class LeaderElector:
    """Runs the election in a daemon thread (the library blocks; a standby may wait forever and
    must not hold up the process's exit). `on_leading` and `on_lost` are called from that thread."""

    def __init__(self, settings: LeaderElectionSettings, namespace: str, identity: str,
                 on_leading: Callable[[], None], on_lost: Callable[[str], None]):
        self.settings = settings
        self.lock = GuardedLeaseLock(settings.lease_name, namespace, identity,
                                     request_timeout=settings.renew_deadline_seconds / 2)
        self._on_lost = on_lost
        self._config = electionconfig.Config(
            self.lock, lease_duration=settings.lease_duration_seconds,
            renew_deadline=settings.renew_deadline_seconds, retry_period=settings.retry_period_seconds,
            onstarted_leading=on_leading, onstopped_leading=lambda: on_lost("the Lease could not be renewed"))
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        log.info("standing for leader: Lease %s/%s as %s", self.lock.namespace, self.lock.name, self.lock.identity)
        self._thread.start()

    def _run(self) -> None:
        try:
            leaderelection.LeaderElection(self._config).run()
        except Exception as error:  # the library's loop ended on something unforeseen: we cannot tell who leads
            log.exception("leader election failed")
            self._on_lost(f"leader election failed: {error}")

    def expired(self) -> bool:
        """True once leading and no renewal succeeded within the renew deadline."""
        renewed_at = self.lock.renewed_at
        return renewed_at is not None and time.monotonic() - renewed_at > self.settings.renew_deadline_seconds

    def release(self) -> None:
        self.lock.release()
