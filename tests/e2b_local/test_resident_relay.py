"""The resident protocol's in-sandbox half inside a real e2b-local sandbox, through the operator's
gateway and the unmodified SDK: the resident process started as the operator starts it, with its
relay, and a task's run handed to the relay."""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path

from remote_agents.api.names import SANDBOX_UID_KEY
from remote_agents.controller import resident
from remote_agents.controller.clients.e2b import SandboxGateway
from remote_agents.controller.sandboxes import OPERATOR_ACCOUNT
from remote_agents.controller.settings import GatewaySettings
from remote_agents.controller.tasks import runner

SERVER = (Path(__file__).parents[1] / "support" / "resident_server.py").read_text()
WORKDIR = "/home/user/agent"


async def test_a_run_is_answered_through_the_relay_with_its_answer_on_the_runners_stream():
    gateway = SandboxGateway(GatewaySettings(creates_per_second=100, calls_per_second=100))
    uid = str(uuid.uuid4())
    sandbox = await gateway.create(template="base", timeout_seconds=120, metadata={SANDBOX_UID_KEY: uid},
                                   idempotency_key=uid, account=OPERATOR_ACCOUNT)
    port = resident.port_of(0, uid)
    relay_port = resident.relay_port_of(port, uid)
    try:
        await gateway.run(sandbox, f"mkdir -p {WORKDIR} && printf '%s' {shlex.quote(SERVER)} > {WORKDIR}/server.py",
                          envs={}, cwd=None, timeout_seconds=30)
        await gateway.start_background(sandbox, resident.server_command(WORKDIR), envs={
            **resident.client_env(port, relay_port), "AGENT_SERVER_COMMAND": "python3 server.py"})
        probe = await gateway.run(sandbox, resident.health_command(30), envs=resident.client_env(port), cwd=None,
                                  timeout_seconds=60)
        assert resident.parse_pid(probe.stdout), probe
        streams = []
        for run_id, query in (("r1", "remember the desk closes at five"), ("r2", "when does the desk close?")):
            env = {**resident.client_env(port, relay_port, f"t-{run_id}", "s1"),
                   "AGENT_RESIDENT_CLIENT": "import sys; sys.exit(9)",  # a run's own client would give itself away
                   **runner.runner_env({"runId": run_id}, query, WORKDIR, resident.CLIENT_COMMAND)}
            handle = await gateway.start_background(sandbox, runner.RUNNER, envs=env)
            streams.append((await handle.wait()).stdout)
        processes = await gateway.run(sandbox, "ps -eo ppid=,args=", envs={}, cwd=None, timeout_seconds=30)
    finally:
        await gateway.kill(sandbox)
    assert [runner.exit_line(stream).groups() for stream in streams] == [("0", " stderr")] * 2
    answered = resident.streamed_answer(streams[1])
    assert answered is not None, streams[1]  # copied onto the stream: the operator reads no file
    assert '"facts": ["the desk closes at five"]' in answered[0]
    assert answered[1] == "thinking about 'when does the desk close?'\n"
    relays = [line.split()[0] for line in processes.stdout.splitlines() if line.endswith("relay.tokens")]
    assert relays == [probe.stdout.strip()]  # one relay, the resident process's child
