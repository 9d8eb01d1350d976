"""The stand-in's scripted brain: a conversation (as either API sends it) in, one deterministic reply out.

A script (YAML or JSON) is a list of rules and a default answer:

    default: "I have no scripted answer for that."
    rules:
      - match: "price of"               # case-insensitive substring of the latest user message
        tool:                           # optional: first reply with this tool call ...
          name: get_prices
          arguments: {ticker: ACME}
        answer: "ACME closed at {tool[close]} USD."   # ... then, once its result is in, this answer

The first rule whose `match` is in the latest user message wins. A rule with a `tool` replies with the
call until the conversation holds a tool result after that user message; then (or at once, for a rule
without a tool) it answers. Answers are Python format strings over: `user` (the latest user message),
`previous_user` (the one before it, "" if none: proves a client sent its history), `tool_result` (the
latest tool output, raw) and `tool` (that output parsed as JSON, for `{tool[field]}`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Conversation:
    """What a request says, whichever API it came through."""
    user_messages: list[str]
    tool_outputs_since_user: list[str]  # tool results after the latest user message, in order


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as both APIs carry it


@dataclass(frozen=True)
class Answer:
    text: str


@dataclass(frozen=True)
class Rule:
    match: str
    answer: str
    tool: ToolCall | None = None


@dataclass
class Script:
    rules: list[Rule] = field(default_factory=list)
    default: str = "The LLM stand-in has no scripted reply for that."

    @classmethod
    def load(cls, path: str | Path) -> Script:
        return cls.parse(yaml.safe_load(Path(path).read_text()) or {})

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Script:
        rules = []
        for raw in data.get("rules", []):
            tool = raw.get("tool")
            rules.append(Rule(match=str(raw["match"]), answer=str(raw.get("answer", "{tool_result}")),
                              tool=ToolCall(tool["name"], json.dumps(tool.get("arguments", {})))
                              if tool else None))
        return cls(rules=rules, **({"default": str(data["default"])} if "default" in data else {}))

    def reply(self, conversation: Conversation) -> ToolCall | Answer:
        user = conversation.user_messages[-1] if conversation.user_messages else ""
        rule = next((rule for rule in self.rules if rule.match.lower() in user.lower()), None)
        if rule is None:
            return Answer(self.default)
        if rule.tool and not conversation.tool_outputs_since_user:
            return rule.tool
        return Answer(_fill(rule.answer, conversation))


def _fill(template: str, conversation: Conversation) -> str:
    users = conversation.user_messages
    tool_result = conversation.tool_outputs_since_user[-1] if conversation.tool_outputs_since_user else ""
    try:
        parsed = json.loads(tool_result) if tool_result else {}
    except ValueError:
        parsed = {}
    return template.format_map({"user": users[-1] if users else "",
                                "previous_user": users[-2] if len(users) > 1 else "",
                                "tool_result": tool_result, "tool": parsed})
