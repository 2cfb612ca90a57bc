"""Request/response helpers shared by the routes: bounded body reads, JSON and NDJSON answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ollama_openai_proxy.errors import (
    JSON_CONTENT_TYPE,
    PayloadTooLarge,
    ProxyError,
    UpstreamTimeout,
)
from ollama_openai_proxy.sse import SSEEvent, SSEParser
from ollama_openai_proxy.translate.stream import StreamTranslator
from ollama_openai_proxy.translate.upstream_errors import stream_error
from ollama_openai_proxy.upstream import stream_exception

NDJSON = "application/x-ndjson"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` -- checked against
    Content-Length first and again while reading, so chunked bodies are bounded too."""
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise PayloadTooLarge(f"request body too large: the limit is {limit} bytes")
            break
    # The ASGI receive loop itself: Request.stream() adds an async generator per request.
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body too large: the limit is {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_JSON_TYPE = (b"content-type", JSON_CONTENT_TYPE.encode())


class JSONBytes(Response):
    """A JSON body already encoded, with its two headers built directly (Response's generic
    header assembly is measurable per request)."""

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = [_JSON_TYPE, (b"content-length", str(len(body)).encode())]


def json_response(obj: Any, status: int = 200) -> Response:
    return JSONBytes(orjson.dumps(obj), status)


async def _ndjson(
    resp: aiohttp.ClientResponse, tr: StreamTranslator, host: str, deadline: float
) -> AsyncGenerator[bytes]:
    """Upstream SSE -> NDJSON chunks. Raises a ProxyError if the upstream fails before any line
    was produced (the caller still can send a real status); afterwards a failure becomes one
    ``{"error"}`` line after the lines already produced, and the stream ends."""
    sent = False
    clean = False
    out: list[bytes] = []
    try:
        try:
            if resp.content_type == "application/json":
                # A backend that ignores stream:true answers one JSON completion.
                out.append(tr.feed_completion(orjson.loads(await resp.read())))
            else:
                parser = SSEParser()
                async for chunk in resp.content.iter_any():
                    if deadline and time.monotonic() > deadline:
                        raise UpstreamTimeout("stream ended: it lasted longer than STREAM_TIMEOUT")
                    tr.stamp()
                    for event in parser.feed(chunk):
                        line = _event(tr, event)
                        if line:
                            out.append(line)
                            if not sent:
                                # The first line goes at once: it decides the status (time to
                                # first byte), whatever else this read carried.
                                sent = True
                                yield line
                                out.clear()
                    if out:
                        yield out[0] if len(out) == 1 else b"".join(out)
                        out.clear()
                out.extend(_event(tr, event) for event in parser.close())
            clean = True
        except (ProxyError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            err = exc if isinstance(exc, ProxyError) else stream_exception(exc, host)
            pending = b"".join(out)
            if not sent and not pending:
                raise err from None
            yield pending + tr.error_line(err.message)
            return
        yield b"".join(out) + tr.finish()
    finally:
        if clean:
            resp.release()
        else:
            resp.close()


def _event(tr: StreamTranslator, event: SSEEvent) -> bytes:
    if tr.done:
        return b""  # drain what follows [DONE] so the connection can be reused
    if event.event == "error":
        raise stream_error(_loads_or_text(event.data), client_model=None, endpoint="stream")
    return tr.feed(event.data)


def _loads_or_text(data: str) -> Any:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    return obj.get("error", obj) if isinstance(obj, dict) else obj


class ClosingStream(StreamingResponse):
    """Runs ``cleanup`` however the response ends -- finished, failed, or the client gone --
    even if the body was never iterated, so slots and upstream connections are never leaked.

    A client that goes away cancels the stream at once (the backend call is closed with it):
    one watcher task waits for ``http.disconnect`` and cancels the streaming task. Starlette's
    own StreamingResponse does the same with an anyio task group around two tasks, which
    cost a measurable share of the per-stream CPU (uvicorn's ``send`` does not raise once the
    client is gone, so the disconnect has to be watched for)."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        cleanup: Callable[[], Awaitable[None]],
        *,
        media_type: str = NDJSON,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content, status_code=status_code, headers=headers, media_type=media_type)
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        streaming = True
        gone = False

        def on_disconnect(watcher: asyncio.Future[None]) -> None:
            nonlocal gone
            if streaming and not watcher.cancelled():
                gone = True
                task.cancel()

        watcher = asyncio.ensure_future(_disconnected(receive))
        watcher.add_done_callback(on_disconnect)
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()  # our own cancellation: the client left, the request is over
        finally:
            streaming = False
            watcher.cancel()
            await self._cleanup()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def ndjson_response(
    resp: aiohttp.ClientResponse,
    tr: StreamTranslator,
    host: str,
    on_end: Callable[[], None],
    *,
    deadline: float = 0.0,
) -> Response:
    """Wait for the first translated line before committing to 200 (contract §3.5): an upstream
    failure before it still gets its real status and an Ollama error body. ``on_end`` runs once
    when the stream is over, whatever the outcome (not if this raises)."""
    gen = _ndjson(resp, tr, host, deadline)
    try:
        first = await anext(gen)
    except BaseException:
        await gen.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in gen:
            yield chunk

    async def cleanup() -> None:
        try:
            await gen.aclose()
        finally:
            on_end()

    return ClosingStream(body(), cleanup)
