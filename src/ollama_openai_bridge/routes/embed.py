"""``/api/embed`` (batch) and ``/api/embeddings`` (legacy): one ``/v1/embeddings`` call each."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ollama_openai_bridge import schemas
from ollama_openai_bridge.access import AccessRecord, record
from ollama_openai_bridge.context import Context
from ollama_openai_bridge.errors import BadRequest, UpstreamModelNotFound, echo, reading
from ollama_openai_bridge.exchange import Route
from ollama_openai_bridge.http import json_response
from ollama_openai_bridge.routes import fetch_timed, parse_body, plan
from ollama_openai_bridge.routing import Router
from ollama_openai_bridge.translate.chat import EMBEDDINGS_PATH, UpstreamRequest, for_backend
from ollama_openai_bridge.translate.embed import (
    embed_inputs,
    embed_response,
    embeddings_request,
    embeddings_response,
)
from ollama_openai_bridge.translate.keepalive import parse_keep_alive

router = Router()
NOT_EMBEDDINGS = "an answer that is not an embedding list"


async def _call(
    ctx: Context, rec: AccessRecord, model: str, inputs: list[str], dimensions: int | None
) -> tuple[Any, int]:
    """The backend's answer, and when the request left for it (``perf_counter_ns``)."""
    resolved = await ctx.backends.resolve(model)
    ctx.label(rec, resolved)

    def build(route: Route) -> UpstreamRequest:
        up = UpstreamRequest(embeddings_request(route.model, inputs, dimensions))
        return for_backend(up, ctx.target(model, route), route.policy, EMBEDDINGS_PATH)

    p = plan(ctx, resolved, "/embeddings", build)
    try:
        return await fetch_timed(ctx, rec, p)
    except UpstreamModelNotFound as exc:
        # Ollama's scheduler wording for embeddings (handleScheduleError, routes.go)
        raise UpstreamModelNotFound(
            f'model "{echo(model)}" not found, try pulling it first',
            exc.upstream_status,
            exc.status,
            exc.code,
        ) from None


@router.post(
    "/api/embed",
    operation_id="embed",
    summary="Embeddings for one or many inputs",
)
async def embed(request: Request) -> Response:
    start = time.perf_counter_ns()
    ctx, req = await parse_body(request, schemas.EMBED)
    model = req.get("model")
    if not model:
        raise BadRequest("model is required")
    parse_keep_alive(req.get("keep_alive"))  # no effect here, but an invalid one is a 400
    inputs = embed_inputs(req.get("input"), ctx.limits.embed_inputs)
    if not inputs:
        return json_response({"model": model, "embeddings": []})
    rec = record(request.scope)
    body, sent = await _call(ctx, rec, model, inputs, req.get("dimensions"))
    with reading(NOT_EMBEDDINGS, body):
        dimensions = req.get("dimensions")
        total = time.perf_counter_ns() - start
        out = embed_response(body, model, len(inputs), total, dimensions, sent - start)
        if dimensions and out["embeddings"] and len(body["data"][0]["embedding"]) > dimensions:
            ctx.adapted([f"embeddings cut to {dimensions} dimensions here, as Ollama does"], model)
        ctx.count(rec, body.get("usage"))
    return json_response(out)


@router.post(
    "/api/embeddings",
    operation_id="embeddings",
    summary="One embedding (legacy API)",
)
async def embeddings(request: Request) -> Response:
    ctx, req = await parse_body(request, schemas.EMBEDDINGS)
    model = req.get("model")
    if not model:
        raise BadRequest("model is required")
    parse_keep_alive(req.get("keep_alive"))
    prompt = req.get("prompt")
    if not prompt:
        return json_response({"embedding": []})
    rec = record(request.scope)
    body, _ = await _call(ctx, rec, model, [prompt], None)
    with reading(NOT_EMBEDDINGS, body):
        out = embeddings_response(body)
        ctx.count(rec, body.get("usage"))  # as /api/embed: the log, the metrics, the budget
    return json_response(out)
