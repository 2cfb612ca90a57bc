"""Native OpenAI API (``/v1/*``): forwarded to the backend, status and body kept.

Clients that speak OpenAI (VS Code Copilot's OpenAI mode, OpenAI SDKs, Open WebUI's /v1
passthrough) get the backend's answers byte for byte; streams are forwarded as they arrive. Only
the model name is rewritten, and the body decoded at all only when a model map or several
backends (UPSTREAMS_FILE) are configured: then the model chooses the backend, and a 5xx or 429
answer passes the request to the next backend of the model's fallback chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from ollama_openai_proxy.backends import Route
from ollama_openai_proxy.context import Context, get_context
from ollama_openai_proxy.errors import BadRequest
from ollama_openai_proxy.http import ClosingStream, json_response, read_body
from ollama_openai_proxy.middleware import info
from ollama_openai_proxy.translate.models import openai_models
from ollama_openai_proxy.translate.upstream_errors import upstream_status_error

router = APIRouter()

_INTERRUPTED = b'data: {"error":{"message":"upstream stream interrupted","type":"api_error"}}\n\n'

# Response headers worth keeping: rate-limit state and retry hints help clients back off.
_KEEP_HEADERS = ("retry-after", "x-ratelimit-", "openai-processing-ms", "x-request-id")


def _client_model(ctx: Context, body: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """The body's model name, parsed only when it matters: with a model map or several
    upstreams; otherwise the body is forwarded without being decoded."""
    if not ctx.model_map and not ctx.backends.multi:
        return None, None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), str):
        return obj["model"], obj
    return None, None


def _for_route(body: bytes, obj: dict[str, Any] | None, route: Route) -> bytes:
    if obj is None or obj["model"] == route.model:
        return body
    return orjson.dumps({**obj, "model": route.model})


def _headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    return {
        k: v
        for k, v in resp.headers.items()
        if k.lower().startswith(_KEEP_HEADERS) and k.lower() != "x-request-id"
    }


async def _forward(request: Request, method: str, path: str, model: str | None = None) -> Response:
    ctx = get_context(request)
    body: bytes | None = None
    obj: dict[str, Any] | None = None
    if method == "POST":
        body = await read_body(request, ctx.settings.request_max_size)
        model, obj = _client_model(ctx, body)
    routes = ctx.backends.routes(model) if model is not None else [ctx.backends.default_route]
    last = routes[-1]

    async def attempt(route: Route) -> aiohttp.ClientResponse:
        data = None if body is None else _for_route(body, obj, route)
        sent_path = path if model is None or method == "POST" else f"/models/{route.model}"
        resp = await route.upstream.send(method, sent_path, data)
        if route is not last and (resp.status >= 500 or resp.status == 429):
            # Nothing reached the client yet: the next upstream of the chain may answer.
            error = upstream_status_error(
                resp.status, await resp.read(), client_model=model, endpoint=sent_path
            )
            resp.release()
            raise error
        return resp

    await ctx.limiter.acquire()
    try:
        resp = await ctx.backends.call(model or "", attempt, routes, info(request.scope))
        media_type = resp.headers.get("content-type", "application/json")
        if resp.content_type != "text/event-stream":
            try:
                data = await resp.read()
            finally:
                resp.release()
            return Response(
                data, status_code=resp.status, media_type=media_type, headers=_headers(resp)
            )
    except BaseException:
        ctx.limiter.release()
        raise
    else:
        if resp.content_type != "text/event-stream":
            ctx.limiter.release()

    clean = False

    async def relay() -> AsyncIterator[bytes]:
        nonlocal clean
        try:
            async for chunk in resp.content.iter_any():
                yield chunk
            clean = True
        except (aiohttp.ClientError, TimeoutError):
            # Mid-stream failure: OpenAI clients understand an SSE error event.
            yield _INTERRUPTED

    async def cleanup() -> None:
        if clean:
            resp.release()
        else:
            resp.close()
        ctx.limiter.release()

    return ClosingStream(
        relay(), cleanup, media_type=media_type, status_code=resp.status, headers=_headers(resp)
    )


@router.post(
    "/v1/chat/completions",
    operation_id="openai_chat_completions",
    summary="OpenAI chat completions (forwarded)",
)
async def chat_completions(request: Request) -> Response:
    return await _forward(request, "POST", "/chat/completions")


@router.post(
    "/v1/completions", operation_id="openai_completions", summary="OpenAI completions (forwarded)"
)
async def completions(request: Request) -> Response:
    return await _forward(request, "POST", "/completions")


@router.post(
    "/v1/embeddings", operation_id="openai_embeddings", summary="OpenAI embeddings (forwarded)"
)
async def embeddings(request: Request) -> Response:
    return await _forward(request, "POST", "/embeddings")


@router.get(
    "/v1/models", operation_id="openai_models", summary="OpenAI model list (aliases applied)"
)
async def models(request: Request) -> Response:
    ctx = get_context(request)
    if not ctx.model_map and not ctx.backends.multi:
        return await _forward(request, "GET", "/models")
    return json_response(openai_models(await ctx.backends.models(), ctx.model_map))


@router.get(
    "/v1/models/{model:path}", operation_id="openai_model", summary="One OpenAI model (forwarded)"
)
async def model(request: Request, model: str) -> Response:
    return await _forward(request, "GET", "/models/" + model, model)
