"""``/api/chat`` and ``/api/generate``: one OpenAI (chat) completion each, streamed or not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Scope

from ollama_openai_proxy import schemas
from ollama_openai_proxy.backends import Route
from ollama_openai_proxy.context import Context
from ollama_openai_proxy.errors import (
    BadRequest,
    ModelNotFound,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from ollama_openai_proxy.http import json_response, ndjson_response
from ollama_openai_proxy.middleware import info
from ollama_openai_proxy.routes import parse_body
from ollama_openai_proxy.translate.chat import (
    UpstreamRequest,
    chat_request,
    chat_response,
    completion_request,
    generate_request,
    generate_response,
    uses_completions,
)
from ollama_openai_proxy.translate.keepalive import (
    DEFAULT_KEEP_ALIVE,
    load_response,
    parse_keep_alive,
)
from ollama_openai_proxy.translate.stream import StreamTranslator

router = APIRouter()
Build = Callable[[Route], UpstreamRequest]  # the translation for one route of the request
CHAT_COMPLETIONS = "/chat/completions"
COMPLETIONS = "/completions"


@dataclass(frozen=True, slots=True)
class Answer:
    """What shapes the answer to one chat or generate request, whatever the backend call."""

    model: str  # the client's name, echoed in every line
    think: bool  # False: reasoning is removed from the answer
    start: int  # perf_counter_ns at arrival, for the durations
    keep_alive: float  # seconds, for /api/ps
    generate: bool  # generate's shape (response) rather than chat's (message)
    stream: bool = True  # Ollama streams unless told not to


@router.post(
    "/api/chat",
    operation_id="chat",
    summary="Chat (NDJSON stream unless stream is false)",
    openapi_extra=schemas.openapi_body(schemas.CHAT),
)
async def chat(request: Request) -> Response:
    start = time.perf_counter_ns()
    ctx, req = await parse_body(request, schemas.CHAT)
    model = req.get("model")
    if not model:
        raise BadRequest("model is required")
    schemas.check_think(req.get("think"))
    keep_alive = parse_keep_alive(req.get("keep_alive"))
    if not req.get("messages"):
        return json_response(load_response(model, keep_alive, time.time_ns(), generate=False))
    answer = _answer(req, model, start, keep_alive, generate=False)

    def build(route: Route) -> UpstreamRequest:
        return chat_request(req, ctx.target(model, route), route.policy)

    return await _complete(ctx, request.scope, CHAT_COMPLETIONS, build, answer)


@router.post(
    "/api/generate",
    operation_id="generate",
    summary="Generate from a prompt (NDJSON stream unless stream is false)",
    openapi_extra=schemas.openapi_body(schemas.GENERATE),
)
async def generate(request: Request) -> Response:
    start = time.perf_counter_ns()
    ctx, req = await parse_body(request, schemas.GENERATE)
    model = req.get("model")
    if not model:
        raise ModelNotFound("")  # Ollama answers 404 "model '' not found" here, not 400
    schemas.check_think(req.get("think"))
    keep_alive = parse_keep_alive(req.get("keep_alive"))
    if req.get("raw") and (req.get("system") or req.get("template") or req.get("context")):
        raise BadRequest("raw mode does not support template, system, or context")
    if not req.get("prompt") and not req.get("images") and not req.get("suffix"):
        return json_response(load_response(model, keep_alive, time.time_ns(), generate=True))
    answer = _answer(req, model, start, keep_alive, generate=True)
    if uses_completions(req):

        def build_completion(route: Route) -> UpstreamRequest:
            return completion_request(req, ctx.target(model, route), route.policy)

        try:
            return await _complete(ctx, request.scope, COMPLETIONS, build_completion, answer)
        except UpstreamStatusError as exc:
            # A raw prompt can still go to chat if the backend has no /v1/completions; a suffix
            # (fill-in-the-middle) cannot.
            if exc.upstream_status != 404 or exc.message.startswith("model '"):
                raise
            if req.get("suffix"):
                raise BadRequest(
                    "suffix (fill-in-the-middle) needs the backend's /v1/completions, which it "
                    f"does not offer for this model: {exc.detail}"
                ) from None
            ctx.notes(
                ["backend has no /v1/completions for this model; raw prompt sent as chat"], model
            )

    def build(route: Route) -> UpstreamRequest:
        return generate_request(req, ctx.target(model, route), route.policy)

    return await _complete(ctx, request.scope, CHAT_COMPLETIONS, build, answer)


def _answer(
    req: Mapping[str, Any], model: str, start: int, keep_alive: float | None, *, generate: bool
) -> Answer:
    return Answer(
        model,
        think=req.get("think") is not False,
        start=start,
        keep_alive=_ttl(keep_alive),
        generate=generate,
        stream=req.get("stream") is not False,  # Ollama streams unless told not to
    )


def _ttl(keep_alive: float | None) -> float:
    return DEFAULT_KEEP_ALIVE if keep_alive is None else keep_alive


async def _complete(
    ctx: Context, scope: Scope, path: str, build: Build, answer: Answer
) -> Response:
    """Call the backend (along the model's fallback chain); answer in the shape of Ollama's
    chat or generate."""
    model = answer.model
    ctx.observe(scope, model, None)  # labels the request even if the backend call fails
    reported = False

    def payload(route: Route) -> dict[str, Any]:
        nonlocal reported
        up = build(route)
        if not reported:  # what the translation could not carry, logged once per request
            ctx.report(up, model)
            reported = True
        return up.payload

    await ctx.limiter.acquire()
    try:
        if answer.stream:
            return await _stream(ctx, path, payload, answer, scope)

        async def call(route: Route) -> Any:
            return await route.upstream.json("POST", path, payload(route), client_model=model)

        body = await ctx.backends.call(model, call, details=info(scope))
    except BaseException:
        ctx.limiter.release()
        raise
    ctx.limiter.release()
    notes: list[str] = []
    now, total = time.time_ns(), time.perf_counter_ns() - answer.start
    try:
        if answer.generate:
            out = generate_response(body, model, now_ns=now, total_ns=total, think=answer.think)
        else:
            out = chat_response(
                body, model, now_ns=now, total_ns=total, think=answer.think, notes=notes
            )
    except (ValueError, TypeError, AttributeError) as exc:
        raise UpstreamProtocolError(f"upstream answer is not a completion: {exc}") from None
    ctx.notes(notes, model)
    ctx.recent.touch(model, answer.keep_alive)
    ctx.observe(scope, model, body.get("usage"))
    return json_response(out)


async def _stream(
    ctx: Context,
    path: str,
    payload: Callable[[Route], dict[str, Any]],
    answer: Answer,
    scope: Scope,
) -> Response:
    """A streamed answer; owns the concurrency slot taken by the caller until the stream ends."""
    settings, model = ctx.settings, answer.model
    deadline = time.monotonic() + settings.stream_timeout if settings.stream_timeout else 0.0

    async def attempt(route: Route) -> tuple[Response, StreamTranslator]:
        tr = StreamTranslator(
            model, generate=answer.generate, think=answer.think, start_ns=answer.start
        )

        def on_end() -> None:
            ctx.limiter.release()
            if ctx.metrics is not None:
                ctx.metrics.streams(-1)
            ctx.recent.touch(model, answer.keep_alive)
            ctx.notes(tr.notes, model)
            ctx.observe(scope, model, tr.usage)

        try:
            # Until the first line is ready nothing was sent: a timeout is still a real 504, and
            # the next upstream of the chain may be tried.
            async with asyncio.timeout(settings.first_byte_timeout):
                resp = await route.upstream.open_stream(path, payload(route), client_model=model)
                response = await ndjson_response(
                    resp, tr, route.upstream.base_url, on_end, deadline=deadline
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"upstream sent nothing within {settings.first_byte_timeout:g} s "
                "(FIRST_BYTE_TIMEOUT)"
            ) from None
        return response, tr

    response, _ = await ctx.backends.call(model, attempt, details=info(scope))
    ttft = (time.perf_counter_ns() - answer.start) / 1e9
    info(scope)["ttft_ms"] = round(ttft * 1000, 3)
    if ctx.metrics is not None:
        ctx.metrics.streams(1)
        ctx.metrics.first_token(path, ctx.model_label(model), ttft)
    return response
