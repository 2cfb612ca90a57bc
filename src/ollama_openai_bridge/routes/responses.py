"""``/v1/responses``: the OpenAI Responses API, translated to one chat completion (issue #17).

Not relayed like the other ``/v1`` routes: backends that speak chat completions rarely speak
Responses, and OpenAI's Codex CLI (``--oss``) and Copilot CLI's ``responses`` wire API need it
from a local Ollama (in Ollama since v0.13.3). Stateless, as Ollama's is: every request carries
the whole conversation; ``previous_response_id`` is refused (translate/responses.py). Errors
before the answer starts are OpenAI's error object with the real status; during a stream, the
Responses ``error`` and ``response.failed`` events (render.py).
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ollama_openai_bridge import schemas
from ollama_openai_bridge.access import AccessRecord, record
from ollama_openai_bridge.backends import Resolved
from ollama_openai_bridge.context import Context
from ollama_openai_bridge.errors import SHAPE_ERRORS, BadRequest, malformed, translating_request
from ollama_openai_bridge.exchange import SSE, Plan, Route
from ollama_openai_bridge.http import json_response
from ollama_openai_bridge.limits import check_chat, check_responses
from ollama_openai_bridge.render import Dialect
from ollama_openai_bridge.routes import Turn, fetch, parse_body, plan, stream_reply
from ollama_openai_bridge.routing import Router
from ollama_openai_bridge.translate.chat import CHAT_PATH, UpstreamRequest
from ollama_openai_bridge.translate.keepalive import DEFAULT_KEEP_ALIVE
from ollama_openai_bridge.translate.normalise import ToolCall

if TYPE_CHECKING:
    from ollama_openai_bridge.translate.response_items import Frame

# The Responses API's translators (translate/responses.py, response_items.py, response_tools.py,
# responses_stream.py) are imported by the first request that needs them: a worker whose clients
# speak only Ollama's API never holds them (issue #18; tests/integration/test_lazy_imports.py).
# Imported by name from a module, an import statement after the first costs a dictionary
# lookup, no Python call.

router = Router()


@router.post(
    "/v1/responses",
    operation_id="openai_responses",
    summary="OpenAI Responses (translated to chat completions; stateless)",
)
async def responses(request: Request) -> Response:
    from ollama_openai_bridge.translate.response_items import Frame  # noqa: PLC0415 -- above
    from ollama_openai_bridge.translate.responses import (  # noqa: PLC0415 -- see above
        chat_request,
        read_request,
    )

    start = time.perf_counter_ns()
    ctx, req = await parse_body(request, schemas.RESPONSES, check_responses)
    model = req.get("model")
    if not model:
        raise BadRequest("Missing required parameter: 'model'.", param="model")  # OpenAI's words
    check_responses(req, ctx.limits)
    with translating_request():
        parsed = read_request(req)
        # The counts a chat is held to, on the history as the backend gets it: one assistant
        # turn's function_call items are one message's tool calls (REQUEST_MAX_TOOLS each).
        check_chat(parsed.chat, ctx.limits, parsed.where)
        try:  # the Response repeats the request's settings: they must be encodable JSON
            orjson.dumps(parsed.echo)
        except orjson.JSONEncodeError:
            schemas.widen(parsed.echo)  # integers beyond 64 bits, as floats (or 400)
    if parsed.unknown:  # bounded per request, whatever the body holds (logs.WarnOnce)
        ctx.warn_once.names(
            "request_field_unknown",
            parsed.unknown,
            route="/v1/responses",
            detail="fields the Responses API does not have; ignored",
        )
    resolved = await ctx.backends.resolve(model)
    rec = record(request.scope)
    turn = await Turn.of(ctx, rec.caller, parsed.messages)

    def build(route: Route) -> UpstreamRequest:
        return chat_request(parsed, ctx.target(model, route), route.policy, turn.kept(route))

    with translating_request():
        p = plan(ctx, resolved, CHAT_PATH, build, stream=parsed.stream, source=req)
    frame = Frame(
        "resp_" + secrets.token_hex(16),
        int(time.time()),
        model,
        parsed.echo,
        parsed.names.by_flat,
        reasoning=parsed.reasoning,
        # Any upstream of the chain may answer: split tags if one of them may send them.
        think_tags=any(r.policy.profile.think_tags for r in resolved.routes),
    )
    ctx.label(rec, resolved)  # labels the request even if the backend call fails
    if not parsed.stream:
        return await _whole(ctx, rec, p, frame, resolved, turn)
    return await _stream(ctx, rec, p, frame, resolved, start, turn)


async def _whole(
    ctx: Context, rec: AccessRecord, p: Plan, frame: Frame, resolved: Resolved, turn: Turn
) -> Response:
    from ollama_openai_bridge.translate.response_items import (  # noqa: PLC0415 -- see above
        response_object,
    )

    body = await fetch(ctx, rec, p)
    adapted: list[str] = []
    made: list[tuple[ToolCall, Any]] = []
    try:
        out = response_object(body, frame, adapted=adapted, kept=made)
        usage = body.get("usage")
    except SHAPE_ERRORS:
        raise malformed("an answer that is not a completion", body) from None
    ctx.adapted(adapted, frame.model)
    ctx.recent.touch(frame.model, DEFAULT_KEEP_ALIVE)
    ctx.count(rec, usage, answer=body)
    turn.remember(ctx, rec, resolved, made)
    return json_response(out, redact=ctx.renderer.redact.bytes)


async def _stream(
    ctx: Context,
    rec: AccessRecord,
    p: Plan,
    frame: Frame,
    resolved: Resolved,
    start: int,
    turn: Turn,
) -> Response:
    from ollama_openai_bridge.translate.responses_stream import (  # noqa: PLC0415 -- above
        ResponsesStream,
    )

    tr = ResponsesStream(frame)
    return await stream_reply(
        ctx,
        rec,
        p,
        tr,
        model=frame.model,
        keep_alive=DEFAULT_KEEP_ALIVE,
        start=start,
        carry=(turn, resolved),
        media_type=SSE,
        dialect=Dialect.RESPONSES,
        snapshot=tr.snapshot,
    )
