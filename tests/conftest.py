"""Session-wide real infrastructure. A missing prerequisite FAILS the tests that need it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from remote_agents_local.cluster import build, control_plane
from tests.support.kubectl import Kubectl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A real etcd + kube-apiserver + kube-controller-manager, up once for the whole run."""
    state = tmp_path_factory.mktemp("cluster")
    try:
        started = control_plane.up(state)
    except (build.BuildError, control_plane.ControlPlaneError) as error:
        pytest.fail(f"the local control plane could not be built or started: {error}", pytrace=False)
    yield started
    control_plane.down(state)


@pytest.fixture(scope="session")
def kubectl(cluster) -> Kubectl:
    return Kubectl(cluster.kubeconfig)


@pytest.fixture(scope="session")
def crds(kubectl):
    kubectl.run("apply", "--server-side", "-f", str(ROOT / "crds"))
    names = [f"crd/{path.name.removesuffix('.yaml')}" for path in sorted((ROOT / "crds").glob("*.yaml"))]
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", *names)
    return ROOT / "crds"


@pytest.fixture
def namespace(kubectl, request):
    readable = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{readable}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(autouse=True)
def _no_stray_e2b_env(monkeypatch):
    # Tests pass E2B settings explicitly; an ambient E2B_DEBUG would make the SDK skip real calls.
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    yield
