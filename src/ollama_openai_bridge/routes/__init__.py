"""Thin HTTP handlers: parse -> plan -> execute -> render.

A handler validates the body, resolves the model once (``Backends.resolve``), builds a
:class:`~ollama_openai_bridge.exchange.Plan` with the pure translators (:func:`plan`), runs it
inside ``Context.held()`` -- the one owner of the request's bounded resources -- and renders the
answer. Errors are raised as :mod:`ollama_openai_bridge.errors` types and rendered by the app.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import structlog
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from ollama_openai_bridge import schemas
from ollama_openai_bridge.access import AccessRecord
from ollama_openai_bridge.backends import Resolved
from ollama_openai_bridge.context import Context, get_context
from ollama_openai_bridge.exchange import Attempt, Plan, Reply, Route
from ollama_openai_bridge.http import NDJSON, read_body
from ollama_openai_bridge.limits import Limits, check_values, precheck
from ollama_openai_bridge.render import Dialect, Snapshot
from ollama_openai_bridge.streams import ndjson_stream
from ollama_openai_bridge.translate.carry import Recalled, Seen, answer_keys, history_keys
from ollama_openai_bridge.translate.chat import UpstreamRequest
from ollama_openai_bridge.translate.chunks import ChunkReader
from ollama_openai_bridge.translate.normalise import ToolCall
from ollama_openai_bridge.upstream import Upstream

T = TypeVar("T")
log = structlog.get_logger("ollama_openai_bridge")


async def parse_body(
    request: Request,
    adapter: TypeAdapter[T],
    counts: Callable[[Any, Limits], None] | None = None,
) -> tuple[Context, T]:
    """The app context and the validated JSON body: 413 if larger than REQUEST_MAX_SIZE, 400
    if it has more values than REQUEST_MAX_VALUES (checked before parsing), arrays longer than
    ``counts`` allows (checked before validation for bodies of many values) or is invalid."""
    ctx = get_context(request)
    body = await read_body(request, ctx.settings.request_max_size)
    check_values(body, ctx.limits.values)
    if counts is not None:
        precheck(body, counts, ctx.limits)
    return ctx, schemas.parse(adapter, body)


def plan(
    ctx: Context,
    model: Resolved,
    path: str,
    build: Callable[[Route], UpstreamRequest],
    *,
    stream: bool = False,
    source: Any = None,
) -> Plan:
    """A POST of ``build(route)``'s payload to ``path`` on each of the model's routes in turn
    (the fallback chain). What the translation could not carry is logged once, for the first.

    ``source``: the client's decoded request (built from by ``build``): if the payload cannot
    be encoded, its integers beyond 64 bits become floats and the plan is built again."""
    try:
        attempts = _attempts(ctx, model, path, build)
    except orjson.JSONEncodeError:
        # An integer beyond 64 bits in a free-form field (a tool schema, arguments, format,
        # passed-through options): as a float, as Ollama reads it (400 if not even that).
        schemas.widen(source)
        attempts = _attempts(ctx, model, path, build)
    return Plan("POST", tuple(attempts), stream=stream, model=model.name)


def _attempts(
    ctx: Context, model: Resolved, path: str, build: Callable[[Route], UpstreamRequest]
) -> list[Attempt]:
    attempts = []
    for i, route in enumerate(model.routes):
        up = build(route)
        attempts.append(Attempt(route, path, orjson.dumps(up.payload)))
        if i == 0:
            ctx.report(up, model.name)
    return attempts


async def fetch(ctx: Context, rec: AccessRecord, p: Plan) -> Any:
    """The decoded JSON answer of a non-streaming plan."""
    return (await fetch_timed(ctx, rec, p))[0]


async def fetch_timed(ctx: Context, rec: AccessRecord, p: Plan) -> tuple[Any, int]:
    """The decoded JSON answer of a non-streaming plan, and when (``perf_counter_ns``) the
    request left for the backend, a concurrency slot held: the end of Ollama's
    ``load_duration``."""
    async with ctx.held() as owner:
        sent = time.perf_counter_ns()
        reply = await ctx.backends.execute(p, owner, rec)
    assert isinstance(reply, Reply)  # not streamed: always a whole reply
    return reply.data, sent


def _where(upstream: Upstream) -> str:
    # The upstream by name and address: re-pointing a name at another backend must not send
    # it what the old one made (strict backends refuse unknown message keys).
    return hashlib.sha256(f"{upstream.name}\0{upstream.base_url}".encode()).hexdigest()[:16]


@dataclass(slots=True)
class Turn:
    """The tool calls of the turn in progress (translate/carry.py): their store keys, what the
    store held for them, and how many calls of each kind the turn had."""

    caller: str
    keys: list[tuple[tuple[int, int], str]]
    seen: Seen
    found: dict[str, Recalled] | None = None

    @classmethod
    async def of(cls, ctx: Context, caller: str, messages: Sequence[Any]) -> Turn:
        """``messages``: an ``/api/chat`` history; ``caller``: the access record's. One store
        lookup per request, none for a history without calls in the turn in progress."""
        keys, seen = history_keys(messages, caller)
        found = await ctx.tool_calls.recall(k for _, k in keys) if keys else None
        return cls(caller, keys, seen, found)

    def kept(self, route: Route) -> dict[tuple[int, int], Recalled] | None:
        """What was kept for this route's upstream and model, by call position."""
        found = self.found
        if not found:
            return None
        where, model = _where(route.upstream), route.model
        return {
            at: hit
            for at, key in self.keys
            if (hit := found.get(key)) is not None and hit.upstream == where and hit.model == model
        }

    def remember(
        self,
        ctx: Context,
        rec: AccessRecord,
        resolved: Resolved,
        made: list[tuple[ToolCall, Any]],
    ) -> None:
        """Keep the backend's ids and provider data of the calls it just made, for the next
        step (``made`` may still be empty when a stream ends). Never raises: it runs as a
        stream's cleanup, where a failure would hide the stream's own outcome."""
        if not made or rec.upstream is None:
            return
        route = next((r for r in resolved.routes if r.upstream.name == rec.upstream), None)
        if route is None:
            return
        try:
            where = _where(route.upstream)
            entries = {
                key: Recalled(where, route.model, call.id, call.extra)
                for key, call in answer_keys(made, self.caller, self.seen)
            }
            ctx.tool_calls.remember(entries)
        except Exception as exc:  # a bug here must not cost the answer
            log.warning("tool_call_store_failed", error=repr(exc))


async def stream_reply(
    ctx: Context,
    rec: AccessRecord,
    p: Plan,
    tr: ChunkReader,
    *,
    model: str,
    keep_alive: float,
    start: int,
    carry: tuple[Turn, Resolved] | None,
    dialect: Dialect = Dialect.OLLAMA,
    media_type: str = NDJSON,
    snapshot: Snapshot | None = None,
) -> Response:
    """A translated route's streamed answer, in ``dialect``: the plan executed inside
    ``Context.held()``, then a whole JSON reply (a backend that ignored ``stream: true``)
    translated at once, or the stream, with time to first token (``start``: arrival,
    perf_counter_ns) and the open-streams gauge on the owner. The first line must come within
    what is left of FIRST_BYTE_TIMEOUT for the upstream that answers (a fallback's own send time
    wins over the plan's). When it is over, however it ended: ``model`` in /api/ps for
    ``keep_alive`` s (if the backend answered), the translator's notes and adaptations logged,
    tokens counted, and the calls it made kept for the next turn (``carry``). Raises the
    ProxyError of a failure before the first line."""
    async with ctx.held() as owner:
        sent = time.perf_counter_ns()  # FIRST_BYTE_TIMEOUT counts from here, not the queue
        tr.sent(sent)  # load_duration: arrival to here
        if ctx.budgets is not None:
            tr.chars = 0  # what the answer produces, for the budget's estimate without usage
        reply = await ctx.backends.execute(p, owner, rec)
        owner.callback(_stream_done, ctx, rec, tr, model, keep_alive)
        if carry is not None:
            turn, resolved = carry
            owner.callback(turn.remember, ctx, rec, resolved, tr.made)
        if isinstance(reply, Reply):
            body = ctx.renderer.redact.bytes(tr.feed_completion(reply.data) + tr.finish())
            rec.ttft_ms = round((time.perf_counter_ns() - start) / 1e6, 3)
            return Response(body, media_type=media_type)

        def first_line() -> None:
            ttft = (time.perf_counter_ns() - start) / 1e9
            rec.ttft_ms = round(ttft * 1000, 3)
            if ctx.metrics is not None:
                ctx.metrics.first_token(p.attempts[0].path, rec.model_label, ttft)
                ctx.metrics.streams(1)
                owner.callback(ctx.metrics.streams, -1)

        budget = ctx.settings.first_byte_timeout
        elapsed = (time.perf_counter_ns() - (reply.sent_ns or sent)) / 1e9
        return await ndjson_stream(
            reply,
            tr,
            owner,
            ctx.renderer,
            rec,
            first_line_timeout=max(budget - elapsed, 0.001),
            first_byte_timeout=budget,
            on_first=first_line,
            dialect=dialect,
            media_type=media_type,
            snapshot=snapshot,
        )


def _stream_done(
    ctx: Context, rec: AccessRecord, tr: ChunkReader, model: str, keep_alive: float
) -> None:
    """When a stream is over, however it ended: /api/ps (if the model answered), notes, token
    counts."""
    if rec.ttft_ms is not None:
        ctx.recent.touch(model, keep_alive)
    ctx.notes(tr.notes, model)
    ctx.adapted(tr.adapted, model)
    ctx.count(rec, tr.usage, streamed=tr.chars or 0)
    if ctx.tracing is not None:
        ctx.tracing.finished(tr.finish_reason)
