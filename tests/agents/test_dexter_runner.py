"""agents/dexter's runner with bun against a fake of the Dexter API it calls (tests/agents/fake_dexter):
the Agent is created headless with memory off, each Dexter event worth a line is one stderr line, the
`done` event's answer is stdout; resident, each session keeps one Agent and its chat history."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from remote_agents_local import processes, research_demo

FAKE_DEXTER = Path(__file__).parent / "fake_dexter"
RUNNER = research_demo.AGENTS_DIR / "dexter"
CONFIG = '{"channel":"headless","memoryEnabled":false}'


def dexter_env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **extra}


def test_one_shot_prints_progress_lines_and_the_done_answer(bun_binary):
    run = subprocess.run([str(bun_binary), "run", str(RUNNER / "run-query.ts")], cwd=FAKE_DEXTER, capture_output=True,
                         text=True, env=dexter_env(AGENT_QUERY="Compare Apple's margins"), timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"agent 1 {CONFIG} turns none: Compare Apple's margins\n"
    assert run.stderr.splitlines() == ["thinking: planning the research", 'tool get_financials {"ticker":"AAPL"}',
                                       "tool get_financials done in 7 ms"]


@pytest.mark.parametrize(("query", "reason"), [("fail", "Dexter broke"),
                                               ("no key", "the OpenAI API key is invalid")])  # Dexter's "Error: " answer
def test_one_shot_failure_exits_1(bun_binary, query, reason):
    run = subprocess.run([str(bun_binary), "run", str(RUNNER / "run-query.ts")], cwd=FAKE_DEXTER, capture_output=True,
                         text=True, env=dexter_env(AGENT_QUERY=query, DEXTER_MODEL="gpt-x"), timeout=60)
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr.splitlines()[-1] == f"error: {reason}"


def test_resident_keeps_one_agent_and_history_per_session(bun_binary, tmp_path):
    port = processes.free_port()
    # DEXTER_DIR instead of the working directory: where a template may keep Dexter's checkout.
    server = subprocess.Popen([str(bun_binary), "run", str(RUNNER / "serve.ts")], cwd=tmp_path, text=True,
                              env=dexter_env(AGENT_SERVER_PORT=str(port), DEXTER_DIR=str(FAKE_DEXTER)),
                              stderr=subprocess.PIPE)
    try:
        assert "dexter resident server on 127.0.0.1:" in server.stderr.readline()

        def ask(session: str | None, query: str) -> list[dict]:
            body = json.dumps({"task": "t", "session": session, "query": query}).encode()
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/query", data=body,
                                                               method="POST"), timeout=30) as response:
                return [json.loads(line) for line in response.read().decode().splitlines()]

        first = ask("s1", "q1")
        assert first[:-1] == [{"event": "progress", "text": "thinking: planning the research"},
                              {"event": "progress", "text": 'tool get_financials {"ticker":"AAPL"}'},
                              {"event": "progress", "text": "tool get_financials done in 7 ms"}]
        assert first[-1] == {"event": "answer", "text": f"agent 1 {CONFIG} turns 0: q1"}
        assert ask("s1", "q2")[-1]["text"] == f"agent 1 {CONFIG} turns 1: q2"  # same Agent, history grew
        assert ask("s2", "q1")[-1]["text"] == f"agent 2 {CONFIG} turns 0: q1"
        assert ask("s1", "fail")[-1] == {"event": "error", "message": "Dexter broke"}

        # A client that goes away mid-answer (a cancelled task) does not hold up its session's next query.
        hung = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        hung.request("POST", "/query", body=json.dumps({"task": "t", "session": "s1", "query": "hang"}))
        reply = hung.getresponse()
        assert json.loads(reply.readline()) == {"event": "progress", "text": "thinking: planning the research"}
        hung.close()
        assert ask("s1", "q3")[-1]["text"] == f"agent 1 {CONFIG} turns 2: q3"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert json.load(response) == {"pid": server.pid, "answered": 4}
    finally:
        server.terminate()
        server.wait(timeout=10)
