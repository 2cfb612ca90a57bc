"""Thin HTTP handlers: parse -> plan -> execute -> render.

A handler validates the body, resolves the model once (``Backends.resolve``), builds a
:class:`~ollama_openai_proxy.exchange.Plan` with the pure translators (:func:`plan`), runs it
inside ``Context.held()`` -- the one owner of the request's bounded resources -- and renders the
answer. Errors are raised as :mod:`ollama_openai_proxy.errors` types and rendered by the app.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter
from pydantic import TypeAdapter
from starlette.requests import Request

from ollama_openai_proxy import schemas
from ollama_openai_proxy.access import AccessRecord
from ollama_openai_proxy.backends import Resolved
from ollama_openai_proxy.context import Context, get_context
from ollama_openai_proxy.exchange import Attempt, Plan, Reply, Route
from ollama_openai_proxy.http import read_body
from ollama_openai_proxy.limits import Limits, check_values, precheck
from ollama_openai_proxy.translate.carry import Recalled, answer_keys, history_keys
from ollama_openai_proxy.translate.chat import UpstreamRequest
from ollama_openai_proxy.translate.normalise import ToolCall

T = TypeVar("T")


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
    async with ctx.held() as owner:
        reply = await ctx.backends.execute(p, owner, rec)
    assert isinstance(reply, Reply)  # not streamed: always a whole reply
    return reply.data


async def kept_calls(
    ctx: Context, messages: Sequence[Any], caller: str
) -> Callable[[Route], Mapping[tuple[int, int], Recalled] | None]:
    """What the tool-call store holds for the calls of the turn in progress of ``messages``
    (an ``/api/chat`` history), per route: only what that route's upstream and model made is
    given back to it (translate/carry.py). One lookup per request, none without such calls."""
    keys = history_keys(messages, caller)
    found = await ctx.tool_calls.recall(k for _, k in keys) if keys else None

    def kept(route: Route) -> Mapping[tuple[int, int], Recalled] | None:
        if not found:
            return None
        name, model = route.upstream.name, route.model
        return {
            at: hit
            for at, key in keys
            if (hit := found.get(key)) is not None and hit.upstream == name and hit.model == model
        }

    return kept


def remember_calls(
    ctx: Context, rec: AccessRecord, resolved: Resolved, made: list[tuple[ToolCall, Any]]
) -> None:
    """Keep the backend's ids and provider data of the calls it just made, for the next turn
    (translate/carry.py). ``made``: each call with its arguments as the client will replay them
    (``{"function": {"arguments": {...}}}``); it may still be empty when a stream ends."""
    if not made or rec.upstream is None:
        return
    model = next((r.model for r in resolved.routes if r.upstream.name == rec.upstream), None)
    if model is None:
        return
    entries = {
        key: Recalled(rec.upstream, model, call.id, call.extra)
        for key, call in answer_keys(made, rec.caller)
    }
    ctx.tool_calls.remember(entries)


def get_and_head(router: APIRouter, path: str, **kwargs: Any) -> Callable[[Any], Any]:
    """Serve GET and HEAD (Ollama answers both; the Go client's heartbeat is ``HEAD /``), with one
    operation in the OpenAPI schema."""

    def decorate(func: Any) -> Any:
        router.add_api_route(path, func, methods=["HEAD"], include_in_schema=False)
        router.add_api_route(path, func, methods=["GET"], **kwargs)
        return func

    return decorate
