"""The LLM stand-in's script (pure): which rule answers, tool call before answer, the templates."""

from __future__ import annotations

import json

import pytest

from remote_agents.cli import main
from remote_agents_local.llm_standin.script import Answer, Conversation, Script, ToolCall

SCRIPT = Script.parse({
    "default": "no idea",
    "rules": [{"match": "Price of", "tool": {"name": "get_price", "arguments": {"ticker": "ACME"}},
               "answer": "{tool[ticker]} is {tool[close]} ({user})"},
              {"match": "recall", "answer": "before: {previous_user}"},
              {"match": "raw", "tool": {"name": "fetch"}}],
})


def test_a_tool_rule_calls_the_tool_until_its_result_is_in_then_answers_from_it():
    asked = ["what is the PRICE OF acme"]
    assert SCRIPT.reply(Conversation(asked, [])) == ToolCall("get_price", json.dumps({"ticker": "ACME"}))
    assert SCRIPT.reply(Conversation(asked, ['{"ticker": "ACME", "close": 7}'])) == \
        Answer("ACME is 7 (what is the PRICE OF acme)")


def test_the_latest_user_message_picks_the_rule_and_history_fills_previous_user():
    assert SCRIPT.reply(Conversation(["price of acme", "please recall"], [])) == Answer("before: price of acme")
    assert SCRIPT.reply(Conversation(["recall"], [])) == Answer("before: ")
    assert SCRIPT.reply(Conversation(["hello"], [])) == Answer("no idea")
    assert SCRIPT.reply(Conversation([], [])) == Answer("no idea")


def test_an_answer_defaults_to_the_raw_tool_result():
    assert SCRIPT.reply(Conversation(["raw"], [])) == ToolCall("fetch", "{}")
    assert SCRIPT.reply(Conversation(["raw"], ["plain text"])) == Answer("plain text")


def test_the_cli_hands_llm_standin_its_own_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["llm-standin", "--help"])
    assert done.value.code == 0
    assert "--script" in capsys.readouterr().out
