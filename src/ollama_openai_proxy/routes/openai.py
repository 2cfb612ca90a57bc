"""Native OpenAI API (``/v1/*``): forwarded to the backend, status and body kept.

Clients that speak OpenAI (VS Code Copilot's OpenAI mode, OpenAI SDKs, Open WebUI's /v1
passthrough) get the backend's answers byte for byte; streams are forwarded as they arrive. Only
the model name is rewritten, and only when a model map is configured.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from ollama_openai_proxy.context import Context, get_context
from ollama_openai_proxy.errors import BadRequest
from ollama_openai_proxy.http import ClosingStream, json_response, read_body
from ollama_openai_proxy.translate.models import openai_models

router = APIRouter()

_INTERRUPTED = b'data: {"error":{"message":"upstream stream interrupted","type":"api_error"}}\n\n'

# Response headers worth keeping: rate-limit state and retry hints help clients back off.
_KEEP_HEADERS = ("retry-after", "x-ratelimit-", "openai-processing-ms", "x-request-id")


def _rewrite_model(ctx: Context, body: bytes) -> bytes:
    if not ctx.model_map:
        return body
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), str):
        upstream = ctx.upstream_model(obj["model"])
        if upstream != obj["model"]:
            obj["model"] = upstream
            return orjson.dumps(obj)
    return body


def _headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    return {
        k: v
        for k, v in resp.headers.items()
        if k.lower().startswith(_KEEP_HEADERS) and k.lower() != "x-request-id"
    }


async def _forward(request: Request, method: str, path: str) -> Response:
    ctx = get_context(request)
    body = None
    if method == "POST":
        body = _rewrite_model(ctx, await read_body(request, ctx.settings.request_max_size))
    await ctx.limiter.acquire()
    try:
        resp = await ctx.upstream.send(method, path, body)
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
    if not ctx.model_map:
        return await _forward(request, "GET", "/models")
    return json_response(openai_models(await ctx.catalog.models(), ctx.model_map))


@router.get(
    "/v1/models/{model:path}", operation_id="openai_model", summary="One OpenAI model (forwarded)"
)
async def model(request: Request, model: str) -> Response:
    ctx = get_context(request)
    return await _forward(request, "GET", "/models/" + ctx.upstream_model(model))
