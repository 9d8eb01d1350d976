"""The stand-in's HTTP server: the two OpenAI endpoints, and `/_standin/requests` (GET: what it was
asked and how it replied, so a test can count tool calls; DELETE: forget)."""

from __future__ import annotations

import argparse
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from remote_agents_local.llm_standin import wire
from remote_agents_local.llm_standin.script import Answer, Script


def create_app(script: Script) -> Starlette:
    requests: list[dict[str, Any]] = []

    def record(api: str, body: dict[str, Any], conversation, reply) -> None:
        requests.append({"api": api, "model": body.get("model"), "stream": bool(body.get("stream")),
                         "user": conversation.user_messages[-1] if conversation.user_messages else "",
                         "toolOutputs": conversation.tool_outputs_since_user,
                         "reply": {"answer": reply.text} if isinstance(reply, Answer)
                         else {"toolCall": reply.name, "arguments": reply.arguments}})

    async def responses(request: Request) -> Response:
        body = await request.json()
        conversation = wire.responses_conversation(body)
        reply = script.reply(conversation)
        record("responses", body, conversation, reply)
        usage = wire.usage_counts(conversation, reply)
        if body.get("stream"):
            return StreamingResponse(wire.responses_sse(wire.responses_events(body, reply, usage)),
                                     media_type="text/event-stream")
        return JSONResponse(wire.responses_body(body, reply, usage))

    async def chat(request: Request) -> Response:
        body = await request.json()
        conversation = wire.chat_conversation(body)
        reply = script.reply(conversation)
        record("chat", body, conversation, reply)
        usage = wire.usage_counts(conversation, reply)
        if body.get("stream"):
            return StreamingResponse(wire.chat_sse(body, reply, usage), media_type="text/event-stream")
        return JSONResponse(wire.chat_body(body, reply, usage))

    async def recorded(request: Request) -> Response:
        if request.method == "DELETE":
            requests.clear()
        return JSONResponse(requests)

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/_standin/requests", recorded, methods=["GET", "DELETE"]),
        Route("/health", health),
    ])


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="llm-standin", description="a scripted local stand-in for the OpenAI API")
    parser.add_argument("--script", required=True, help="the script file (YAML or JSON): rules and a default")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(Script.load(args.script)), host=args.host, port=args.port, log_level="warning")
    return 0
