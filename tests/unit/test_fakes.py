"""The in-memory fakes keep the real clients' interface: every public method the real Kube and
SandboxGateway have, the fakes have, with the same parameters and the same sync/async kind. A
change to a real client fails here until its fake follows."""

from __future__ import annotations

import inspect

import pytest

from remote_agents.controller.clients.e2b import SandboxGateway
from remote_agents.controller.clients.e2b_templates import TemplateBuilds
from remote_agents.controller.clients.kube import Kube
from tests.support.fake_e2b import FakeSandboxGateway, FakeTemplateBuilds
from tests.support.fake_kube import FakeKube

# The blocking list-and-watch calls of clients/watch.py: the fake's `watch` feeds the operator instead.
# The gateway's seam for the other E2B adapters (template builds): their fakes stand in whole.
NOT_MODELLED = {Kube: {"get_json", "stream_json"}, SandboxGateway: {"call"}, TemplateBuilds: set()}


def public_methods(cls: type) -> dict[str, object]:
    return {name: member for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_")}


@pytest.mark.parametrize("real, fake", [(Kube, FakeKube), (SandboxGateway, FakeSandboxGateway),
                                        (TemplateBuilds, FakeTemplateBuilds)],
                         ids=["kube", "e2b", "e2b-templates"])
def test_a_fake_has_every_method_of_its_real_client(real, fake):
    for name, method in public_methods(real).items():
        if name in NOT_MODELLED[real]:
            continue
        assert hasattr(fake, name), f"{fake.__name__} lacks {name}"
        twin = getattr(fake, name)
        assert inspect.signature(twin).parameters.keys() == inspect.signature(method).parameters.keys(), name
        assert [p.kind for p in inspect.signature(twin).parameters.values()] == \
               [p.kind for p in inspect.signature(method).parameters.values()], name
        assert [p.default for p in inspect.signature(twin).parameters.values()] == \
               [p.default for p in inspect.signature(method).parameters.values()], name
        assert inspect.iscoroutinefunction(twin) == inspect.iscoroutinefunction(method), name
