"""Request/response helpers: bounded body reads, JSON answers, the streamed response that owns
the request's resources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ollama_openai_bridge import codings
from ollama_openai_bridge.errors import PayloadTooLarge
from ollama_openai_bridge.owner import Owner

NDJSON = "application/x-ndjson"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` -- checked against
    Content-Length first and again while reading, so chunked bodies are bounded too -- and
    decoded if it came with a ``Content-Encoding`` (codings.py: zstd, gzip, deflate; 413 if it
    decodes to more than ``limit``, 400 if it does not decode, 415 for another coding)."""
    coding: bytes | None = None
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise PayloadTooLarge(f"request body too large: the limit is {limit} bytes")
        elif name == b"content-encoding":
            coding = value
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
    watch = request.scope.get(WATCH_KEY)
    if watch is not None:
        watch.arm()
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if coding is not None:
        body = codings.decode(body, coding.decode("latin-1"), limit)
    return body


_JSON_TYPE = (b"content-type", JSON_CONTENT_TYPE.encode())


class JSONBytes(Response):
    """A JSON body already encoded, with its two headers built directly (Response's generic
    header assembly is measurable per request); more may be appended to ``raw_headers``."""

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = [_JSON_TYPE, (b"content-length", str(len(body)).encode())]


def json_response(
    obj: Any, status: int = 200, redact: Callable[[bytes], bytes] | None = None
) -> Response:
    """``obj`` as a JSON response; ``redact`` (``Redactor.bytes``) for what a backend wrote."""
    body = orjson.dumps(obj)
    return JSONBytes(body if redact is None else redact(body), status)


WATCH_KEY = "proxy.watch"
# Set (True) in a request's scope by a server that reports its client's departure to the
# request's DisconnectWatch itself (transport.GuardedProtocol, the command's protocol): then
# nothing waits for ``http.disconnect``, no task or timer per request.
REPORTS_KEY = "proxy.reports_disconnect"
# Set (True) in the scope of each request under way when the server starts shutting down
# (transport.GuardedProtocol.shutdown): a cancellation after it is the server's, at the end of
# SHUTDOWN_GRACE_PERIOD, and the request ends with an error in its dialect, not a cut.
STOPPING_KEY = "proxy.stopping"


WATCH_AFTER = 0.5  # seconds a request runs before its client is watched for (see below)


class DisconnectWatch:
    """Cancels the request's task soon after its client goes away, from the moment the request
    body has been read until :meth:`stop` -- so a client that leaves while its answer is being
    prepared (queued for a slot, waiting for the backend's first byte or whole answer) gives
    back its slot and closes the backend call, not only when the backend answers.

    Under the command's protocol (``reported``: the scope's :data:`REPORTS_KEY`), the server
    calls :meth:`lost` when the connection goes: nothing per request but this object. Under
    another server, once the body has been read (:func:`read_body` calls :meth:`arm`), a
    watcher task waits for ``http.disconnect`` (uvicorn's ``send`` does not raise once the
    client is gone, so the disconnect has to be watched for). It starts :data:`WATCH_AFTER` s
    later: a task per request would cost the many answers that take less than that more than a
    departed client costs in that half second; streams (StreamBody) start it at once. ``gone``
    tells a caller that a CancelledError was this watch's doing."""

    __slots__ = ("_armed", "_receive", "_reported", "_task", "_timer", "_watcher", "gone")

    def __init__(
        self, receive: Receive, task: asyncio.Task[Any], *, reported: bool = False
    ) -> None:
        self._receive = receive
        self._task = task
        self._reported = reported
        self._armed = False  # reported: lost() cancels the request
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Future[None] | None = None
        self.gone = False

    def arm(self) -> None:
        """The body has been read: watch from :data:`WATCH_AFTER` s on (read_body calls this),
        or at once when the server reports the departure."""
        if self._reported:
            self._armed = True
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER, self.start)

    def start(self) -> None:
        """Watch from now on (idempotent)."""
        if self._reported:
            self._armed = True
        elif self._watcher is None and not self._task.done():
            self._watcher = asyncio.ensure_future(_disconnected(self._receive))
            self._watcher.add_done_callback(self._fired)

    def lost(self) -> None:
        """The server's report: the client's connection is gone, its answer unfinished
        (transport.GuardedProtocol.connection_lost). Before :meth:`arm` the body read sees the
        departure itself (ClientDisconnect); after :meth:`stop`, nothing is cancelled."""
        if self._armed and not self._task.done():
            self.gone = True
            self._task.cancel()

    def _fired(self, watcher: asyncio.Future[None]) -> None:
        if self._watcher is watcher and not watcher.cancelled():
            self.gone = True
            self._task.cancel()

    def stop(self) -> None:
        """The request is over: stop watching (nothing is cancelled after this)."""
        self._armed = False
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()


class StreamBody(StreamingResponse):
    """A streamed response that owns the request's resources: the owner given to :meth:`own`
    (slot, upstream connection, gauges) is closed exactly once however the response ends --
    finished, failed, cancelled, or the client gone -- even if the body was never iterated.

    A client that goes away cancels the stream at once (the backend call is closed with it),
    through the request's :class:`DisconnectWatch` (one is started here if the request has
    none). Starlette's own StreamingResponse does the same with an anyio task group around two
    tasks, which cost a measurable share of the per-stream CPU.

    A stream the server cancels as it shuts down (SHUTDOWN_GRACE_PERIOD over: uvicorn cancels
    the requests still running) ends with ``cut()``, the error in the stream's dialect
    (streams.py: an Ollama ``{"error"}`` line, an SSE error event), logged once there; without
    ``cut`` the cancellation goes on, and the connection is cut."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        first: bytes = b"",
        media_type: str = NDJSON,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        cut: Callable[[], bytes] | None = None,
    ) -> None:
        super().__init__(content, status_code=status_code, headers=headers, media_type=media_type)
        self._first = first  # sent before ``content``, then dropped
        self._owner = Owner()
        self._cut = cut

    def own(self, owner: Owner) -> None:
        """Take over ``owner`` (call it last, once the response is built: nothing may fail
        between ``owner.pop_all()`` and this)."""
        self._owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        watch: DisconnectWatch | None = scope.get(WATCH_KEY)
        own = watch is None
        if watch is None:  # a route Starlette serves: the server finds the watch in the scope
            watch = scope[WATCH_KEY] = DisconnectWatch(receive, task, reported=REPORTS_KEY in scope)
        watch.start()
        try:
            # Starlette's stream_response, inlined: one coroutine frame less held per open
            # stream, one call less per chunk; the chunks are bytes (no str to encode).
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            if self._first:
                await send({"type": "http.response.body", "body": self._first, "more_body": True})
                self._first = b""  # not held for the rest of the stream
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if watch.gone:
                task.uncancel()  # our own cancellation: the client left, the request is over
            elif scope.get(STOPPING_KEY) and self._cut is not None:
                # The server's, as it stops: the client learns why in its own dialect. The
                # response began before the first await (uvicorn's send of the head does not
                # suspend), so this is the body's last piece.
                task.uncancel()
                await send({"type": "http.response.body", "body": self._cut(), "more_body": False})
            else:
                raise
        finally:
            if own:
                watch.stop()
            await self._owner.aclose()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
