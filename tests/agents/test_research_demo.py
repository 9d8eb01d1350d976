"""agents/research-demo, run by bun on this host against the LLM stand-in (through LangChain's
ChatOpenAI on the Responses API) and the market-data stand-in: one-shot and resident."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from contextlib import contextmanager

from remote_agents_local import processes

QUESTION = "What is the price of ACME?"
ANSWER = "ACME closed at 123.45 USD on 2026-11-30."


def agent_env(llm, market, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "OPENAI_API_KEY": "sk-standin",
            "OPENAI_BASE_URL": llm.base_url, "MARKET_DATA_URL": market.url, **extra}


def test_one_shot_answers_after_exactly_one_tool_call(demo_agent, bun_binary, llm, market):
    llm.forget()
    run = subprocess.run([str(bun_binary), "run", "src/query.ts"], cwd=demo_agent, capture_output=True, text=True,
                         env=agent_env(llm, market, AGENT_QUERY=QUESTION), timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{ANSWER}\n"
    # One progress line per event on stderr, and nothing else (no client reaching for the internet).
    assert run.stderr.splitlines() == [
        "thinking (step 1)", 'tool get_price {"ticker":"ACME"}',
        'tool get_price returned {"ticker": "ACME", "close": 123.45, "currency": "USD", "date": "2026-11-30"}',
        "thinking (step 2)"]
    asked = llm.requests()
    assert [request["api"] for request in asked] == ["responses", "responses"] and all(r["stream"] for r in asked)
    assert asked[0]["reply"] == {"toolCall": "get_price", "arguments": json.dumps({"ticker": "ACME"})}
    assert asked[1]["toolOutputs"] == [json.dumps({"ticker": "ACME", "close": 123.45, "currency": "USD",
                                                   "date": "2026-11-30"})]


def test_one_shot_failure_exits_1_with_the_reason(demo_agent, bun_binary, llm, market):
    env = agent_env(llm, market, AGENT_QUERY=QUESTION)
    del env["MARKET_DATA_URL"]
    run = subprocess.run([str(bun_binary), "run", "src/query.ts"], cwd=demo_agent, capture_output=True, text=True,
                         env=env, timeout=120)
    assert (run.returncode, run.stdout) == (1, "")
    assert "MARKET_DATA_URL is not set" in run.stderr


@contextmanager
def resident(demo_agent, bun_binary, env):
    port = processes.free_port()
    process = subprocess.Popen([str(bun_binary), "run", "src/serve.ts"], cwd=demo_agent,
                               env={**env, "AGENT_SERVER_PORT": str(port)}, stderr=subprocess.PIPE, text=True)
    try:
        # It says where it listens once it does: no polling.
        assert "resident server on 127.0.0.1:" in process.stderr.readline()
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def ask(url: str, session: str | None, query: str, task: str = "t") -> list[dict]:
    request = urllib.request.Request(f"{url}/query", method="POST",
                                     data=json.dumps({"task": task, "session": session, "query": query}).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"] == "application/x-ndjson"
        return [json.loads(line) for line in response.read().decode().splitlines()]


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
        return json.load(response)


def test_resident_session_recalls_the_previous_question_in_the_same_process(demo_agent, bun_binary, llm, market):
    with resident(demo_agent, bun_binary, agent_env(llm, market)) as (url, pid):
        assert health(url) == {"pid": pid, "answered": 0}
        first = ask(url, "s1", QUESTION, task="t1")
        assert first[-1] == {"event": "answer", "text": ANSWER}
        assert {"event": "progress", "text": 'tool get_price {"ticker":"ACME"}'} in first[:-1]
        assert all(line["event"] == "progress" for line in first[:-1])

        second = ask(url, "s1", "What did I ask before?", task="t2")
        assert second[-1] == {"event": "answer", "text": f"You asked: {QUESTION}"}
        # Another session, and a query without one, know nothing of s1.
        assert ask(url, "s2", "What did I ask before?")[-1]["text"] == "You asked: "
        assert ask(url, None, "What did I ask before?")[-1]["text"] == "You asked: "
        assert health(url) == {"pid": pid, "answered": 4}


def test_resident_reports_a_failed_query_as_an_error_event(demo_agent, bun_binary, llm, market):
    env = agent_env(llm, market)
    del env["MARKET_DATA_URL"]
    with resident(demo_agent, bun_binary, env) as (url, pid):
        lines = ask(url, "s1", QUESTION)
        assert lines[-1] == {"event": "error", "message": "MARKET_DATA_URL is not set"}
        assert health(url) == {"pid": pid, "answered": 0}
