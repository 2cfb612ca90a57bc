"""CPU per request of the server layer alone (uvicorn's protocol and its proxy-headers
middleware), on uvloop, without sockets:

  before:   uvicorn's HttpToolsProtocol, X-Forwarded-For believed from 127.0.0.1 (uvicorn's
            default, which the command kept)
  after:    GuardedProtocol (transport.py), forwarding headers ignored (FORWARDED_ALLOW_IPS unset)
  guarded+forwarded: GuardedProtocol with FORWARDED_ALLOW_IPS set
  httptools: uvicorn's HttpToolsProtocol without the middleware (what the guard alone adds)

One connection gets REQUESTS keep-alive requests (a 60-byte JSON POST, head and body in one
read) through a transport that discards what is written; a minimal ASGI app reads the body and
answers 2 bytes. The variants alternate in blocks so that machine drift hits all alike; a figure
is process CPU time per request (the minimum and median over blocks: on a shared machine the
minimum is the steadier).
Usage: python bench/transport.py [REQUESTS]   (default 100000 per variant)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ollama_openai_bridge.transport import Guard, Limits

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi there"}]}'
REQUEST = (
    b"POST /api/chat HTTP/1.1\r\nhost: 127.0.0.1:11434\r\nuser-agent: bench\r\n"
    b"accept: */*\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    % (len(BODY), BODY)
)


class Sink(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 11434)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive())["more_body"]:
        pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def drive(protocol_class: Any, requests: int, forwarded: list[str]) -> float:
    """Process CPU seconds per request for ``requests`` requests on one connection."""
    loop = asyncio.get_running_loop()
    config = Config(
        app,
        http=protocol_class,
        ws="none",
        log_config=None,
        access_log=False,
        proxy_headers=bool(forwarded),
        forwarded_allow_ips=forwarded,
    )
    config.load()
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
    protocol.connection_made(Sink())
    started = time.process_time()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        for task in list(state.tasks):
            await task
    elapsed = time.process_time() - started
    protocol.connection_lost(None)
    return elapsed / requests


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    guard = Guard(Limits())
    local = ["127.0.0.1", "::1"]
    variants: dict[str, tuple[Any, list[str]]] = {
        "before": (HttpToolsProtocol, local),
        "after": (guard, []),
        "guarded+forwarded": (guard, local),
        "httptools": (HttpToolsProtocol, []),
    }
    block = 2000
    results: dict[str, list[float]] = {name: [] for name in variants}
    for protocol_class, forwarded in variants.values():  # warm-up
        await drive(protocol_class, block, forwarded)
    for _ in range(max(1, n // block)):
        for name, (protocol_class, forwarded) in variants.items():
            results[name].append(await drive(protocol_class, block, forwarded))
    print(f"{n // block} blocks of {block} requests per variant; CPU per request:")
    for name, values in results.items():
        print(
            f"  {name:<18} min {min(values) * 1e6:6.2f} us   median "
            f"{statistics.median(values) * 1e6:6.2f} us"
        )


if __name__ == "__main__":
    uvloop.run(main())
