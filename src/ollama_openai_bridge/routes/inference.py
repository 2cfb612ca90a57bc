"""``/api/chat`` and ``/api/generate``: one OpenAI (chat) completion each, streamed or not."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import Response

from ollama_openai_bridge import schemas
from ollama_openai_bridge.access import record
from ollama_openai_bridge.backends import Resolved
from ollama_openai_bridge.context import Context
from ollama_openai_bridge.errors import (
    SHAPE_ERRORS,
    BadRequest,
    ModelNotFound,
    UpstreamEndpointNotFound,
    malformed,
)
from ollama_openai_bridge.exchange import Plan, Route
from ollama_openai_bridge.http import json_response
from ollama_openai_bridge.limits import check_chat, check_generate
from ollama_openai_bridge.routes import Turn, fetch_timed, parse_body, plan, stream_reply
from ollama_openai_bridge.routing import Router
from ollama_openai_bridge.translate.answer import chat_response, generate_response
from ollama_openai_bridge.translate.chat import (
    UpstreamRequest,
    chat_request,
    completion_request,
    generate_request,
    uses_completions,
)
from ollama_openai_bridge.translate.conversation import Conversation
from ollama_openai_bridge.translate.keepalive import (
    DEFAULT_KEEP_ALIVE,
    load_response,
    parse_keep_alive,
)
from ollama_openai_bridge.translate.normalise import ToolCall
from ollama_openai_bridge.translate.stream import StreamTranslator

router = Router()
log = structlog.get_logger("ollama_openai_bridge")
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
    think_tags: bool = False  # the backend may leave reasoning in content as <think>...</think>
    # generate: (answer text, notes) -> the context to return, the exchange appended
    context: Callable[[str, list[str]], list[int]] | None = None
    logprobs: bool = False  # the client asked for log probabilities


def _recorder(
    ctx: Context, req: Mapping[str, Any], history: Conversation
) -> Callable[[str, list[str]], list[int]]:
    """How a generate answer's ``context`` is made: the conversation sent back, then this
    exchange (its prompt text: images are not carried), within REQUEST_MAX_CONTEXT."""
    system, prompt = req.get("system"), req.get("prompt") or ""

    def record(answer: str, notes: list[str]) -> list[int]:
        return ctx.conversations.encode(history.then(system, prompt, answer), notes)

    return record


@router.post(
    "/api/chat",
    operation_id="chat",
    summary="Chat (NDJSON stream unless stream is false)",
)
async def chat(request: Request) -> Response:
    start = time.perf_counter_ns()
    ctx, req = await parse_body(request, schemas.CHAT, check_chat)
    model = req.get("model")
    if not model:
        raise BadRequest("model is required")
    check_chat(req, ctx.limits)
    schemas.check_fields(req)
    keep_alive = parse_keep_alive(req.get("keep_alive"))
    if not req.get("messages"):
        return await _load(ctx, request, model, keep_alive, generate=False)
    resolved = await ctx.backends.resolve(model)
    answer = _answer(req, model, start, keep_alive, resolved, generate=False)
    # The turn in progress replays calls the backend made: give back what the client dropped.
    turn = await Turn.of(ctx, record(request.scope).caller, req.get("messages") or ())

    def build(route: Route) -> UpstreamRequest:
        return chat_request(req, ctx.target(model, route), route.policy, turn.kept(route))

    p = plan(ctx, resolved, CHAT_COMPLETIONS, build, stream=answer.stream, source=req)
    return await _complete(ctx, request, p, answer, resolved, turn)


@router.post(
    "/api/generate",
    operation_id="generate",
    summary="Generate from a prompt (NDJSON stream unless stream is false)",
)
async def generate(request: Request) -> Response:
    start = time.perf_counter_ns()
    ctx, req = await parse_body(request, schemas.GENERATE, check_generate)
    model = req.get("model")
    if not model:
        raise ModelNotFound("")  # Ollama answers 404 "model '' not found" here, not 400
    check_generate(req, ctx.limits)
    schemas.check_fields(req)
    keep_alive = parse_keep_alive(req.get("keep_alive"))
    if req.get("raw") and (req.get("system") or req.get("template") or req.get("context")):
        raise BadRequest("raw mode does not support template, system, or context")
    if not req.get("prompt") and not req.get("images") and not req.get("suffix"):
        return await _load(ctx, request, model, keep_alive, generate=True)
    history = ctx.conversations.decode(req.get("context"))  # 400 unless this proxy issued it
    resolved = await ctx.backends.resolve(model)
    answer = _answer(req, model, start, keep_alive, resolved, generate=True)
    if not req.get("raw"):  # Ollama returns no context in raw mode (routes.go)
        answer = replace(answer, context=_recorder(ctx, req, history))
    if uses_completions(req):

        def build_completion(route: Route) -> UpstreamRequest:
            return completion_request(req, ctx.target(model, route), route.policy)

        p = plan(ctx, resolved, COMPLETIONS, build_completion, stream=answer.stream, source=req)
        try:
            return await _complete(ctx, request, p, answer, resolved)
        except UpstreamEndpointNotFound as exc:
            # A raw prompt can still go to chat if the backend has no /v1/completions; a suffix
            # (fill-in-the-middle) cannot.
            if req.get("suffix"):
                raise BadRequest(
                    "suffix (fill-in-the-middle) needs the backend's /v1/completions, which it "
                    f"does not offer for this model: {exc.detail}"
                ) from None
            ctx.notes(
                ["backend has no /v1/completions for this model; raw prompt sent as chat"], model
            )

    def build(route: Route) -> UpstreamRequest:
        return generate_request(req, ctx.target(model, route), route.policy, history)

    p = plan(ctx, resolved, CHAT_COMPLETIONS, build, stream=answer.stream, source=req)
    return await _complete(ctx, request, p, answer, resolved)


async def _load(
    ctx: Context, request: Request, model: str, keep_alive: float | None, *, generate: bool
) -> Response:
    """A request without messages (chat) or prompt (generate): Ollama loads the model, or
    unloads it with ``keep_alive: 0`` (routes.go, ChatHandler and GenerateHandler), and answers
    without inference. Nothing loads here, but the model is then listed by ``/api/ps`` until its
    keep_alive runs out, or no longer (unload), as Ollama lists a loaded runner. A model the
    lists do not know is Ollama's 404, as for any request it cannot schedule."""
    resolved = await ctx.backends.resolve(model)
    ctx.label(record(request.scope), resolved)
    if not resolved.known and ctx.backends.known_ids is not None:
        raise ModelNotFound(model)
    ctx.recent.touch(model, _ttl(keep_alive))
    return json_response(load_response(model, keep_alive, time.time_ns(), generate=generate))


def _answer(
    req: Mapping[str, Any],
    model: str,
    start: int,
    keep_alive: float | None,
    resolved: Resolved,
    *,
    generate: bool,
) -> Answer:
    # Any upstream of the chain may answer: split tags if one of them may send them.
    think_tags = False
    for route in resolved.routes:  # a loop, not any(<genexpr>): this runs per request
        if route.policy.profile.think_tags:
            think_tags = True
            break
    return Answer(
        model,
        think=req.get("think") is not False,
        start=start,
        keep_alive=_ttl(keep_alive),
        generate=generate,
        stream=req.get("stream") is not False,  # Ollama streams unless told not to
        think_tags=think_tags,
        logprobs=bool(req.get("logprobs")),
    )


def _ttl(keep_alive: float | None) -> float:
    return DEFAULT_KEEP_ALIVE if keep_alive is None else keep_alive


async def _complete(
    ctx: Context,
    request: Request,
    p: Plan,
    answer: Answer,
    resolved: Resolved,
    turn: Turn | None = None,
) -> Response:
    """Run ``p``; answer in the shape of Ollama's chat or generate, streamed or not."""
    model = answer.model
    rec = record(request.scope)
    ctx.label(rec, resolved)  # labels the request even if the backend call fails
    if not answer.stream:
        body, sent = await fetch_timed(ctx, rec, p)
        now, total = time.time_ns(), time.perf_counter_ns() - answer.start
        load = max(sent - answer.start, 1)  # Ollama's time to load the model: never 0
        notes: list[str] = []
        adapted: list[str] = []
        ctx_of = answer.context
        made: list[tuple[ToolCall, dict[str, Any]]] = []
        try:  # errors.reading(), inline: a context manager per request is measurable here
            if answer.generate:
                out = generate_response(
                    body,
                    model,
                    now_ns=now,
                    total_ns=total,
                    think=answer.think,
                    think_tags=answer.think_tags,
                    adapted=adapted,
                    load_ns=load,
                    context_of=None if ctx_of is None else (lambda text: ctx_of(text, notes)),
                    logprobs=answer.logprobs,
                )
            else:
                out = chat_response(
                    body,
                    model,
                    now_ns=now,
                    total_ns=total,
                    think=answer.think,
                    notes=notes,
                    think_tags=answer.think_tags,
                    adapted=adapted,
                    made=made,
                    load_ns=load,
                    logprobs=answer.logprobs,
                )
            usage = body.get("usage")
        except SHAPE_ERRORS:
            raise malformed("an answer that is not a completion", body) from None
        ctx.notes(notes, model)
        ctx.adapted(adapted, model)
        ctx.recent.touch(model, answer.keep_alive)
        ctx.count(rec, usage, answer=body)
        if made and turn is not None:
            turn.remember(ctx, rec, resolved, made)
        return json_response(out, redact=ctx.renderer.redact.bytes)
    tr = StreamTranslator(
        model,
        generate=answer.generate,
        think=answer.think,
        start_ns=answer.start,
        think_tags=answer.think_tags,
        context_of=answer.context,
        logprobs=answer.logprobs,
    )
    return await stream_reply(
        ctx,
        rec,
        p,
        tr,
        model=model,
        keep_alive=answer.keep_alive,
        start=answer.start,
        carry=None if turn is None else (turn, resolved),
    )
