"""OpenAI's wire shapes for the stand-in: requests of /v1/responses and /v1/chat/completions read into
a Conversation, and a reply written back as the JSON body or the SSE events the `openai` SDKs (and
LangChain on top of them) parse."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

from remote_agents_local.llm_standin.script import Answer, Conversation, ToolCall

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_standin{next(_ids):06d}"


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list (input_text, output_text, text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _conversation(items: list[tuple[str, str]]) -> Conversation:
    """`items`: (role, text) in order, role "tool" for a tool's output."""
    users = [text for role, text in items if role == "user"]
    last_user = max((i for i, (role, _) in enumerate(items) if role == "user"), default=-1)
    return Conversation(user_messages=users,
                        tool_outputs_since_user=[text for role, text in items[last_user + 1:] if role == "tool"])


def responses_conversation(body: dict[str, Any]) -> Conversation:
    raw = body.get("input", "")
    if isinstance(raw, str):
        return _conversation([("user", raw)])
    items = []
    for item in raw:
        kind = item.get("type", "message")
        if kind == "function_call_output":
            items.append(("tool", _text(item.get("output", ""))))
        elif kind == "message" or "role" in item:
            items.append((item.get("role", "user"), _text(item.get("content", ""))))
    return _conversation(items)


def chat_conversation(body: dict[str, Any]) -> Conversation:
    return _conversation([(message.get("role", "user"), _text(message.get("content") or ""))
                          for message in body.get("messages", [])])


def _tokens(text: str) -> int:
    """A deterministic token count (words): enough for clients that read usage."""
    return len(text.split())


def usage_counts(conversation: Conversation, reply: ToolCall | Answer) -> tuple[int, int]:
    prompt = " ".join(conversation.user_messages + conversation.tool_outputs_since_user)
    return _tokens(prompt), _tokens(reply.text if isinstance(reply, Answer) else reply.arguments)


# --- /v1/responses -------------------------------------------------------------------------------

def _responses_item(reply: ToolCall | Answer, item_id: str, done: bool) -> dict[str, Any]:
    status = "completed" if done else "in_progress"
    if isinstance(reply, ToolCall):
        return {"type": "function_call", "id": item_id, "call_id": item_id.replace("fc_", "call_", 1),
                "name": reply.name, "arguments": reply.arguments if done else "", "status": status}
    return {"type": "message", "id": item_id, "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}]
            if done else []}


def _response(body: dict[str, Any], response_id: str, created: int, output: list[dict[str, Any]],
              usage: tuple[int, int] | None) -> dict[str, Any]:
    return {
        "id": response_id, "object": "response", "created_at": created, "model": body.get("model", "standin"),
        "status": "completed" if usage else "in_progress", "output": output, "error": None,
        "incomplete_details": None, "instructions": body.get("instructions"), "metadata": {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True), "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []), "temperature": 1.0, "top_p": 1.0, "text": {"format": {"type": "text"}},
        "usage": None if usage is None else {
            "input_tokens": usage[0], "output_tokens": usage[1], "total_tokens": sum(usage),
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
    }


def responses_body(body: dict[str, Any], reply: ToolCall | Answer, usage: tuple[int, int]) -> dict[str, Any]:
    item_id = _id("fc" if isinstance(reply, ToolCall) else "msg")
    return _response(body, _id("resp"), int(time.time()), [_responses_item(reply, item_id, done=True)], usage)


def responses_events(body: dict[str, Any], reply: ToolCall | Answer, usage: tuple[int, int]) -> Iterator[dict]:
    """The event sequence of a streamed response with one output item."""
    response_id, created = _id("resp"), int(time.time())
    item_id = _id("fc" if isinstance(reply, ToolCall) else "msg")
    started = _response(body, response_id, created, [], None)
    yield {"type": "response.created", "response": started}
    yield {"type": "response.in_progress", "response": started}
    yield {"type": "response.output_item.added", "output_index": 0, "item": _responses_item(reply, item_id, False)}
    if isinstance(reply, ToolCall):
        yield {"type": "response.function_call_arguments.delta", "item_id": item_id, "output_index": 0,
               "delta": reply.arguments}
        yield {"type": "response.function_call_arguments.done", "item_id": item_id, "output_index": 0,
               "name": reply.name, "arguments": reply.arguments}
    else:
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        yield {"type": "response.content_part.added", **where, "part": part}
        for chunk in _chunks(reply.text):
            yield {"type": "response.output_text.delta", **where, "delta": chunk, "logprobs": []}
        yield {"type": "response.output_text.done", **where, "text": reply.text, "logprobs": []}
        yield {"type": "response.content_part.done", **where, "part": {**part, "text": reply.text}}
    done_item = _responses_item(reply, item_id, True)
    yield {"type": "response.output_item.done", "output_index": 0, "item": done_item}
    yield {"type": "response.completed", "response": _response(body, response_id, created, [done_item], usage)}


def responses_sse(events: Iterator[dict]) -> Iterator[str]:
    for number, event in enumerate(events):
        yield f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': number})}\n\n"


# --- /v1/chat/completions ------------------------------------------------------------------------

def _chat_usage(usage: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}


def _finish_reason(reply: ToolCall | Answer) -> str:
    return "tool_calls" if isinstance(reply, ToolCall) else "stop"


def chat_body(body: dict[str, Any], reply: ToolCall | Answer, usage: tuple[int, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text if isinstance(reply, Answer) else None}
    if isinstance(reply, ToolCall):
        message["tool_calls"] = [{"id": _id("call"), "type": "function",
                                  "function": {"name": reply.name, "arguments": reply.arguments}}]
    return {"id": _id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "standin"),
            "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(reply), "logprobs": None}],
            "usage": _chat_usage(usage)}


def chat_sse(body: dict[str, Any], reply: ToolCall | Answer, usage: tuple[int, int]) -> Iterator[str]:
    base = {"id": _id("chatcmpl"), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.get("model", "standin")}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

    if isinstance(reply, ToolCall):
        yield chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": _id("call"), "type": "function", "function": {"name": reply.name, "arguments": ""}}]})
        yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": reply.arguments}}]})
    else:
        yield chunk({"role": "assistant", "content": ""})
        for piece in _chunks(reply.text):
            yield chunk({"content": piece})
    yield chunk({}, _finish_reason(reply))
    if (body.get("stream_options") or {}).get("include_usage"):
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': _chat_usage(usage)})}\n\n"
    yield "data: [DONE]\n\n"


def _chunks(text: str, words: int = 4) -> Iterator[str]:
    """Text in a few deltas (whole words with their spaces), so clients really assemble a stream."""
    pieces = text.split(" ")
    for start in range(0, len(pieces), words):
        last = start + words >= len(pieces)
        yield " ".join(pieces[start:start + words]) + ("" if last else " ")
