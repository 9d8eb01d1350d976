"""The Lease lock around the kubernetes client's leader election: against an in-memory Lease API
with the API server's optimistic concurrency, driven by the library's own acquire/renew step."""

from __future__ import annotations

import copy
import json
import time

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection

from remote_agents.controller.clients.lease import GuardedLeaseLock, LeaderElector
from remote_agents.controller.settings import LeaderElectionSettings


class LeaseApi:
    """One namespace's Leases, with resourceVersion conflicts; `down` makes every call fail as an
    unreachable server does."""

    def __init__(self):
        self.leases: dict[str, client.V1Lease] = {}
        self.version = 0
        self.down = False
        self.writes = 0
        self.timeouts: set[float] = set()

    def _call(self, timeout):
        self.timeouts.add(timeout)
        if self.down:
            raise urllib3.exceptions.MaxRetryError(None, "/leases", "connection refused")

    def read_namespaced_lease(self, name, namespace, _request_timeout=None):
        self._call(_request_timeout)
        if name not in self.leases:
            raise ApiException(status=404, reason="Not Found") from None
        return copy.deepcopy(self.leases[name])

    def create_namespaced_lease(self, namespace, body, _request_timeout=None):
        self._call(_request_timeout)
        name = body.metadata.name
        if name in self.leases:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(name, client.V1Lease(metadata=client.V1ObjectMeta(name=name), spec=body.spec))

    def replace_namespaced_lease(self, name, namespace, body, _request_timeout=None):
        self._call(_request_timeout)
        if self.leases[name].metadata.resource_version != body.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(name, body)

    def _store(self, name, lease):
        self.version += 1
        self.writes += 1
        lease = copy.deepcopy(lease)
        lease.metadata.resource_version = str(self.version)
        self.leases[name] = lease
        return copy.deepcopy(lease)


def not_found_body(error):
    error.body = json.dumps({"code": 404})
    return error


@pytest.fixture
def api(monkeypatch):
    api = LeaseApi()
    original = api.read_namespaced_lease

    def read(*args, **kwargs):  # an answered 404 carries its Status as the body, as the real client's does
        try:
            return original(*args, **kwargs)
        except ApiException as error:
            raise not_found_body(error) from None
    api.read_namespaced_lease = read
    return api


def candidate(api, identity, lease_duration=4, renew_deadline=3.0, retry_period=1.0):
    lock = GuardedLeaseLock("ops", "ns", identity, request_timeout=1.5)
    lock.api_instance._api = api
    config = electionconfig.Config(lock, lease_duration, renew_deadline, retry_period,
                                   onstarted_leading=lambda: None, onstopped_leading=lambda: None)
    return lock, leaderelection.LeaderElection(config)


def holder(api):
    return api.leases["ops"].spec.holder_identity


def test_first_candidate_leads_and_the_other_waits_for_expiry(api):
    a_lock, a = candidate(api, "a")
    _, b = candidate(api, "b")
    assert a.try_acquire_or_renew() and holder(api) == "a"
    assert not b.try_acquire_or_renew()  # held, and b has just seen it renewed
    assert a.try_acquire_or_renew()  # the leader renews
    assert a_lock.renewed_at is not None
    assert api.timeouts == {1.5}  # every request carries the timeout


def test_release_hands_over_at_the_next_attempt_and_ends_renewals(api):
    a_lock, a = candidate(api, "a")
    _, b = candidate(api, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    a_lock.release()
    assert holder(api) is None
    assert api.leases["ops"].spec.lease_duration_seconds == 1
    writes = api.writes
    assert not a.try_acquire_or_renew()  # released: never written again
    assert api.writes == writes
    assert b.try_acquire_or_renew() and holder(api) == "b"  # no wait for the lease duration


def test_release_leaves_someone_elses_lease_alone(api):
    a_lock, a = candidate(api, "a", lease_duration=2, renew_deadline=1.5, retry_period=1.0)
    _, b = candidate(api, "b", lease_duration=2, renew_deadline=1.5, retry_period=1.0)
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    time.sleep(2.1)  # a's lease expires for b
    assert b.try_acquire_or_renew() and holder(api) == "b"
    a_lock.release()
    assert holder(api) == "b"


def test_a_standby_never_leading_releases_nothing(api):
    a_lock, a = candidate(api, "a")
    b_lock, b = candidate(api, "b")
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    writes = api.writes
    b_lock.release()
    assert api.writes == writes and holder(api) == "a"


def test_an_unreachable_api_server_is_a_failed_attempt_not_an_exception(api):
    a_lock, a = candidate(api, "a")
    a.try_acquire_or_renew()
    renewed = a_lock.renewed_at
    api.down = True
    assert not a.try_acquire_or_renew()
    assert a_lock.renewed_at == renewed
    api.down = False
    _, c = candidate(api, "c")
    api.down = True
    assert not c.try_acquire_or_renew()  # a standby too: it retries rather than dying


@pytest.mark.parametrize("since_renewal, expired", [(None, False), (0.0, False), (2.9, False), (3.1, True)])
def test_the_leader_expires_its_own_claim_after_the_renew_deadline(since_renewal, expired):
    settings = LeaderElectionSettings(lease_duration_seconds=4, renew_deadline_seconds=3, retry_period_seconds=1)
    elector = LeaderElector(settings, "ns", "a", on_leading=lambda: None, on_lost=lambda reason: None)
    if since_renewal is not None:
        elector.lock.renewed_at = time.monotonic() - since_renewal
    assert elector.expired() is expired
