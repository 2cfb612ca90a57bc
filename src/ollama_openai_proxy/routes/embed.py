"""``/api/embed`` (batch) and ``/api/embeddings`` (legacy): one ``/v1/embeddings`` call each."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Scope

from ollama_openai_proxy import schemas
from ollama_openai_proxy.backends import Route
from ollama_openai_proxy.context import Context
from ollama_openai_proxy.errors import BadRequest, UpstreamProtocolError, UpstreamStatusError
from ollama_openai_proxy.http import json_response
from ollama_openai_proxy.middleware import info
from ollama_openai_proxy.routes import parse_body
from ollama_openai_proxy.translate.embed import (
    embed_inputs,
    embed_response,
    embeddings_request,
    embeddings_response,
)

router = APIRouter()


async def _call(
    ctx: Context, scope: Scope, model: str, inputs: list[str], dimensions: int | None
) -> Any:
    async def call(route: Route) -> Any:
        payload = embeddings_request(route.model, inputs, dimensions)
        return await route.upstream.json("POST", "/embeddings", payload, client_model=model)

    await ctx.limiter.acquire()
    try:
        return await ctx.backends.call(model, call, details=info(scope))
    except UpstreamStatusError as exc:
        if exc.status == 404 and exc.message.startswith("model '"):
            # Ollama's scheduler wording for embeddings (handleScheduleError, routes.go)
            exc.message = f'model "{model}" not found, try pulling it first'
        raise
    finally:
        ctx.limiter.release()


@router.post(
    "/api/embed",
    operation_id="embed",
    summary="Embeddings for one or many inputs",
    openapi_extra=schemas.openapi_body(schemas.EMBED),
)
async def embed(request: Request) -> Response:
    start = time.perf_counter_ns()
    ctx, req = await parse_body(request, schemas.EMBED)
    model = req.get("model")
    if not model:
        raise BadRequest("model is required")
    inputs = embed_inputs(req.get("input"), ctx.settings.embed_max_inputs)
    if not inputs:
        return json_response({"model": model, "embeddings": []})
    body = await _call(ctx, request.scope, model, inputs, req.get("dimensions"))
    ctx.observe(request.scope, model, body.get("usage") if isinstance(body, dict) else None)
    try:
        out = embed_response(body, model, len(inputs), time.perf_counter_ns() - start)
    except (ValueError, TypeError, AttributeError) as exc:
        raise UpstreamProtocolError(f"upstream answer is not an embedding list: {exc}") from None
    return json_response(out)


@router.post(
    "/api/embeddings",
    operation_id="embeddings",
    summary="One embedding (legacy API)",
    openapi_extra=schemas.openapi_body(schemas.EMBEDDINGS),
)
async def embeddings(request: Request) -> Response:
    ctx, req = await parse_body(request, schemas.EMBEDDINGS)
    model = req.get("model")
    if not model:
        raise BadRequest("model is required")
    prompt = req.get("prompt")
    if not prompt:
        return json_response({"embedding": []})
    body = await _call(ctx, request.scope, model, [prompt], None)
    try:
        return json_response(embeddings_response(body))
    except (ValueError, TypeError, AttributeError) as exc:
        raise UpstreamProtocolError(f"upstream answer is not an embedding list: {exc}") from None
