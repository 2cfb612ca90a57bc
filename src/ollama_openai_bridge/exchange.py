"""Executing a plan: the backend call (along its fallback chain), returning either a whole
:class:`Reply` or an :class:`EventStream` read as it arrives.

A :class:`Plan` is plain data built by the handlers with the pure translators: the method, and for
each upstream to try (its :class:`Route`) the path and the encoded body. :func:`execute` knows
nothing of Ollama or OpenAI shapes; it sends, applies the timeouts, decides fallbacks, maps every
foreign failure (through :func:`upstream.map_failure`) and hands the bounded resources it takes
-- the upstream response and the in-flight gauge -- to the caller's ``owner``
(:class:`~ollama_openai_bridge.owner.Owner`), which releases them exactly once, whatever happens.

Timeouts (docs/CONFIGURATION.md): a whole answer must arrive within the upstream's
``REQUEST_TIMEOUT``; a stream's first read within ``FIRST_BYTE_TIMEOUT``, each later read within
``STREAM_IDLE_TIMEOUT`` (the client's read timeout), and the whole stream within
``STREAM_TIMEOUT`` when set. Only before the first byte reached the client may another upstream
be tried: a stream is never replayed.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson
import structlog

from ollama_openai_bridge.access import AccessRecord
from ollama_openai_bridge.balance import Pick
from ollama_openai_bridge.errors import (
    UpstreamError,
    UpstreamRefusedParameter,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
    echo,
)
from ollama_openai_bridge.metrics import Metrics
from ollama_openai_bridge.owner import Owner
from ollama_openai_bridge.policy import Policy
from ollama_openai_bridge.profiles import reasoning_on
from ollama_openai_bridge.sse import SSEEvent, SSEParser
from ollama_openai_bridge.tracing import Tracing
from ollama_openai_bridge.upstream import (
    Failures,
    Upstream,
    UpstreamResponse,
    decode,
    map_failure,
)
from ollama_openai_bridge.upstream_errors import upstream_status_error

log = structlog.get_logger("ollama_openai_bridge.exchange")

SSE = "text/event-stream"


class Route(NamedTuple):
    """One place a request can go: the upstream, the model id it knows, its translation policy."""

    upstream: Upstream
    model: str
    policy: Policy


class Attempt(NamedTuple):
    """One upstream of a plan: where to send, and the body built for it (its model id)."""

    route: Route
    path: str  # relative to the upstream's base URL, e.g. "/chat/completions"
    body: bytes | None


class Plan(NamedTuple):
    """What to ask of the backend. ``attempts`` in the order to try them (the fallback chain).
    ``stream``: the answer is read as it arrives. ``relay``: the caller relays the backend's
    status and bytes (the ``/v1`` routes), so an error status is returned as a :class:`Reply`
    rather than raised, unless another upstream may still be tried. ``model`` is the client's
    name, for error messages. ``tape``: record a stream's bytes as they arrive, up to this many
    (:attr:`EventStream.tape`; response_cache.py); 0: none."""

    method: str
    attempts: tuple[Attempt, ...]
    stream: bool = False
    relay: bool = False
    model: str | None = None
    tape: int = 0


class Reply(NamedTuple):
    """A whole answer. ``data``: the decoded JSON (not for relayed plans)."""

    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str]
    data: Any = None


def may_fall_back(exc: BaseException) -> bool:
    """Failures where another upstream may succeed: nothing was sent, and it was not the
    request's fault (a 400 or 404 would fail the same way anywhere)."""
    if isinstance(exc, UpstreamStatusError):
        return exc.upstream_status >= 500 or exc.upstream_status == 429
    return isinstance(exc, UpstreamUnavailable | UpstreamTimeout)


class EventStream:
    """A streamed answer, read one network read at a time: iterating gives, per read, the list
    of SSE events it completed (``bytes`` as received for a relayed plan). Failures while
    reading are mapped (:func:`map_failure`); invalid UTF-8 is an
    :class:`~ollama_openai_bridge.errors.UpstreamProtocolError`, never replaced.

    Owned by the ``owner`` given to :func:`execute`, which calls :meth:`aclose` once."""

    __slots__ = (
        "_content",
        "_deadline",
        "_early",
        "_eof",
        "_first",
        "_host",
        "_loop",
        "_metrics",
        "_parser",
        "_resp",
        "_spill",
        "clean",
        "content_type",
        "headers",
        "sent_ns",
        "status",
        "tape",
        "tape_limit",
        "upstream",
    )

    def __init__(
        self,
        resp: UpstreamResponse,
        upstream: Upstream,
        *,
        parse: bool,
        deadline: float,
        tape: int = 0,
    ) -> None:
        self._resp = resp
        self._content = resp.content
        self._host = resp.url.host or upstream.name
        self._parser = SSEParser() if parse else None
        self._deadline = deadline  # loop time; 0: none
        self._loop = asyncio.get_running_loop()
        self._first: list[SSEEvent] | bytes | None = None
        # The rest of the first read, parsed on the next iteration: see _split.
        self._spill = b""
        self._early = parse
        self._eof = False
        self.clean = False  # read to its end: the connection may be reused
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self.content_type = resp.content_type
        self.upstream = upstream.name
        # When the request that this answers was sent (perf_counter_ns): the first-line budget
        # counts from here, not from an earlier upstream of the chain that failed (set by
        # _stream).
        self.sent_ns = 0
        # The bytes read so far, while they fit in tape_limit (response_cache.py records a
        # stream to serve it again); None: not recorded, or given up as too large.
        self.tape = bytearray() if tape else None
        self.tape_limit = tape

    def __aiter__(self) -> EventStream:
        return self

    async def prefetch(self) -> None:
        """Read once now (inside the caller's first-byte timeout); iteration starts with it. A
        stream that ended at once (no bytes at all) then iterates as empty."""
        try:
            self._first = await self.__anext__()
        except StopAsyncIteration:
            self._first = None

    async def __anext__(self) -> list[SSEEvent] | bytes:
        first = self._first
        if first is not None:
            self._first = None
            return first
        if self._eof:
            raise StopAsyncIteration
        parser = self._parser
        try:
            spill = self._spill
            if spill:  # already read (and recorded): parsed now, after the first lines went
                self._spill = b""
                return parser.feed(spill)  # type: ignore[union-attr]  # only when parsing
            chunk = await self._content.readany()
            if self._deadline and self._loop.time() > self._deadline:
                raise UpstreamTimeout("stream ended: it lasted longer than STREAM_TIMEOUT")
            if not chunk:  # the end
                self._eof = self.clean = True
                if parser is not None:
                    events = parser.close()
                    if events:
                        return events
                raise StopAsyncIteration
            tape = self.tape
            if tape is not None:  # inline: no call per read when the cache is off
                if len(tape) + len(chunk) > self.tape_limit:
                    self.tape = None
                else:
                    tape += chunk
            if parser is None:
                return chunk
            if self._early:
                self._early = False
                chunk = self._split(chunk)
            return parser.feed(chunk)
        except Failures.foreign as exc:
            self._eof = True
            raise map_failure(exc, self._host, reading=True) from None

    def _split(self, chunk: bytes) -> bytes:
        """The first read up to the end of its second event; the rest is parsed at the next
        iteration. A backend that has its answer ready (a cache, a fast model, a burst after
        a slow start) sends many events in one read, and parsing them all before the first
        line was the larger part of the time to first token (bench/clients.py). OpenAI-shaped
        streams open with a role-only event, then the first token: two events. A stream
        framed with CRs is not split (the parser reads any cut alike; this only finds none)."""
        end = chunk.find(b"\n\n")
        if end >= 0:
            end = chunk.find(b"\n\n", end + 2)
        if end < 0 or end + 2 >= len(chunk):
            return chunk
        self._spill = chunk[end + 2 :]
        return chunk[: end + 2]

    async def aclose(self) -> None:
        """Give the connection back to the pool if the answer was read to its end, else close it
        (the backend sees the cancellation at once)."""
        if self.clean:
            self._resp.release()
        else:
            self._resp.close()


async def execute(
    plan: Plan,
    owner: Owner,
    rec: AccessRecord,
    *,
    first_byte_timeout: float,
    stream_timeout: float,
    metrics: Metrics | None,
    tracing: Tracing | None = None,
) -> Reply | EventStream:
    """Run ``plan``: the :class:`Reply` (a decoded one unless ``plan.relay``) or, for a stream
    answered as SSE, the :class:`EventStream` after its first read.

    ``owner`` takes what must be released at the end (the stream, the in-flight gauge);
    ``rec.upstream`` names the upstream tried last. ``tracing`` (when on): a span per upstream
    tried (tracing.Tracing.attempt). Raises the mapped :class:`UpstreamError` (a 4xx/5xx
    status as :class:`UpstreamStatusError` unless relayed)."""
    if metrics is not None:
        metrics.upstream_in_flight(1)
        owner.callback(metrics.upstream_in_flight, -1)
    attempts = plan.attempts
    last = len(attempts) - 1
    for i, attempt in enumerate(attempts):
        upstream = attempt.route.upstream
        rec.upstream = upstream.name
        sent = attempt
        # A balanced upstream (base_urls): the call holds one of its replicas until the owner
        # closes -- when the answer has been read, or a stream has ended (balance.py).
        pick = None
        if upstream.balancer is not None:
            pick = upstream.balancer.call(attempt.body)
            owner.callback(pick.release)
        span = (
            None
            if tracing is None
            else tracing.attempt(attempt.route.model, attempt.path, upstream, i, plan.stream)
        )
        try:
            # Sent again without each parameter the backend refuses (adapt), up to
            # MAX_ADAPTATIONS of them; inline, not a helper: a coroutine frame per request.
            for adaptations in range(MAX_ADAPTATIONS + 1):
                try:
                    if plan.stream:
                        result = await _stream(
                            plan, sent, i == last, first_byte_timeout, stream_timeout, pick
                        )
                    else:
                        result = await _whole(plan, sent, i == last, pick)
                    break
                except UpstreamRefusedParameter as exc:
                    retry = adapt(plan, sent, exc) if adaptations < MAX_ADAPTATIONS else None
                    if retry is None:
                        raise
                    sent = retry
                    if metrics is not None:
                        metrics.adapted(upstream.name, exc.parameter)
        except UpstreamError as exc:
            if span is not None:
                span.failed(exc)
            if i == last or not may_fall_back(exc):
                raise
            if pick is not None:
                pick.release()  # on to the next upstream: this one's replica is free now
            following = attempts[i + 1].route.upstream
            log.warning(
                "upstream_fallback",
                model=None if plan.model is None else echo(plan.model),
                failed=upstream.name,
                next=following.name,
                reason=type(exc).__name__,
                error=exc.message,
            )
            if metrics is not None:
                metrics.fell_back(upstream.name)
            continue
        except BaseException as exc:  # cancelled, or a bug: the span ends all the same
            if span is not None:
                span.failed(exc)
            raise
        if span is not None:
            span.answered(result, owner, rec)
        if isinstance(result, EventStream):
            owner.push_async_callback(result.aclose)
        return result
    raise AssertionError("a plan has at least one attempt")  # pragma: no cover


# Parameters a backend may refuse that the request cannot do without.
_ESSENTIAL = frozenset({"model", "messages", "prompt", "input", "stream"})
MAX_ADAPTATIONS = 3  # distinct parameters one request may be sent again without


def adapt(plan: Plan, attempt: Attempt, refused: UpstreamRefusedParameter) -> Attempt | None:
    """The attempt again without the parameter the backend refused (or under the name it asked
    for), remembered for that upstream and model so the next request is shaped right at once;
    None when it cannot be: a relayed plan (the client's own OpenAI request, whose answer it
    gets as the backend gave it), no JSON body, or a parameter the request needs or did not
    send. Only before anything reached the client: a stream's refusal comes as its status."""
    if plan.relay or attempt.body is None:
        return None
    name, instead = refused.parameter, refused.replacement
    if name in _ESSENTIAL:
        return None
    payload = orjson.loads(attempt.body)
    if not isinstance(payload, dict) or name not in payload:
        return None
    reasoning = reasoning_on(payload)
    value = payload.pop(name)
    if instead is not None and instead not in payload and instead not in _ESSENTIAL:
        payload[instead] = value
    else:
        instead = None
    upstream = attempt.route.upstream
    upstream.refusals.learn(attempt.route.model, attempt.path, reasoning, name, instead)
    log.warning(
        "backend_refused_parameter",
        upstream=upstream.name,
        model=echo(attempt.route.model),
        parameter=name,
        action=f"sent as {instead}" if instead else "not sent",
        error=refused.message,
    )
    return Attempt(attempt.route, attempt.path, orjson.dumps(payload))


_RETRY_AFTER = re.compile(r"[0-9A-Za-z ,:]{1,40}")  # seconds, or an HTTP date


def retry_after(headers: Any) -> str | None:
    """A backend's ``Retry-After`` header, if it is one (seconds or an HTTP date), to relay with
    the error it came with; anything else (a header injection, a novel) is not relayed."""
    value = headers.get("Retry-After") if headers is not None else None
    if isinstance(value, str) and _RETRY_AFTER.fullmatch(value.strip()):
        return value.strip()
    return None


def _settle(plan: Plan, attempt: Attempt, last: bool, resp: Any, body: bytes) -> Reply:
    """A whole answer: an error status raised as :class:`UpstreamStatusError` (unless relayed
    and no other upstream may take it), else the reply, decoded unless relayed."""
    status = resp.status
    if not plan.relay:
        try:
            data = decode(status, body, client_model=plan.model, endpoint=attempt.path)
        except UpstreamStatusError as exc:
            exc.retry_after = retry_after(resp.headers)
            raise
        return Reply(status, body, "", resp.headers, data)  # content type: only relays read it
    if status >= 400 and not last:
        error = upstream_status_error(status, body, client_model=plan.model, endpoint=attempt.path)
        if may_fall_back(error):
            raise error
    return Reply(status, body, resp.content_type, resp.headers)


async def _whole(plan: Plan, attempt: Attempt, last: bool, pick: Pick | None) -> Reply:
    upstream = attempt.route.upstream
    total = upstream.request_timeout
    try:
        resp = await upstream.send(plan.method, attempt.path, attempt.body, total=total, pick=pick)
        body = await upstream.read(resp)
    except TimeoutError:
        raise UpstreamTimeout(
            f"upstream did not answer within {total:g} s (REQUEST_TIMEOUT)"
        ) from None
    return _settle(plan, attempt, last, resp, body)


async def _stream(
    plan: Plan,
    attempt: Attempt,
    last: bool,
    first_byte_timeout: float,
    stream_timeout: float,
    pick: Pick | None,
) -> Reply | EventStream:
    upstream = attempt.route.upstream
    breaker = upstream.breaker
    deadline = asyncio.get_running_loop().time() + stream_timeout if stream_timeout else 0.0
    resp = None
    sent_ns = time.perf_counter_ns()
    try:
        # Until the first read nothing was sent to the client: a timeout is still a real 504,
        # and the next upstream of the chain may be tried.
        async with asyncio.timeout(first_byte_timeout):
            # The breaker hears of this call after its first read, not its headers (settle):
            # a stuck engine answers a stream's headers at once, then nothing.
            resp = await upstream.send(
                plan.method, attempt.path, attempt.body, settle=False, pick=pick
            )
            if resp.status < 400 and resp.content_type == SSE:
                stream = await _open(resp, upstream, not plan.relay, deadline, plan.tape)
                stream.sent_ns = sent_ns
                breaker.success()
                if pick is not None:
                    pick.success()
                return stream
            # An error, or a backend that ignored stream:true and answered one JSON body.
            body = await upstream.read(resp)
    except TimeoutError:
        # Nothing within the time: a sick backend, whether its headers came or not (when they
        # had not, send() was cancelled and reported no verdict of its own).
        breaker.failure(gateway=True)
        if pick is not None:
            pick.failure()  # the replica held: a stuck engine's, whether it sent headers or not
        raise UpstreamTimeout(
            f"upstream sent nothing within {first_byte_timeout:g} s (FIRST_BYTE_TIMEOUT)"
        ) from None
    except BaseException as exc:
        if resp is not None:  # else send() reported it, or it was the breaker's own refusal
            breaker.record_error(exc)
            if pick is not None:
                pick.record_error(exc)
        raise
    breaker.record(resp.status)
    if pick is not None:
        pick.record(resp.status)
    return _settle(plan, attempt, last, resp, body)


async def _open(
    resp: UpstreamResponse, upstream: Upstream, parse: bool, deadline: float, tape: int = 0
) -> EventStream:
    stream = EventStream(resp, upstream, parse=parse, deadline=deadline, tape=tape)
    try:
        await stream.prefetch()
    except BaseException:
        resp.close()  # not handed to an owner yet: ours to close
        raise
    return stream
