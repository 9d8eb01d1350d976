"""The in-sandbox half of the resident protocol (controller/resident.py), run for real on this
machine: the task runner's bash, the relay and the client (`python3 -I -S`) against the test
agent's server (tests/support/resident_server.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remote_agents.controller import resident
from remote_agents.controller.tasks import runner

SERVER = Path(__file__).parents[1] / "support" / "resident_server.py"
NO_CLIENT = "import sys; sys.exit(9)"  # a task's own client that would give itself away


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, dict[str, str]]:
    """The test agent's server, answering, and the environment its clients need."""
    env = {"PATH": os.environ["PATH"], "AGENT_SERVER_PORT": str(free_port())}
    process = subprocess.Popen([sys.executable, str(SERVER)], env=env)
    probe = subprocess.run(["bash", "-c", resident.health_command(30)],
                           env={**env, **resident.client_env(int(env["AGENT_SERVER_PORT"]))},
                           capture_output=True, text=True, timeout=60)
    if resident.parse_pid(probe.stdout) != process.pid:
        process.kill()
        raise AssertionError(f"the test server did not come up: {probe.stderr}")
    return process, env


@pytest.fixture
def server() -> Iterator[dict[str, str]]:
    process, env = start_server()
    try:
        yield env
    finally:
        process.kill()
        process.wait()


def start_relay(env: dict[str, str], tokens: Path, parent: list[str] | None = None) -> tuple[subprocess.Popen, int]:
    """A relay (as a child of `parent`, a command that stands for the resident process, or of
    this test); returns the process started and the relay's port, once it listens."""
    port = free_port()
    relay = f'{resident.PYTHON_CLIENT} relay {port} {tokens}'
    command = ["bash", "-c", f"{relay} & exec {' '.join(parent)}"] if parent else ["bash", "-c", f"exec {relay}"]
    process = subprocess.Popen(command, env={**env, "AGENT_RESIDENT_CLIENT": resident.CLIENT})
    for _ in range(300):
        if tokens.exists():
            return process, port
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the relay wrote no tokens")


def run(env: dict[str, str], files: Path, query: str, relay_port: int | None = None,
        tokens: Path | None = None, client: str | None = None) -> tuple[str, str, str]:
    """One task's run through the real runner: (its stream, its stdout file, its stderr file)."""
    extra = resident.client_env(int(env["AGENT_SERVER_PORT"]), relay_port, "t-" + files.name, "s")
    if tokens is not None:
        extra["AGENT_RELAY_TOKENS"] = str(tokens)
    if client is not None:
        extra["AGENT_RESIDENT_CLIENT"] = client
    run_env = {**env, **extra, **runner.runner_env({"runId": files.name}, query, str(files.parent),
                                                   resident.CLIENT_COMMAND), "RUN_FILES": str(files)}
    stream = subprocess.run(["bash", "-c", runner.RUNNER], env=run_env, capture_output=True, text=True,
                            timeout=60).stdout
    return stream, Path(f"{files}.stdout").read_text(), Path(f"{files}.stderr").read_text()


@pytest.mark.parametrize("without_json_accelerator", [False, True])
def test_without_a_relay_the_run_is_the_client_and_copies_its_answer_onto_the_stream(server, tmp_path,
                                                                                    without_json_accelerator):
    """No relay listens: the run becomes the client; the files hold the answer and progress, and
    the stream's copy is the same texts; also on a Python without `_json` (the client falls back
    to json's pure-Python halves)."""
    client = resident.CLIENT
    if without_json_accelerator:
        client = 'import sys; sys.modules["_json"] = None\n' + client
    stream, stdout, stderr = run(server, tmp_path / "r1", "remember x", relay_port=free_port(), client=client)
    assert runner.exit_line(stream).groups() == ("0", " stderr")
    assert json.loads(stdout)["facts"] == ["x"] and stderr == "thinking about 'remember x'\n"
    assert resident.streamed_answer(stream) == (stdout, stderr)


def test_a_run_hands_its_query_to_the_relay_and_starts_no_client(server, tmp_path):
    """With the relay up, two runs of one session are answered in order, with the same files and
    stream copy as the client gives, while the run's own client (which would exit 9) never runs."""
    tokens = tmp_path / "relay.tokens"
    relay, port = start_relay(server, tokens)
    try:
        first = run(server, tmp_path / "r1", "remember x", port, tokens, client=NO_CLIENT)
        stream, stdout, stderr = run(server, tmp_path / "r2", "remember y", port, tokens, client=NO_CLIENT)
    finally:
        relay.kill()
    assert runner.exit_line(first[0]).groups() == ("0", " stderr")
    assert runner.exit_line(stream).groups() == ("0", " stderr")
    assert json.loads(stdout)["facts"] == ["x", "y"] and stderr == "thinking about 'remember y'\n"
    assert resident.streamed_answer(stream) == (stdout, stderr)
    assert oct(tokens.stat().st_mode & 0o777) == "0o600"


def test_a_listener_without_the_relays_token_never_sees_the_query(server, tmp_path):
    """Something else on the relay's port (a neighbour's process, on a network sandboxes share) is
    told the run's pid and an IN token it cannot use, never the query; it answers without the OUT
    token, so the run asks through its own client."""
    tokens = tmp_path / "relay.tokens"
    tokens.write_text("a" * 32 + " " + "b" * 32 + "\n")
    heard: list[bytes] = []
    squatter = socket.create_server(("127.0.0.1", 0))

    def answer_wrongly() -> None:
        conn, _ = squatter.accept()
        with conn:
            conn.sendall(b"0\n")
            while chunk := conn.recv(4096):
                heard.append(chunk)
    threading.Thread(target=answer_wrongly, daemon=True).start()
    stream, stdout, _ = run(server, tmp_path / "r1", "remember the secret plan", squatter.getsockname()[1], tokens)
    squatter.close()
    assert runner.exit_line(stream).groups() == ("0", " stderr")
    assert json.loads(stdout)["facts"] == ["the secret plan"]
    assert b"secret" not in b"".join(heard) and b"".join(heard).startswith(b"a" * 32 + b" ")


def test_the_relay_refuses_a_wrong_token_and_keeps_serving(server, tmp_path):
    tokens = tmp_path / "relay.tokens"
    relay, port = start_relay(server, tokens)
    try:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"0123456789abcdef0123456789abcdef %d\n" % os.getpid())
            assert conn.recv(100) == b"refused\n"
        stream, stdout, _ = run(server, tmp_path / "r1", "remember z", port, tokens, client=NO_CLIENT)
    finally:
        relay.kill()
    assert runner.exit_line(stream)[1] == "0" and json.loads(stdout)["facts"] == ["z"]


def test_a_signalled_run_ends_and_the_relay_answers_the_next(server, tmp_path):
    """The deadline's SIGTERM reaches the run's shell, which waits on the relay: the run ends
    (143), and the relay, having let go of that query, answers the next run."""
    tokens = tmp_path / "relay.tokens"
    relay, port = start_relay(server, tokens)
    files = tmp_path / "r1"
    try:
        extra = {**resident.client_env(int(server["AGENT_SERVER_PORT"]), port, "t-1", "s"),
                 "AGENT_RELAY_TOKENS": str(tokens), "AGENT_RESIDENT_CLIENT": NO_CLIENT}
        stuck = subprocess.Popen(["bash", "-c", runner.RUNNER], stdout=subprocess.PIPE, text=True, env={
            **server, **extra, **runner.runner_env({"runId": "r1"}, f"wait for {tmp_path}/never", str(tmp_path),
                                                   resident.CLIENT_COMMAND), "RUN_FILES": str(files)})
        for _ in range(200):
            if Path(f"{files}.stderr").exists() and Path(f"{files}.pid").exists():
                break
            time.sleep(0.05)
        time.sleep(0.5)  # (handed over: the relay has asked the server)
        os.killpg(int(Path(f"{files}.pid").read_text()), signal.SIGTERM)
        assert runner.exit_line(stuck.communicate(timeout=30)[0])[1] == "143"
        stream, stdout, _ = run(server, tmp_path / "r2", "remember w", port, tokens, client=NO_CLIENT)
    finally:
        relay.kill()
    assert runner.exit_line(stream)[1] == "0" and json.loads(stdout)["facts"] == ["w"]


@pytest.mark.parametrize("through_the_relay", [True, False])
def test_a_process_that_dies_mid_answer_fails_the_run_with_the_lost_code(tmp_path, through_the_relay):
    """76 (ServerLost), not 1: the operator tells the process's death from the query's own error."""
    process, env = start_server()
    tokens = tmp_path / "relay.tokens"
    relay, port = start_relay(env, tokens) if through_the_relay else (None, free_port())
    files = tmp_path / "r1"
    try:
        extra = {**resident.client_env(int(env["AGENT_SERVER_PORT"]), port, "t-1", "s"),
                 "AGENT_RELAY_TOKENS": str(tokens)}
        if through_the_relay:
            extra["AGENT_RESIDENT_CLIENT"] = NO_CLIENT
        run = subprocess.Popen(["bash", "-c", runner.RUNNER], stdout=subprocess.PIPE, text=True, env={
            **env, **extra, **runner.runner_env({"runId": "r1"}, f"wait for {tmp_path}/never", str(tmp_path),
                                                resident.CLIENT_COMMAND), "RUN_FILES": str(files)})
        for _ in range(200):
            if Path(f"{files}.pid").exists():
                break
            time.sleep(0.05)
        time.sleep(0.5)  # (asked: the server waits for the file)
        process.kill()
        stream = run.communicate(timeout=30)[0]
    finally:
        process.kill()
        if relay:
            relay.kill()
    assert runner.exit_line(stream)[1] == str(resident.SERVER_LOST_EXIT)
    assert "the resident server" in Path(f"{files}.stderr").read_text()


def test_the_relay_ends_with_the_resident_process(server, tmp_path):
    """Started as the resident process's child (as server_command starts it), the relay goes when
    its parent goes, and lets go of its port for the relay of the process started next."""
    tokens = tmp_path / "relay.tokens"
    parent, port = start_relay(server, tokens, parent=["sleep", "300"])
    parent.kill()
    parent.wait()
    for _ in range(100):  # the relay looks at its parent twice a second
        try:
            with socket.create_server(("127.0.0.1", port)):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the relay outlived the resident process")


def test_the_servers_start_command_hides_the_relays_environment_from_the_process():
    command = resident.server_command("/home/user/agent")
    start, hide, run_server = command.splitlines()[1:]
    assert start.startswith(resident.PYTHON_CLIENT + " relay ") and start.endswith("&")
    assert hide == "unset AGENT_RESIDENT_CLIENT AGENT_RELAY_PORT AGENT_RELAY_TOKENS"
    assert run_server.startswith('exec bash -c "$AGENT_SERVER_COMMAND"')
