"""research-demo inside an e2b-local sandbox through the real e2b SDK, as its template would have it:
Bun installed by npm under the sandbox's home, the agent's locked dependencies installed there, then
one-shot and resident answers through the LLM stand-in on the host (sandboxes share its network)."""

from __future__ import annotations

import json
import shlex

import pytest

from remote_agents_local import bun, research_demo
from remote_agents_local.e2b_local import launcher

QUESTION = "What is the price of GLOBEX?"
ANSWER = "GLOBEX closed at 87.2 USD on 2026-11-30."
BUN = "/home/user/.bun/node_modules/.bin/bun"


@pytest.fixture(scope="module")
def e2b(tmp_path_factory, monkeypatch_module):
    server = launcher.start(tmp_path_factory.mktemp("e2b-local"))
    monkeypatch_module.delenv("E2B_DEBUG", raising=False)
    for key, value in server.env.items():
        monkeypatch_module.setenv(key, value)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def agent_sandbox(e2b, llm, market):
    from e2b import Sandbox

    box = Sandbox.create(timeout=600, envs={
        "OPENAI_API_KEY": "sk-standin", "OPENAI_BASE_URL": llm.base_url, "MARKET_DATA_URL": market.url,
        # As the agent's template.yaml does: npm and bun trust the system's CAs (a TLS proxy's too).
        "NODE_EXTRA_CA_CERTS": "/etc/ssl/certs/ca-certificates.crt"})
    # What research-demo/template.yaml does: the agent beside the harness (uploaded: the checkout may
    # be where a sandbox cannot see it, e.g. under the private /tmp), Bun from npm, a frozen install.
    agents = research_demo.AGENTS_DIR
    for path in [*sorted((agents / "harness").glob("*.ts")), agents / "research-demo" / "package.json",
                 agents / "research-demo" / "bun.lock", *sorted((agents / "research-demo" / "src").glob("*.ts"))]:
        box.files.write(f"/home/user/agents/{path.relative_to(agents).as_posix()}", path.read_text())
    for step in (f"npm install --no-audit --no-fund --prefix /home/user/.bun bun@{bun.BUN_VERSION}",
                 f"cd agents/research-demo && {BUN} install --frozen-lockfile --ignore-scripts"):
        result = box.commands.run(step, cwd="/home/user", timeout=300)
        assert result.exit_code == 0, f"{step}: {result.stderr}"
    yield box
    box.kill()


def test_one_shot_in_a_sandbox(agent_sandbox, llm):
    llm.forget()
    run = agent_sandbox.commands.run(f"{BUN} run src/query.ts", cwd="/home/user/agents/research-demo",
                                     envs={"AGENT_QUERY": QUESTION}, timeout=120)
    assert (run.exit_code, run.stdout) == (0, f"{ANSWER}\n")
    assert [request["reply"].get("toolCall") for request in llm.requests()] == ["get_price", None]


def test_resident_in_a_sandbox_keeps_the_session_in_one_process(agent_sandbox):
    server = agent_sandbox.commands.run(f"{BUN} run src/serve.ts", cwd="/home/user/agents/research-demo",
                                        envs={"AGENT_SERVER_PORT": "8765"}, background=True)
    try:
        def call(args: str) -> str:
            # The in-sandbox side, as a task's client talks to the resident process.
            result = agent_sandbox.commands.run(f"curl -sS --retry 20 --retry-connrefused --retry-delay 1 {args}",
                                                timeout=120)
            assert result.exit_code == 0, result.stderr
            return result.stdout

        before = json.loads(call("http://127.0.0.1:8765/healthz"))
        ask = "-XPOST http://127.0.0.1:8765/query -d " + shlex.quote(json.dumps(
            {"task": "t1", "session": "s1", "query": QUESTION}))
        first = [json.loads(line) for line in call(ask).splitlines()]
        follow_up = "-XPOST http://127.0.0.1:8765/query -d " + shlex.quote(json.dumps(
            {"task": "t2", "session": "s1", "query": "What did I ask before?"}))
        second = [json.loads(line) for line in call(follow_up).splitlines()]
        after = json.loads(call("http://127.0.0.1:8765/healthz"))
    finally:
        server.kill()
    assert first[-1] == {"event": "answer", "text": ANSWER}
    assert second[-1] == {"event": "answer", "text": f"You asked: {QUESTION}"}
    assert after == {"pid": before["pid"], "answered": before["answered"] + 2}
