"""``/api/tags``, ``/api/show``, ``/api/ps``: the model catalogue in Ollama's shapes."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from ollama_openai_bridge import schemas
from ollama_openai_bridge.context import get_context
from ollama_openai_bridge.errors import BadRequest, ModelNotFound
from ollama_openai_bridge.http import json_response
from ollama_openai_bridge.routes import parse_body
from ollama_openai_bridge.routing import Router
from ollama_openai_bridge.translate import models as tm

router = Router()


@router.get_and_head(
    "/api/tags",
    operation_id="tags",
    summary="List models (from the backend's /v1/models, cached), with capabilities",
)
async def tags(request: Request) -> Response:
    ctx = get_context(request)
    listed = await ctx.backends.models()
    return json_response(tm.tags(listed, ctx.model_map, time.time_ns(), ctx.facts))


@router.post(
    "/api/show",
    operation_id="show",
    summary="Model details, capabilities and context length",
)
async def show(request: Request) -> Response:
    ctx, req = await parse_body(request, schemas.SHOW)
    name = req.get("model") or req.get("name")
    if not name:
        raise BadRequest("model is required")
    await ctx.backends.models()  # the name is resolved against the lists, so load them first
    route = (await ctx.backends.resolve(name)).route
    known = ctx.backends.known_ids or frozenset()
    if route.model not in known and ctx.model_map.lookup(name) is None:
        raise ModelNotFound(name)
    return json_response(tm.show(name, route.model, ctx.facts(name, route), time.time_ns()))


@router.get_and_head(
    "/api/ps", operation_id="ps", summary="Models used recently (within keep_alive)"
)
async def ps(request: Request) -> Response:
    ctx = get_context(request)
    models = [tm.ps_entry(name, ctx.facts(name), expires) for name, expires in ctx.recent.active()]
    return json_response({"models": models})
