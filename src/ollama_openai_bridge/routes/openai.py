"""Native OpenAI API (``/v1/*``): forwarded to the backend, status and body kept.

Clients that speak OpenAI (VS Code Copilot's OpenAI mode, OpenAI SDKs, Open WebUI's /v1
passthrough) get the backend's answers byte for byte; streams are forwarded as they arrive. Only
the model name is rewritten, and the body decoded at all only when a model map or several
backends (UPSTREAMS_FILE) are configured: then the model chooses the backend, and a 5xx or 429
answer passes the request to the next backend of the model's fallback chain.

With token budgets (TOKEN_BUDGET), the answer's ``usage`` is counted against the caller's key:
read from a whole answer, or from the stream's events as they pass (relay.UsageTap). A stream
reports its usage only if asked (``stream_options.include_usage``, OpenAI's API): the proxy asks
for it when the client did not, where the backend profile takes it, and keeps the usage-only
chunk from a client that did not ask for it. A stream without usage (the client left before
its last chunk, a profile without ``stream_options``, a client's ``stream_options`` that is not
an object) is counted as an estimate (budgets.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ollama_openai_bridge.access import AccessRecord, record
from ollama_openai_bridge.context import Context, get_context
from ollama_openai_bridge.errors import BadRequest
from ollama_openai_bridge.exchange import Attempt, EventStream, Plan, Route
from ollama_openai_bridge.http import json_response, read_body
from ollama_openai_bridge.limits import check_openai, check_values
from ollama_openai_bridge.relay import UsageTap
from ollama_openai_bridge.routing import Router
from ollama_openai_bridge.streams import sse_relay
from ollama_openai_bridge.translate.estimate import output_chars
from ollama_openai_bridge.translate.models import openai_models

router = Router()

# Response headers worth keeping: rate-limit state and retry hints help clients back off.
_KEEP_HEADERS = ("retry-after", "x-ratelimit-", "openai-processing-ms")
# ";" too: servlet containers (Tomcat, Spring) and some gateways strip ";..." path parameters,
# so "..;" would be a ".." segment there.
_UNSAFE_IN_ID = frozenset("?#%\\;")
MAX_ID = 256  # characters in a model id taken from a URL
_STREAM_USAGE = frozenset({"/chat/completions", "/completions"})  # take stream_options


def _inspect(ctx: Context, body: bytes) -> tuple[str | None, dict[str, Any] | None, bool]:
    """``(model, decoded body, stream)``. The body is decoded only when it matters: with a
    model map or several upstreams (the model picks the route), or when it may ask for a stream
    (the timeouts differ); otherwise it is forwarded without being decoded. A body the proxy
    decodes is held to the same limits as the Ollama routes' (REQUEST_MAX_VALUES before
    decoding, then the arrays' counts), a 400 in OpenAI's shape naming ``param``."""
    route_by_model = bool(ctx.model_map) or ctx.backends.multi
    if not route_by_model and b'"stream"' not in body:
        return None, None, False
    check_values(body, ctx.limits.values)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        return None, None, False
    check_openai(obj, ctx.limits)
    stream = obj.get("stream") is True
    model = obj.get("model")
    if route_by_model and isinstance(model, str):
        return model, obj, stream
    return None, None, stream


def _for_route(
    body: bytes, obj: dict[str, Any] | None, route: Route, asked: dict[str, Any] | None = None
) -> bytes:
    """The body for ``route``: as sent, or with the route's model id (``obj``: the decoded body
    when the model chose the route); ``asked``: the body with the usage asked for, sent where
    the route's profile takes ``stream_options``."""
    if asked is not None and route.policy.profile.stream_usage:
        return _encode(asked if obj is None else {**asked, "model": route.model})
    if obj is None or obj["model"] == route.model:
        return body
    return _encode({**obj, "model": route.model})


def _encode(obj: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        # orjson reads 1,024 levels of nesting but writes 254: deeper cannot be re-encoded.
        raise BadRequest("request nested too deeply (at most 254 levels)") from None


def _ask_usage(body: bytes, obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stream's body with ``stream_options.include_usage`` (so that its tokens can be counted),
    if the client did not ask for it; None if it did, or if its ``stream_options`` is not an
    object (left for the backend to refuse, as sent). ``obj``: the body, if decoded already
    (``_inspect`` checked it either way)."""
    decoded = obj if obj is not None else orjson.loads(body)
    if not isinstance(decoded, dict):
        return None
    options = decoded.get("stream_options")
    if options is None:
        options = {}
    if not isinstance(options, dict) or options.get("include_usage") is True:
        return None
    return {**decoded, "stream_options": {**options, "include_usage": True}}


def _count_stream(ctx: Context, rec: AccessRecord, tap: UsageTap) -> None:
    ctx.count(rec, tap.usage, streamed=tap.chars)


def _usage_of(body: bytes) -> Any:
    """A whole answer's ``usage`` (None if it has none, or is not JSON)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return obj.get("usage") if isinstance(obj, dict) else None


def model_path(model: str) -> str:
    """``/models/<id>`` for the backend. The id comes from the client's URL: it may contain
    ``/`` (OpenRouter's ``openai/gpt-4o``) but never a ``.`` or ``..`` segment, ``?``, ``#``,
    ``%``, ``\\`` or ``;``, which would let it reach another backend path with the proxy's key
    (``/v1/models/../files``; ``..;/`` where ``;`` parameters are stripped), nor more than
    :data:`MAX_ID` characters. Raises BadRequest for those."""
    segments = model.split("/")
    if (
        len(model) > MAX_ID
        or any(seg in ("", ".", "..") for seg in segments)
        or not model.isprintable()
        or not _UNSAFE_IN_ID.isdisjoint(model)
    ):
        raise BadRequest(
            f"invalid model id: at most {MAX_ID} characters; empty, '.' or '..' path segments and "
            "the characters ? # % \\ ; are not allowed"
        )
    return "/models/" + quote(model, safe="/:@+")


def _headers(headers: Mapping[str, str], redact: Callable[[str], str]) -> dict[str, str]:
    """The backend's headers worth relaying, redacted like its body (a backend may quote the key
    it was sent in a header too). Only ASCII values: HTTP header values are Latin-1 at most
    (Starlette encodes them so), and these headers' real values are ASCII."""
    return {
        k: redact(v)
        for k, v in headers.items()
        if k.lower().startswith(_KEEP_HEADERS) and v.isascii() and v.isprintable()
    }


async def _forward(request: Request, method: str, path: str, model: str | None = None) -> Response:
    ctx = get_context(request)
    rec = record(request.scope)
    body: bytes | None = None
    obj: dict[str, Any] | None = None
    stream = False
    if method == "POST":
        body = await read_body(request, ctx.settings.request_max_size)
        model, obj, stream = _inspect(ctx, body)
    if model is None:
        routes: tuple[Route, ...] = (ctx.backends.default_route,)
    else:
        resolved = await ctx.backends.resolve(model)
        ctx.label(rec, resolved)
        routes = resolved.routes
    budgets = ctx.budgets
    asked = None
    if budgets is not None and stream and body is not None and path in _STREAM_USAGE:
        asked = _ask_usage(body, obj)
    attempts = tuple(
        Attempt(
            route,
            path if method == "POST" or model is None else model_path(route.model),
            None if body is None else _for_route(body, obj, route, asked),
        )
        for route in routes
    )
    p = Plan(method, attempts, stream=stream, relay=True, model=model)
    async with ctx.held() as owner:
        reply = await ctx.backends.execute(p, owner, rec)
        if isinstance(reply, EventStream):
            tap = None
            if budgets is not None and method == "POST":
                tap = UsageTap(strip=asked is not None, measure=output_chars)
                owner.callback(_count_stream, ctx, rec, tap)  # however the stream ends
            return sse_relay(
                reply, owner, ctx.renderer, rec, _headers(reply.headers, ctx.renderer.redact), tap
            )
    if budgets is not None and method == "POST" and reply.status < 300:
        usage = _usage_of(reply.body) if b'"usage"' in reply.body else None
        ctx.count(rec, usage, answer=reply.body)  # its bytes: decoded only for an estimate
    media_type = reply.headers.get("content-type", "")
    if not (media_type.isascii() and media_type.isprintable()):
        media_type = reply.content_type or "application/json"
    return Response(
        ctx.renderer.redact.bytes(reply.body),  # a backend may quote the key it was sent
        status_code=reply.status,
        media_type=media_type,
        headers=_headers(reply.headers, ctx.renderer.redact),
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


@router.get_and_head(
    "/v1/models",
    operation_id="openai_models",
    summary="OpenAI model list (aliases applied)",
)
async def models(request: Request) -> Response:
    ctx = get_context(request)
    if not ctx.model_map and not ctx.backends.multi:
        return await _forward(request, "GET", "/models")
    return json_response(openai_models(await ctx.backends.models(), ctx.model_map))


@router.get_and_head(
    "/v1/models/{model:path}",
    operation_id="openai_model",
    summary="One OpenAI model (forwarded)",
)
async def model(request: Request) -> Response:
    model = request.path_params["model"]
    model_path(model)  # refuse a hostile id before anything else
    return await _forward(request, "GET", "/models", model)
