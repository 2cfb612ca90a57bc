"""A tiny HTTP forward proxy on loopback, for the tests of egress through a proxy (HTTP_PROXY,
HTTPS_PROXY, ALL_PROXY): absolute-form requests relayed to their origin (RFC 9112 §3.2.2) and
CONNECT tunnels (RFC 9110 §9.3.6), each request line and its ``Proxy-Authorization`` noted.
Written here rather than taken from PyPI: the test needs to see what reached the proxy, and a
relay of one request per connection is all it takes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Relayed:
    """What the proxy saw: per request, ``(method, target, Proxy-Authorization or "")``."""

    requests: list[tuple[str, str, str]] = field(default_factory=list)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


def _header(head: list[bytes], name: bytes) -> str:
    for line in head[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return ""


@contextlib.asynccontextmanager
async def forward_proxy(*, password: str | None = None) -> AsyncIterator[tuple[str, Relayed]]:
    """Run the proxy; yields ``(its address host:port, Relayed)``. ``password``: every request
    must carry ``Proxy-Authorization`` (Basic, any user) with it, else a 407."""
    seen = Relayed()
    tasks: set[asyncio.Task[None]] = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await _serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            tasks.discard(task)
            await _close(writer)

    async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[:-2]
        method, target, _ = head[0].decode("latin-1").split(" ", 2)
        authorization = _header(head, b"proxy-authorization")
        seen.requests.append((method, target, authorization))
        if password is not None and not _basic_has(authorization, password):
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n'
                b"Connection: close\r\n\r\n"
            )
            await writer.drain()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                await _close(up_writer)
            return
        # absolute-form: the origin gets the origin-form, without the proxy's own fields, and
        # the answer goes back marked Connection: close (one request per connection here)
        url = urlsplit(target)
        length = int(_header(head, b"content-length") or 0)
        body = await reader.readexactly(length) if length else b""
        kept = [
            line
            for line in head[1:]
            if line.split(b":")[0].strip().lower()
            not in (b"proxy-authorization", b"proxy-connection", b"connection")
        ]
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
        try:
            request = [f"{method} {path} HTTP/1.1".encode(), *kept, b"Connection: close"]
            up_writer.write(b"\r\n".join(request) + b"\r\n\r\n" + body)
            await up_writer.drain()
            answer = await _answer(up_reader)
        finally:
            await _close(up_writer)
        status_end = answer.index(b"\r\n") + 2
        writer.write(answer[:status_end] + b"Connection: close\r\n" + answer[status_end:])
        await writer.drain()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """One whole answer: its head, then its Content-Length, a chunked body to its last chunk,
    or the bytes up to the close."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if length := _header(lines, b"content-length"):
        return head + await reader.readexactly(int(length))
    if _header(lines, b"transfer-encoding").lower() == "chunked":
        body = b""
        while not body.endswith(b"0\r\n\r\n"):
            body += await reader.readuntil(b"\r\n")
        return head + body
    return head + await reader.read(-1)


def _basic_has(authorization: str, password: str) -> bool:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        _, _, given = base64.b64decode(token).decode().partition(":")
    except ValueError:
        return False
    return given == password


@contextlib.contextmanager
def in_thread(*, password: str | None = None) -> Iterator[tuple[str, Relayed]]:
    """:func:`forward_proxy` on an event loop of its own in a thread, for a test that is not a
    coroutine (the proxy command in a subprocess)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    running: list[tuple[str, Relayed]] = []

    async def main() -> None:
        async with forward_proxy(password=password) as started:
            running.append(started)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "the forward proxy did not start"
        yield running[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
