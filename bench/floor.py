"""The floor: the least a Python proxy on this stack can cost. A bare ASGI app under uvicorn
(uvloop, httptools) that reads the body, parses it, makes the same aiohttp call to the upstream
and answers -- no translation, no middleware, no metrics. Compare the proxy with it, not only
with the direct path, to see what the proxy's own work costs.
Usage: python bench/floor.py UPSTREAM_CHAT_URL PORT
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import orjson
import uvicorn

UPSTREAM = sys.argv[1]
state: dict[str, aiohttp.ClientSession] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                state["session"] = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=10000)
                )
                await send({"type": "lifespan.startup.complete"})
            else:
                await state["session"].close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    req = orjson.loads(body)
    payload = {"model": req["model"], "messages": req["messages"], "stream": False}
    headers = {"Content-Type": "application/json"}
    async with state["session"].post(UPSTREAM, data=orjson.dumps(payload), headers=headers) as resp:
        data = orjson.loads(await resp.read())
    out = orjson.dumps(
        {
            "model": req["model"],
            "message": {"role": "assistant", "content": data["choices"][0]["message"]["content"]},
            "done": True,
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
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
