"""The LLM stand-in through the real `openai` SDK: both APIs, streamed and not, a tool-call round trip,
usage, the default reply, and the record of what it was asked."""

from __future__ import annotations

import json

import pytest
from openai import OpenAI

GET_PRICE = {"name": "get_price", "description": "A stock's latest close.",
             "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}, "required": ["ticker"]}}
PRICE = {"ticker": "ACME", "close": 99.5, "currency": "USD", "date": "2026-01-02"}
ANSWER = "ACME closed at 99.5 USD on 2026-01-02."
QUESTION = "What is the price of ACME today?"


@pytest.fixture
def client(llm) -> OpenAI:
    llm.forget()
    return OpenAI(base_url=llm.base_url, api_key="sk-standin", max_retries=0)


def test_responses_tool_call_round_trip_with_usage(client, llm):
    tools = [{"type": "function", **GET_PRICE}]
    first = client.responses.create(model="gpt-test", input=QUESTION, tools=tools)
    [call] = first.output
    assert (call.type, call.name, json.loads(call.arguments)) == ("function_call", "get_price", {"ticker": "ACME"})
    assert first.usage.input_tokens == len(QUESTION.split()) and first.usage.total_tokens > first.usage.input_tokens

    second = client.responses.create(model="gpt-test", tools=tools, input=[
        {"role": "user", "content": QUESTION}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(PRICE)}])
    assert second.output_text == ANSWER
    assert second.usage.output_tokens == len(ANSWER.split())
    assert [r["reply"] for r in llm.requests()] == [
        {"toolCall": "get_price", "arguments": json.dumps({"ticker": "ACME"})}, {"answer": ANSWER}]


def test_responses_streamed_text_and_tool_call(client):
    tools = [{"type": "function", **GET_PRICE}]
    with client.responses.stream(model="gpt-test", input=QUESTION, tools=tools) as stream:
        kinds = [event.type for event in stream]
        call = stream.get_final_response().output[0]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    assert json.loads(call.arguments) == {"ticker": "ACME"}

    deltas = []
    with client.responses.stream(model="gpt-test", tools=tools, input=[
            {"role": "user", "content": QUESTION}, call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(PRICE)}]) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) > 1 and "".join(deltas) == final.output_text == ANSWER
    assert final.usage.output_tokens == len(ANSWER.split())


def test_chat_completions_tool_call_round_trip(client):
    tools = [{"type": "function", "function": GET_PRICE}]
    messages = [{"role": "user", "content": QUESTION}]
    first = client.chat.completions.create(model="gpt-test", messages=messages, tools=tools)
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_price", {"ticker": "ACME"})

    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps(PRICE)}]
    second = client.chat.completions.create(model="gpt-test", messages=messages, tools=tools)
    assert (second.choices[0].message.content, second.choices[0].finish_reason) == (ANSWER, "stop")
    assert second.usage.completion_tokens == len(ANSWER.split())
    assert second.usage.total_tokens == second.usage.prompt_tokens + second.usage.completion_tokens


def test_chat_completions_streamed_with_usage(client):
    tools = [{"type": "function", "function": GET_PRICE}]
    chunks = list(client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": QUESTION}],
                                                 tools=tools, stream=True, stream_options={"include_usage": True}))
    calls = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == "get_price"
    assert json.loads("".join(call.function.arguments for call in calls)) == {"ticker": "ACME"}
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == len(QUESTION.split())

    with client.chat.completions.stream(model="gpt-test", messages=[
            {"role": "user", "content": "What did I ask?"}]) as stream:
        text = "".join(event.delta for event in stream if event.type == "content.delta")
    assert text == "You asked: "  # the previous user message: there is none


def test_default_reply_and_history(client):
    other = client.responses.create(model="gpt-test", input="Tell me a joke")
    assert other.output_text.startswith("I can look up stock prices")
    recalled = client.responses.create(model="gpt-test", input=[
        {"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "What did I ask before?"}])
    assert recalled.output_text == f"You asked: {QUESTION}"
