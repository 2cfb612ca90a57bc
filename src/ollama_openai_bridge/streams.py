"""Streamed answers to the client: an upstream :class:`EventStream` in, response bytes out.

- :func:`ndjson_stream`: OpenAI SSE -> Ollama NDJSON through a
  :class:`~ollama_openai_bridge.translate.stream.StreamTranslator` -- or, with ``dialect`` and
  ``media_type``, through any :class:`Translator` (the same loop serves every dialect rendered
  from a chat-completion stream). The response's status waits
  for the first translated line (contract §3.5): a failure before it still gets its real status
  and an error body. After it, any failure -- an error event, a dropped connection, a malformed
  event, a stream that ends without ``finish_reason`` or ``[DONE]``, even a bug -- becomes one
  error line rendered by :class:`~ollama_openai_bridge.render.Renderer`, never a cut connection.
- :func:`sse_relay`: the backend's SSE bytes as they arrive (the ``/v1`` routes); a failure
  becomes one SSE error event.

Both return a :class:`~ollama_openai_bridge.http.StreamBody` that owns the request's resources.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from functools import partial
from typing import Any, Protocol

import orjson

from ollama_openai_bridge.access import AccessRecord
from ollama_openai_bridge.errors import (
    ProxyError,
    ShuttingDown,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from ollama_openai_bridge.exchange import SSE, EventStream
from ollama_openai_bridge.http import NDJSON, StreamBody
from ollama_openai_bridge.owner import Owner
from ollama_openai_bridge.relay import SSERelay
from ollama_openai_bridge.render import Dialect, Renderer, Snapshot
from ollama_openai_bridge.sse import SSEEvent
from ollama_openai_bridge.upstream_errors import stream_error

UNFINISHED = "upstream stream ended early: no finish_reason and no [DONE]"


class Translator(Protocol):
    """A chat-completion stream translator: fed each SSE event's ``data``, it returns the bytes
    to send in its dialect (translate/stream.py's StreamTranslator is the Ollama one)."""

    @property
    def done(self) -> bool:
        """The backend said ``[DONE]``."""

    @property
    def finished(self) -> bool:
        """The backend ended its answer properly (``[DONE]`` or a ``finish_reason``)."""

    def stamp(self) -> None:
        """Take the time for the lines of one network read."""

    def feed(self, data: str) -> bytes:
        """One event's data -> bytes to send; raises ProxyError for an error or bad event."""

    def feed_completion(self, resp: Any) -> bytes:
        """A backend that ignored ``stream: true``: its one JSON answer -> bytes to send."""

    def finish(self) -> bytes:
        """The closing bytes, after the last event."""


async def ndjson_stream(
    events: EventStream,
    tr: Translator,
    owner: Owner,
    renderer: Renderer,
    rec: AccessRecord,
    *,
    first_line_timeout: float,
    first_byte_timeout: float,
    on_first: Callable[[], None],
    dialect: Dialect = Dialect.OLLAMA,
    media_type: str = NDJSON,
    snapshot: Snapshot | None = None,
) -> StreamBody:
    """The NDJSON response (or ``dialect``'s, as ``media_type``), once its first line is ready:
    within ``first_line_timeout`` s, what is left of the request's ``first_byte_timeout``.

    Raises the :class:`ProxyError` of a failure before the first line (``owner`` is then left
    to the caller). On success ``owner`` moves into the response, which closes it at the end;
    ``on_first`` runs when the first line is ready (time to first token); a failure after it is
    the stream's last piece, rendered in ``dialect`` (with ``snapshot``, a Responses stream's
    state, for its last events)."""
    gen = _ndjson(events, tr, renderer, rec, dialect, snapshot)
    owner.push_async_callback(gen.aclose)
    try:
        async with asyncio.timeout(first_line_timeout):
            first = await anext(gen)
    except TimeoutError:
        raise UpstreamTimeout(
            f"upstream sent nothing within {first_byte_timeout:g} s (FIRST_BYTE_TIMEOUT)"
        ) from None
    on_first()
    response = StreamBody(
        gen,
        first=first,
        media_type=media_type,
        cut=partial(_cut, renderer, dialect, rec, snapshot),
    )
    response.own(owner.pop_all())
    return response


async def _ndjson(
    events: EventStream,
    tr: Translator,
    renderer: Renderer,
    rec: AccessRecord,
    dialect: Dialect,
    snapshot: Snapshot | None = None,
) -> AsyncGenerator[bytes]:
    """Raises a :class:`ProxyError` while no line was produced; afterwards a failure is the
    last line. Lines completed by one network read are sent together, except the very first,
    which goes at once: it decides the status (time to first byte)."""
    sent = False
    out: list[bytes] = []
    # What a backend generates may quote the key it was sent, as its errors may: redacted per
    # network read's lines (a key cut across two of its tokens is not caught; /v1's relay,
    # which passes bytes through, redacts across reads).
    redact = renderer.redact.bytes
    try:
        async for read in events:
            tr.stamp()
            for event in read:  # parsed: a list of events, never bytes
                data = _payload(tr, event)  # type: ignore[arg-type]
                if data:
                    out.append(data)
                    if not sent:
                        sent = True
                        yield redact(data)
                        out.clear()
            if out:
                yield redact(out[0] if len(out) == 1 else b"".join(out))
                out.clear()
        final = _final(tr)
    except Exception as exc:
        err = exc if isinstance(exc, ProxyError) else renderer.unexpected(exc)
        pending = redact(b"".join(out))
        if not sent and not pending:
            raise err from None
        yield pending + renderer.stream_error(err, dialect, rec, snapshot)
        return
    yield redact(b"".join(out) + final)


def _cut(
    renderer: Renderer, dialect: Dialect, rec: AccessRecord, snapshot: Snapshot | None
) -> bytes:
    """A stream's last piece when the server stops (StreamBody's ``cut``): a partial of this
    rather than a closure, whose cells a stream would hold to its end (issue #18)."""
    return renderer.stream_error(ShuttingDown(), dialect, rec, snapshot)


def _final(tr: Translator) -> bytes:
    if not tr.finished:
        raise UpstreamProtocolError(UNFINISHED)
    return tr.finish()


def _payload(tr: Translator, event: SSEEvent) -> bytes:
    if tr.done:
        return b""  # drain what follows [DONE] so the connection can be reused
    if event.event == "error":
        raise stream_error(_error_payload(event.data), client_model=None, endpoint="stream")
    return tr.feed(event.data)


def _error_payload(data: str) -> Any:
    """An ``event: error`` payload: its ``error`` object if it is JSON, else the text."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    return obj.get("error", obj) if isinstance(obj, dict) else obj


def sse_relay(
    events: EventStream,
    owner: Owner,
    renderer: Renderer,
    rec: AccessRecord,
    headers: Mapping[str, str],
    tap: Callable[[bytes], bytes] | None = None,
) -> StreamBody:
    """The backend's stream relayed event by event (:class:`~ollama_openai_bridge.relay.SSERelay`;
    its first read is already in ``events``). The response is built first, then ``owner`` moves
    into it: nothing can fail between the two. ``tap``: sees the whole events before they are
    sent, and returns what to send (relay.UsageTap, with token budgets)."""
    response = StreamBody(
        _relay(events, SSERelay(renderer.redact), renderer, rec, tap),
        media_type=SSE,
        status_code=events.status,
        headers=dict(headers),
        cut=partial(_cut, renderer, Dialect.OPENAI, rec, None),
    )
    response.own(owner.pop_all())
    return response


async def _relay(
    events: EventStream,
    relay: SSERelay,
    renderer: Renderer,
    rec: AccessRecord,
    tap: Callable[[bytes], bytes] | None,
) -> AsyncIterator[bytes]:
    try:
        async for chunk in events:
            out = relay.feed(chunk)  # type: ignore[arg-type]  # relayed: bytes
            if relay.errors:
                _report(relay, renderer, rec)
            if tap is not None and out:
                out = tap(out)
            if out:
                yield out
        out = relay.end()
        if tap is not None and out:
            out = tap(out)
        if out:
            yield out
    except Exception as exc:
        # OpenAI clients understand an SSE error event (openai-python _streaming.py).
        err = exc if isinstance(exc, ProxyError) else renderer.unexpected(exc)
        yield renderer.stream_error(err, Dialect.OPENAI, rec)


def _report(relay: SSERelay, renderer: Renderer, rec: AccessRecord) -> None:
    """The backend's own error events, relayed (redacted) as they are, but logged and counted."""
    for error in relay.errors:
        renderer.failed(
            stream_error(error, client_model=None, endpoint="stream"), rec, stage="stream"
        )
    relay.errors.clear()
