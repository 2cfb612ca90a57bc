"""Thin HTTP handlers: parse -> plan -> execute -> render.

A handler validates the body, resolves the model once (``Backends.resolve``), builds a
:class:`~ollama_openai_proxy.exchange.Plan` with the pure translators (:func:`plan`), runs it
inside ``Context.held()`` -- the one owner of the request's bounded resources -- and renders the
answer. Errors are raised as :mod:`ollama_openai_proxy.errors` types and rendered by the app.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
from ollama_openai_proxy.translate.chat import UpstreamRequest

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


def get_and_head(router: APIRouter, path: str, **kwargs: Any) -> Callable[[Any], Any]:
    """Serve GET and HEAD (Ollama answers both; the Go client's heartbeat is ``HEAD /``), with one
    operation in the OpenAPI schema."""

    def decorate(func: Any) -> Any:
        router.add_api_route(path, func, methods=["HEAD"], include_in_schema=False)
        router.add_api_route(path, func, methods=["GET"], **kwargs)
        return func

    return decorate
