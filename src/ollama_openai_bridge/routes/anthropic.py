"""``/v1/messages`` and ``/v1/messages/count_tokens``: the Anthropic Messages API (issue #17).

Claude Code (``ollama launch claude``: ANTHROPIC_BASE_URL at the server, ANTHROPIC_AUTH_TOKEN
``ollama``) and the anthropic SDKs call ``POST /v1/messages?beta=true``, which Ollama serves
since v0.14.0; the query is Anthropic's beta marker and changes nothing here. Each request takes
``/api/chat``'s path -- parse, resolve once, plan with the pure translator
(translate/anthropic.py), execute, render (translate/anthropic_answer.py) -- to the backend's
``/v1/chat/completions``, and every error is Anthropic's shape (render.py). Claude Code sends
``Accept: application/json`` even when it streams: ``stream: true`` is answered with the event
stream whatever Accept says, as Anthropic and Ollama do.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ollama_openai_bridge import schemas
from ollama_openai_bridge.access import AccessRecord, record
from ollama_openai_bridge.backends import Resolved
from ollama_openai_bridge.context import Context
from ollama_openai_bridge.errors import SHAPE_ERRORS, ModelNotFound, malformed, translating_request
from ollama_openai_bridge.exchange import SSE, Plan, Route
from ollama_openai_bridge.http import json_response
from ollama_openai_bridge.limits import check_chat, check_messages
from ollama_openai_bridge.render import Dialect
from ollama_openai_bridge.routes import Turn, fetch, parse_body, plan, stream_reply
from ollama_openai_bridge.routing import Router
from ollama_openai_bridge.translate.chat import CHAT_PATH, UpstreamRequest
from ollama_openai_bridge.translate.keepalive import DEFAULT_KEEP_ALIVE
from ollama_openai_bridge.translate.normalise import ToolCall

if TYPE_CHECKING:
    from ollama_openai_bridge.translate.anthropic import Converted
    from ollama_openai_bridge.translate.anthropic_answer import AnthropicStream

# The Messages API's translators (translate/anthropic.py, anthropic_answer.py) are imported by
# the first request that needs them: a worker whose clients speak only Ollama's API never holds
# them (issue #18; tests/integration/test_lazy_imports.py). Imported by name from a module, an
# import statement after the first costs a dictionary lookup, no Python call.

router = Router()
ROUTE = "/v1/messages"
UNKNOWN = "fields the Messages API does not have; ignored"


@router.post(
    ROUTE,
    operation_id="anthropic_messages",
    summary="Anthropic Messages (SSE stream if stream is true)",
)
async def messages(request: Request) -> Response:
    from ollama_openai_bridge.translate.anthropic import (  # noqa: PLC0415 -- see above
        estimate_tokens,
        messages_request,
        read_request,
    )
    from ollama_openai_bridge.translate.anthropic_answer import (  # noqa: PLC0415
        AnthropicStream,
        message_id,
    )

    start = time.perf_counter_ns()
    ctx, req = await parse_body(request, schemas.MESSAGES, check_messages)
    check_messages(req, ctx.limits)
    with translating_request():
        conv = read_request(req)
    check_chat(conv.chat, ctx.limits)  # images and tool calls, counted on the translation
    model = req["model"]
    resolved = await ctx.backends.resolve(model)
    # Bounded per request, whatever the body holds (logs.WarnOnce)
    ctx.warn_once.each("request_field_ignored", conv.ignored, route=ROUTE)
    if conv.unknown:
        ctx.warn_once.names("request_field_unknown", conv.unknown, route=ROUTE, detail=UNKNOWN)
    rec = record(request.scope)
    # The turn in progress replays calls the backend made: give back what the client dropped
    # (a Gemini thought signature: Claude Code keeps the ids, not provider data).
    turn = await Turn.of(ctx, rec.caller, conv.chat.get("messages") or ())

    def build(route: Route) -> UpstreamRequest:
        return messages_request(conv, ctx.target(model, route), route.policy, turn.kept(route))

    stream = req.get("stream") is True
    with translating_request():
        p = plan(ctx, resolved, CHAT_PATH, build, stream=stream, source=conv.chat)
    ctx.label(rec, resolved)  # labels the request even if the backend call fails
    # Any upstream of the chain may answer: split tags if one of them may send them.
    think_tags = any(route.policy.profile.think_tags for route in resolved.routes)
    # input_tokens when the backend reports no usage, streamed or not (the same estimate as
    # count_tokens: Claude Code reads it to size its context)
    estimate = estimate_tokens(req)
    if not stream:
        return await _whole(ctx, rec, p, conv, (model, estimate), think_tags, (turn, resolved))
    tr = AnthropicStream(
        model,
        message_id(),
        think=conv.think,
        stops=conv.stops,
        estimate=estimate,
        think_tags=think_tags,
    )
    return await _stream(ctx, rec, p, tr, start, model, (turn, resolved))


async def _whole(
    ctx: Context,
    rec: AccessRecord,
    p: Plan,
    conv: Converted,
    asked: tuple[str, int],
    think_tags: bool,
    carry: tuple[Turn, Resolved],
) -> Response:
    from ollama_openai_bridge.translate.anthropic_answer import (  # noqa: PLC0415 -- see above
        message_id,
        message_response,
    )

    model, estimate = asked  # the model asked for, and the input token estimate
    body = await fetch(ctx, rec, p)
    notes: list[str] = []
    adapted: list[str] = []
    made: list[tuple[ToolCall, Any]] = []
    try:
        out = message_response(
            body,
            model,
            msg_id=message_id(),
            think=conv.think,
            stops=conv.stops,
            notes=notes,
            think_tags=think_tags,
            adapted=adapted,
            made=made,
            estimate=estimate,
        )
        used = body.get("usage")
    except SHAPE_ERRORS:
        raise malformed("an answer that is not a completion", body) from None
    ctx.notes(notes, model)
    ctx.adapted(adapted, model)
    ctx.recent.touch(model, DEFAULT_KEEP_ALIVE)  # /api/ps lists the models answered
    ctx.count(rec, used, answer=body)
    turn, resolved = carry
    turn.remember(ctx, rec, resolved, made)
    return json_response(out, redact=ctx.renderer.redact.bytes)


async def _stream(
    ctx: Context,
    rec: AccessRecord,
    p: Plan,
    tr: AnthropicStream,
    start: int,
    model: str,
    carry: tuple[Turn, Resolved],
) -> Response:
    return await stream_reply(
        ctx,
        rec,
        p,
        tr,
        model=model,
        keep_alive=DEFAULT_KEEP_ALIVE,
        start=start,
        carry=carry,
        media_type=SSE,
        dialect=Dialect.ANTHROPIC,
    )


@router.post(
    "/v1/messages/count_tokens",
    operation_id="anthropic_count_tokens",
    summary="Anthropic token count (an estimate)",
)
async def count_tokens(request: Request) -> Response:
    """An estimate (translate/anthropic.py ``estimate_tokens``): OpenAI-compatible backends
    have no counting endpoint. The body is read as a message's would be, so what a message
    would refuse is refused here too (400); a model no list knows is Anthropic's 404."""
    from ollama_openai_bridge.translate.anthropic import (  # noqa: PLC0415 -- see above
        estimate_tokens,
        read_request,
    )

    ctx, req = await parse_body(request, schemas.COUNT_TOKENS, check_messages)
    check_messages(req, ctx.limits)
    with translating_request():
        read_request({**req, "max_tokens": 1})
    resolved = await ctx.backends.resolve(req["model"])
    ctx.label(record(request.scope), resolved)
    if not resolved.known and ctx.backends.known_ids is not None:
        raise ModelNotFound(req["model"])
    with translating_request():
        answer: dict[str, Any] = {"input_tokens": estimate_tokens(req)}
    return json_response(answer)
