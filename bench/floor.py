"""The floor: the least a Python proxy on this stack can cost. A bare ASGI app under uvicorn
(uvloop, httptools) that makes the same backend call as the proxy with the least translation
that still does the job and no validation, middleware or metrics, through aiohttp or through
the proxy's own HTTP/1.1 client (ollama_openai_bridge.http1): issue #18's "minimal proxy" (parse
the Ollama request, forward it over a pooled keep-alive connection, translate the answer;
streams SSE -> NDJSON, first line sent at once). Compare the proxy with it, not only with the
direct path, to see what the proxy's own work costs.

- ``POST /api/chat`` with ``"stream": false``: reads the body, parses it, calls the upstream's
  chat completions, answers an Ollama-shaped JSON;
- ``POST /api/chat`` otherwise: the upstream's SSE stream as Ollama's NDJSON lines (each event's
  JSON decoded, its ``delta.content`` written in a line with the model and a ``created_at`` per
  network read; ``[DONE]`` the ``done: true`` line), the first line sent alone at once, then the
  lines of each network read together;
- ``POST /v1/chat/completions``: the body forwarded, the answer's bytes returned.

Usage: python bench/floor.py UPSTREAM_CHAT_URL PORT [aiohttp|http1]   (default aiohttp)
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson
import uvicorn

from ollama_openai_bridge import http1

UPSTREAM = sys.argv[1]
CLIENT = sys.argv[3] if len(sys.argv) > 3 else "aiohttp"
HEADERS = {"Content-Type": "application/json"}
state: dict[str, Any] = {}


async def call(body: bytes) -> Any:
    """The upstream's response (its head read), through the chosen client."""
    if CLIENT == "http1":
        return await state["client"].request("POST", UPSTREAM, data=body)
    return await state["client"].post(UPSTREAM, data=body, headers=HEADERS)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if CLIENT == "http1":
                    state["client"] = http1.Client(
                        headers=HEADERS, limit=10000, connect_timeout=10.0, read_timeout=300.0
                    )
                else:
                    import aiohttp  # noqa: PLC0415 -- only when chosen: its memory counts

                    state["client"] = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=10000)
                    )
                await send({"type": "lifespan.startup.complete"})
            else:
                await state["client"].close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/v1/chat/completions":
        resp = await call(body)
        out = await resp.read()
        resp.release()
        await respond(send, resp.status, out)
        return
    req = orjson.loads(body)
    if req.get("stream") is False:
        payload = {"model": req["model"], "messages": req["messages"], "stream": False}
        resp = await call(orjson.dumps(payload))
        data = orjson.loads(await resp.read())
        resp.release()
        out = orjson.dumps(
            {
                "model": req["model"],
                "message": {
                    "role": "assistant",
                    "content": data["choices"][0]["message"]["content"],
                },
                "done": True,
            }
        )
        await respond(send, 200, out)
        return
    payload = {"model": req["model"], "messages": req["messages"], "stream": True}
    resp = await call(orjson.dumps(payload))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/x-ndjson")],
        }
    )
    content = resp.content
    model = req["model"]
    prefix = b'{"model":' + orjson.dumps(model) + b',"created_at":"'
    rest = b""
    first = True
    while chunk := await content.readany():
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()
        *events, rest = (rest + chunk).split(b"\n\n")
        lines = []
        for event in events:
            data = event[6:] if event.startswith(b"data: ") else b""
            if not data:
                continue
            if data == b"[DONE]":
                lines.append(
                    prefix + ts + b'","message":{"role":"assistant","content":""},'
                    b'"done":true,"done_reason":"stop"}\n'
                )
                continue
            choices = orjson.loads(data).get("choices")
            text = choices[0]["delta"].get("content") if choices else None
            if text:
                out = (
                    prefix
                    + ts
                    + b'","message":{"role":"assistant","content":'
                    + orjson.dumps(text)
                    + b'},"done":false}\n'
                )
                if first:  # the first line at once: it is the time to first token
                    first = False
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                else:
                    lines.append(out)
        if lines:
            await send({"type": "http.response.body", "body": b"".join(lines), "more_body": True})
    resp.release()
    await send({"type": "http.response.body", "body": b""})


async def respond(send: Any, status: int, out: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(out)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": out})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
