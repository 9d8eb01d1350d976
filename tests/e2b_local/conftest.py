"""One local E2B server for the whole e2b_local suite, started through the launcher; every
test talks to it through the unmodified SDK via the E2B_* environment variables."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from remote_agents_local.e2b_local import launcher
from tests.e2b_local.helpers import MAX_RUNNING, MAX_TIMEOUT, MAX_UPLOAD_MB, MEMORY_MB, PIDS_MAX


def _require_tools() -> None:
    missing = [tool for tool in ("bash", "bwrap", "cc") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"e2b_local tests need {', '.join(missing)} on PATH (apt-get install bubblewrap gcc)",
                    pytrace=False)


@pytest.fixture(scope="session")
def e2b_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.LocalE2B]:
    _require_tools()
    server = launcher.start(tmp_path_factory.mktemp("e2b-local"),
                            extra_args=["--max-running", str(MAX_RUNNING), "--max-timeout", str(MAX_TIMEOUT),
                                        "--pids-max", str(PIDS_MAX), "--memory-mb", str(MEMORY_MB),
                                        "--max-upload-mb", str(MAX_UPLOAD_MB)])
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def e2b_env(e2b_server: launcher.LocalE2B, monkeypatch: pytest.MonkeyPatch) -> launcher.LocalE2B:
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    for key, value in e2b_server.env.items():
        monkeypatch.setenv(key, value)
    return e2b_server


@pytest.fixture
def sandbox():
    from e2b import Sandbox

    box = Sandbox.create(timeout=120)
    yield box
    box.kill()

