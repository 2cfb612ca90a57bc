"""The response cache (RESPONSE_CACHE, issue #20): the same backend request, answered again
without the backend.

**Where.** Around :func:`~ollama_openai_bridge.exchange.execute` (``Backends.execute`` is
wrapped by :meth:`ResponseCache.wrap` when the cache is on; when it is off nothing here runs).
So every route that calls a model -- ``/api/chat``, ``/api/generate``, ``/api/embed``,
``/v1/messages``, ``/v1/responses`` and the relayed ``/v1/chat/completions``,
``/v1/completions`` and ``/v1/embeddings`` -- is served from it, and a hit goes on through the
route's own rendering and bookkeeping as a backend's answer would: the translator, redaction,
token counts (and budgets), the access log, the metrics. A hit takes a concurrency slot, as
every request does, but no backend call, no retry and no circuit breaker.

**The key** is a SHA-256 of what the backend would be sent: the first upstream of the plan (its
name and base URL), the method and path, streamed or not, and the JSON body with its keys
sorted -- after translation and the backend profile, so ``/api/chat`` and
``/v1/chat/completions`` asking the same of the same backend share an entry -- and the caller
(the inbound key's hash) unless RESPONSE_CACHE_ACROSS_KEYS. Streamed and whole answers are kept
apart (see docs/CONFIGURATION.md, "Response cache").

**What is cached**: POSTs to ``/chat/completions``, ``/completions`` and ``/embeddings`` whose
body is deterministic (:func:`deterministic`) unless RESPONSE_CACHE_NONDETERMINISTIC; only a
success (2xx, JSON without ``error``) answered by the plan's first upstream (a fallback's answer
is not the one asked for), at most RESPONSE_CACHE_MAX_ENTRY_BYTES; a stream only once read to a
clean end (``[DONE]`` or a ``finish_reason``, no error event) and no larger than that bound
while it was recorded (:attr:`~ollama_openai_bridge.exchange.EventStream.tape`).

**Per request**, ``Cache-Control: no-cache`` skips the lookup (the answer is still kept) and
``no-store`` skips both; the response says what happened in ``X-Cache-Status`` (HIT, MISS,
BYPASS, UNCACHEABLE), as nginx and Kong's proxy-cache do.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ollama_openai_bridge.access import AccessRecord, record
from ollama_openai_bridge.cache_store import MemoryStore, RedisStore, Store
from ollama_openai_bridge.config import Settings
from ollama_openai_bridge.exchange import SSE, EventStream, Plan, Reply
from ollama_openai_bridge.metrics import Metrics
from ollama_openai_bridge.owner import Owner
from ollama_openai_bridge.sse import SSEParser

log = structlog.get_logger("ollama_openai_bridge.response_cache")

Execute = Callable[[Plan, Owner, AccessRecord], Awaitable[Reply | EventStream]]

CACHEABLE_PATHS = frozenset({"/chat/completions", "/completions", "/embeddings"})
# The backend body's fields that make an answer repeatable (docs/CONFIGURATION.md lists which
# client field each dialect's translation turns into them): Mistral takes its seed as
# random_seed (profiles.py, docs.mistral.ai/api).
SEEDS = ("seed", "random_seed")
VERSION = b"1"  # of the key and the entry format: a change makes old entries unreachable
HEADER = b"x-cache-status"

HIT, MISS, BYPASS, UNCACHEABLE = "HIT", "MISS", "BYPASS", "UNCACHEABLE"
WHOLE, STREAM = b"w", b"s"


class Entry(NamedTuple):
    """A kept answer: ``kind`` :data:`WHOLE` (the body) or :data:`STREAM` (the SSE bytes as
    the backend sent them), its status and media type."""

    kind: bytes
    status: int
    content_type: str
    body: bytes


def encode(entry: Entry) -> bytes:
    """``VERSION kind status content-type\\n`` then the body: bytes as they are, no escaping."""
    head = b" ".join((VERSION, entry.kind, str(entry.status).encode(), entry.content_type.encode()))
    return head + b"\n" + entry.body


def decode(blob: bytes) -> Entry | None:
    """The entry of :func:`encode`; None for anything else (another version's, not ours)."""
    head, sep, body = blob.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 4 or parts[0] != VERSION or parts[1] not in (WHOLE, STREAM):
        return None
    try:
        status = int(parts[2])
        content_type = parts[3].decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    return Entry(parts[1], status, content_type, body)


def deterministic(path: str, payload: dict[str, Any]) -> bool:
    """Whether the backend body asks for a repeatable answer: an embedding always; a
    completion with ``temperature`` 0 or an integer seed (:data:`SEEDS`)."""
    if path == "/embeddings":
        return True
    temperature = payload.get("temperature")
    if type(temperature) in (int, float) and temperature == 0:
        return True
    return any(type(payload.get(name)) is int for name in SEEDS)


def cache_key(plan: Plan, payload: dict[str, Any], caller: str) -> str:
    """The key of ``plan`` (its first attempt, whose ``payload`` this is) for ``caller`` (""
    when answers are shared across keys): a SHA-256 hex digest. Raises orjson.JSONEncodeError
    for a payload that cannot be encoded again."""
    attempt = plan.attempts[0]
    upstream = attempt.route.upstream
    body = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    h = hashlib.sha256()
    for part in (
        VERSION,
        upstream.name.encode(),
        upstream.base_url.encode(),
        plan.method.encode(),
        attempt.path.encode(),
        STREAM if plan.stream else WHOLE,
        caller.encode(),
    ):
        h.update(part)
        h.update(b"\0")
    h.update(body)
    return h.hexdigest()


def directive(value: str) -> str:
    """A request's ``Cache-Control`` -> ``no-store``, ``no-cache`` or "" (RFC 9111 §5.2.1:
    comma-separated directives, case-insensitive; no-store is the stronger)."""
    tokens = {t.strip().lower().partition("=")[0] for t in value.split(",")}
    if "no-store" in tokens:
        return "no-store"
    return "no-cache" if "no-cache" in tokens else ""


def complete(tape: bytes) -> str | None:
    """Why a recorded stream must not be kept, or None if it may: every event JSON without an
    ``error``, no ``event: error``, and a clean end (``[DONE]`` or a ``finish_reason``)."""
    parser = SSEParser()
    try:
        events = parser.feed(tape) + parser.close()
    except ValueError:  # UnicodeDecodeError included
        return "not an event stream"
    ended = False
    for event in events:
        if event.event == "error":
            return "an error event"
        if event.data == "[DONE]":
            ended = True
            continue
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return "an event that is not JSON"
        if not isinstance(data, dict) or "error" in data:
            return "an error event"
        for choice in data.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                ended = True
    return None if ended else "no finish_reason and no [DONE]"


class _NoHost(NamedTuple):
    host: str | None = None


class Recorded:
    """A kept answer as an :class:`~ollama_openai_bridge.upstream.UpstreamResponse`: an
    :class:`EventStream` reads it as it would the backend's, through the same parser, so a
    replayed stream takes the same path to the client. One read gives it all (no pacing)."""

    __slots__ = ("_body", "content_length", "content_type", "headers", "status")

    url = _NoHost()

    def __init__(self, entry: Entry) -> None:
        self.status = entry.status
        self.content_type = entry.content_type
        self.headers: dict[str, str] = {}  # a backend's rate-limit headers would be stale
        self.content_length = len(entry.body)
        self._body = entry.body

    @property
    def content(self) -> Recorded:
        return self

    async def readany(self) -> bytes:
        body, self._body = self._body, b""
        return body

    async def read(self) -> bytes:
        return await self.readany()

    def release(self) -> None:
        """Nothing to give back."""

    def close(self) -> None:
        """Nothing to close."""


class ResponseCache:
    """``wrap(execute)`` -> an execute that answers from ``store`` when it can. ``settings``:
    RESPONSE_CACHE_*."""

    def __init__(self, store: Store, settings: Settings, metrics: Metrics | None = None) -> None:
        self.store = store
        self.max_entry = settings.response_cache_max_entry_bytes
        self.any_request = settings.response_cache_nondeterministic
        self.per_key = not settings.response_cache_across_keys
        self._metrics = metrics
        self._inner: Execute | None = None

    def wrap(self, execute: Execute) -> Execute:
        """``execute`` (``Backends.execute``) with the cache in front of it."""
        self._inner = execute
        return self.execute

    async def close(self) -> None:
        await self.store.close()

    def key(self, plan: Plan, rec: AccessRecord) -> str | None:
        """The plan's key, None if it is not cacheable (not a POST of a JSON object to a
        cacheable path, or not deterministic and RESPONSE_CACHE_NONDETERMINISTIC is off)."""
        attempt = plan.attempts[0]
        if plan.method != "POST" or attempt.body is None or attempt.path not in CACHEABLE_PATHS:
            return None
        try:
            payload = orjson.loads(attempt.body)
            if not isinstance(payload, dict):
                return None
            if not self.any_request and not deterministic(attempt.path, payload):
                return None
            return cache_key(plan, payload, rec.caller if self.per_key else "")
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            return None  # a relayed body the proxy cannot read: the backend's to judge

    async def execute(self, plan: Plan, owner: Owner, rec: AccessRecord) -> Reply | EventStream:
        """Run ``plan`` (see :func:`~ollama_openai_bridge.exchange.execute`), from the cache
        when it holds the answer; sets ``rec.cache`` to what the cache did."""
        inner = self._inner
        assert inner is not None, "wrap() first"
        key = self.key(plan, rec)
        if key is None:
            self._result(rec, UNCACHEABLE)
            return await inner(plan, owner, rec)
        asked = rec.cache_control
        if asked:
            self._result(rec, BYPASS)
        else:
            blob = await self.store.get(key)
            replay = None if blob is None else await self._replay(plan, blob, owner)
            if replay is not None:
                self._result(rec, HIT)
                rec.upstream = plan.attempts[0].route.upstream.name
                return replay
            self._result(rec, MISS)
        if asked == "no-store":
            return await inner(plan, owner, rec)
        taped = plan._replace(tape=self.max_entry) if plan.stream else plan
        result = await inner(taped, owner, rec)
        if rec.upstream != plan.attempts[0].route.upstream.name:
            log.debug("response_not_cached", reason="a fallback upstream answered")
        elif isinstance(result, EventStream):
            # at the end, however it ends: kept only if it ended well (and before aclose, which
            # execute pushed first)
            owner.callback(self._keep_stream, key, result)
        else:
            self._keep_whole(key, plan, result)
        return result

    def _result(self, rec: AccessRecord, result: str) -> None:
        rec.cache = result
        if self._metrics is not None:
            self._metrics.cache_result(result.lower())

    async def _replay(self, plan: Plan, blob: bytes, owner: Owner) -> Reply | EventStream | None:
        """The kept answer as ``execute`` returns a backend's; None if it does not fit the plan
        (another kind, or not readable: a miss)."""
        entry = decode(blob)
        if entry is None or (entry.kind == STREAM and not plan.stream):
            return None
        if entry.kind == WHOLE:
            if plan.relay:
                return Reply(entry.status, entry.body, entry.content_type, {})
            try:
                data = orjson.loads(entry.body)
            except orjson.JSONDecodeError:
                return None
            return Reply(entry.status, entry.body, "", {}, data)
        stream = EventStream(
            Recorded(entry), plan.attempts[0].route.upstream, parse=not plan.relay, deadline=0.0
        )
        stream.sent_ns = time.perf_counter_ns()
        await stream.prefetch()
        owner.push_async_callback(stream.aclose)
        return stream

    def _keep_whole(self, key: str, plan: Plan, reply: Reply) -> None:
        if not 200 <= reply.status < 300:
            return
        body = reply.body
        if len(body) > self.max_entry:
            log.debug("response_not_cached", reason="larger than RESPONSE_CACHE_MAX_ENTRY_BYTES")
            return
        data = reply.data
        if plan.relay:
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                return
        if not isinstance(data, dict) or "error" in data:
            return
        self._put(key, Entry(WHOLE, reply.status, reply.content_type or "application/json", body))

    def _keep_stream(self, key: str, stream: EventStream) -> None:
        """A stream's cleanup: keep it if it was read to a clean end within the bound. Never
        raises (it runs among the stream's releases)."""
        try:
            tape = stream.tape
            if not stream.clean or tape is None:
                reason = "cut short" if tape is not None else "larger than the bound"
                log.debug("response_not_cached", reason=f"a stream {reason}")
                return
            body = bytes(tape)
            why = complete(body)
            if why is not None:
                log.debug("response_not_cached", reason=why)
                return
            self._put(key, Entry(STREAM, stream.status, SSE, body))
        except Exception as exc:  # a bug here must not cost the answer
            log.warning("response_cache_failed", error=repr(exc))

    def _put(self, key: str, entry: Entry) -> None:
        self.store.put(key, encode(entry))
        if self._metrics is not None:
            self._metrics.cache_stored("stream" if entry.kind == STREAM else "whole")


class CacheStatusMiddleware:
    """Reads the request's ``Cache-Control`` into the access record and answers with
    ``X-Cache-Status`` (what :class:`ResponseCache` did). Installed only with the cache on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rec = record(scope)
        values = [v.decode("latin-1") for n, v in scope["headers"] if n == b"cache-control"]
        if values:
            rec.cache_control = directive(",".join(values))

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start" and rec.cache is not None:
                message["headers"] = [*message.get("headers", ()), (HEADER, rec.cache.encode())]
            await send(message)

        await self.app(scope, receive, send_status)


def from_settings(settings: Settings, metrics: Metrics | None) -> ResponseCache | None:
    """The cache RESPONSE_CACHE asks for; None when it is off."""
    uri = settings.cache_uri()
    if not uri:
        return None
    ttl = settings.response_cache_ttl
    store: Store
    if uri.startswith(("redis://", "rediss://")):
        store = RedisStore(uri, ttl=ttl, metrics=metrics)
    else:
        store = MemoryStore(
            ttl=ttl,
            max_entries=settings.response_cache_max_entries,
            max_bytes=settings.response_cache_max_bytes,
            metrics=metrics,
        )
    return ResponseCache(store, settings, metrics)
