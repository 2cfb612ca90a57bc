"""The outermost middleware, driven as a plain ASGI app."""

from __future__ import annotations

import asyncio
from typing import Any

from ollama_openai_bridge.errors import Redactor
from ollama_openai_bridge.middleware import RequestContextMiddleware
from ollama_openai_bridge.render import Renderer


def run(app: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    asyncio.run(RequestContextMiddleware(app, Renderer(Redactor()))(scope, receive, send))
    return sent


def test_a_bug_below_still_answers_json_500() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("bug")

    sent = run(broken)
    assert sent[0]["status"] == 500
    assert (b"content-type", b"application/json; charset=utf-8") in sent[0]["headers"]
    assert any(k == b"x-request-id" for k, _ in sent[0]["headers"])
    assert sent[1]["body"] == b'{"error":"internal proxy error; see the proxy' + b"'" + b's log"}'
