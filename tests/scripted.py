"""Tiny HTTP servers over loopback, scripted per test: each connection runs a handler that reads
requests and writes raw bytes, so a test can produce what a real backend does at its worst (a
body cut short, an idle connection closed as a request arrives, a head of 100 KiB, a stall).
Used by the conformance tests of the backend clients (tests/integration/test_http1_*.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import uvloop

from ollama_openai_bridge import http1
from ollama_openai_bridge.config import Settings
from ollama_openai_bridge.topology import UpstreamSpec
from ollama_openai_bridge.upstream import Upstream
from tests.servers import settings_for

CLIENTS = ("http1", "aiohttp")
JSON_BODY = b'{"id": "chatcmpl-1", "choices": []}'


@dataclass
class Seen:
    """What the server saw: connections opened and closed, requests (their heads), per
    connection the index of each request."""

    connections: int = 0
    closed: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    by_connection: list[int] = field(default_factory=list)  # the connection of each request
    written: int = 0  # bytes a handler reported having written
    events: dict[str, asyncio.Event] = field(default_factory=dict)

    def event(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())


class Peer:
    """One accepted connection, as a handler sees it."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen, index: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.seen = seen
        self.index = index  # 0 for the first connection the server accepted
        self.served = 0  # requests read on this connection

    async def request(self) -> tuple[bytes, bytes] | None:
        """The next request's head and body, or None when the client closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        self.seen.requests.append(head)
        self.seen.by_connection.append(self.index)
        self.served += 1
        return head, body

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0), not a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Peer], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(handler: Handler, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[Any]:
    """Run ``handler`` for each connection; yields ``(base URL with /v1, Seen)``."""
    seen = Seen()
    handlers: set[asyncio.Task[Any]] = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        index = seen.connections
        seen.connections += 1
        seen.open_now += 1
        seen.most_open = max(seen.most_open, seen.open_now)
        try:
            await handler(Peer(reader, writer, seen, index))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # the test is over (serve's exit)
        finally:
            handlers.discard(task)
            seen.open_now -= 1
            seen.closed += 1
            seen.event("closed").set()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if tls is not None else "http"
    try:
        yield f"{scheme}://{'localhost' if tls else '127.0.0.1'}:{port}/v1", seen
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def answers(*raw: bytes) -> Handler:
    """Answer each request, on whatever connection, with the next of ``raw`` (kept alive while
    there are more)."""
    queue = list(raw)

    async def handler(peer: Peer) -> None:
        while queue and await peer.request() is not None:
            await peer.send(queue.pop(0))

    return handler


def ok(body: bytes = JSON_BODY, *extra: bytes, content_type: bytes = b"application/json") -> bytes:
    """A 200 with ``body`` and its Content-Length, plus ``extra`` header lines."""
    fields = b"".join(line + b"\r\n" for line in extra)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n"
        b"Content-Length: %d\r\n" % len(body) + fields + b"\r\n" + body
    )


def chunked(*pieces: bytes, trailer: bytes = b"") -> bytes:
    out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    for piece in pieces:
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n" + trailer + b"\r\n"


def gzipped(body: bytes) -> bytes:
    return gzip.compress(body)


def upstream(base_url: str, client: str, **overrides: Any) -> Upstream:
    """An Upstream for ``base_url`` with the given client and the test settings."""
    settings: Settings = settings_for(base_url, upstream_http_client=client, **overrides)
    return Upstream(settings, UpstreamSpec("default", base_url))


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run on uvloop, as the proxy does."""
    return uvloop.run(coro)


def new_client(**overrides: Any) -> http1.Client:
    """The proxy's own HTTP/1.1 client alone (no Upstream around it), small limits."""
    options: dict[str, Any] = {
        "headers": {"User-Agent": "test"},
        "limit": 10,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
    }
    options.update(overrides)
    return http1.Client(**options)


async def get(c: http1.Client, url: str) -> bytes:
    """``GET url/models`` through ``c``: the whole body, the connection given back."""
    resp = await c.request("GET", url + "/models", timeout=5.0)
    try:
        return await resp.read()
    finally:
        resp.release()
