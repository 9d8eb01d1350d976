"""Real e2b-local, git daemon and operator processes for the end-to-end tests."""

from __future__ import annotations

import pytest

from remote_agents_local import processes
from remote_agents_local.e2b_local import launcher
from tests.support.e2b_client import E2BClient
from tests.support.git_server import GitServer
from tests.support.operator_process import OperatorProcess, stop_after_finalizing

# Short intervals so drift, ref moves and orphans are noticed within a test's patience.
FAST_OPERATOR_ARGS = ("--health-interval", "2", "--ref-poll-interval", "2", "--orphan-grace", "6")
FAKE_GITHUB_HOST = "127.0.0.1"  # tests/support/fake_github.py serves there; publishing to it must be allowed

AGENT_FILES = {
    "agent.txt": "version 1\n",
    "answer.sh": "#!/bin/bash\nprintf 'answer to: %s\\n' \"$AGENT_QUERY\"\n",
}


@pytest.fixture(scope="session")
def git_server(tmp_path_factory):
    server = GitServer(tmp_path_factory.mktemp("git"))
    yield server
    server.stop()


@pytest.fixture
def agent_repo(git_server, request):
    return git_server.create(request.node.name.replace("[", "-").replace("]", ""), AGENT_FILES)


def start_e2b(tmp_path_factory, *extra: str) -> launcher.LocalE2B:
    return launcher.start(tmp_path_factory.mktemp("e2b"), extra_args=["--max-running", "500", *extra])


@pytest.fixture(scope="module")
def e2b(tmp_path_factory):
    server = start_e2b(tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def e2b_client(e2b) -> E2BClient:
    return E2BClient(e2b.env)


@pytest.fixture(scope="module")
def operator(cluster, crds, kubectl, e2b, tmp_path_factory):
    metrics_port = processes.free_port()
    process = OperatorProcess(cluster.kubeconfig, e2b.env, tmp_path_factory.mktemp("operator") / "operator.log",
                              *FAST_OPERATOR_ARGS, "--metrics-port", str(metrics_port),
                              "--github-api-host", FAKE_GITHUB_HOST).start()
    process.metrics_url = f"http://127.0.0.1:{metrics_port}"
    yield process
    stop_after_finalizing(process, kubectl)
