"""The SERVER span of each request (tracing.py), as the outermost pure ASGI middleware.

Installed by the app only when tracing is on (else the app is built as if this module did not
exist). Outside :class:`~ollama_openai_bridge.middleware.RequestContextMiddleware`, so that the
access line -- written there when the response ends -- is inside the span and carries its trace
id, and so that the span ends after the response's last byte: a stream's end, however it ended
(finished, failed, cut by the server, the client gone). What the handlers learnt of the request
(model, upstream, tokens, time to first token, error) is read from its
:class:`~ollama_openai_bridge.access.AccessRecord` then.
"""

from __future__ import annotations

import re
from collections.abc import Collection

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ollama_openai_bridge.access import SCOPE_KEY, AccessRecord
from ollama_openai_bridge.errors import echo
from ollama_openai_bridge.logs import TRACE_ID
from ollama_openai_bridge.tracing import CURRENT, PREFIX, Request, Tracing

# gen_ai.operation.name of each inference route the proxy serves (the conventions' values).
OPERATIONS = {
    "/api/chat": "chat",
    "/api/generate": "text_completion",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "chat",
    "/v1/messages": "chat",
}
log = structlog.get_logger("ollama_openai_bridge.tracing")

# W3C Trace Context limits, as OpenTelemetry's propagator applies them
# (trace/propagation/tracecontext.py, trace/span.py): past them it logs a warning for each
# request -- one log line per request a client could produce (issue #20's review, L9) -- so
# what it would refuse is dropped here first.
TRACEPARENT_MAX = 512
TRACESTATE_MAX = 8192
TRACESTATE_MEMBERS = 32
# A tracestate list-member (W3C Trace Context, "tracestate Header Field Values"): a key, simple
# or tenant@system, then "=" and up to 256 printable characters other than "," and "=".
_MEMBER = re.compile(
    rb"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    rb"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)


def trace_context(headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, str], str | None]:
    """The client's W3C ``traceparent`` and ``tracestate`` to continue (ASGI raw headers in),
    and why part of it was dropped (None if nothing was). Dropped: every ``traceparent`` when
    there are several (W3C Trace Context: a repeated traceparent is invalid, the request starts
    a trace) or it is over 512 characters, and with it the ``tracestate``; a ``tracestate`` that
    is not a valid list (over 8192 characters, over 32 members, a member not ``key=value``, a
    key twice), keeping the ``traceparent``. Repeated ``tracestate`` fields are one list
    (RFC 9110 5.3)."""
    parents = [value for name, value in headers if name == b"traceparent"]
    if not parents:
        return {}, None
    if len(parents) > 1:
        return {}, "several traceparent headers"
    if len(parents[0]) > TRACEPARENT_MAX:
        return {}, "traceparent too long"
    carrier = {"traceparent": parents[0].decode("latin-1")}
    states = [value for name, value in headers if name == b"tracestate"]
    if not states:
        return carrier, None
    joined = b",".join(states)
    members = [m.strip(b" \t") for m in joined.split(b",")]
    members = [m for m in members if m]
    keys = [m.partition(b"=")[0] for m in members]
    if (
        len(joined) > TRACESTATE_MAX
        or len(members) > TRACESTATE_MEMBERS
        or len(set(keys)) != len(keys)
        or not all(_MEMBER.fullmatch(m) for m in members)
    ):
        return carrier, "invalid tracestate"
    carrier["tracestate"] = joined.decode("latin-1")
    return carrier, None


class TraceRequests:
    """One SERVER span per HTTP request; ``endpoints``: the app's routes, named as
    ``http.route`` (any other path is not, so a client's paths do not make span names)."""

    def __init__(self, app: ASGIApp, tracing: Tracing, endpoints: Collection[str]) -> None:
        self.app = app
        self.tracing = tracing
        self.endpoints = frozenset(endpoints)
        self._told = False  # a dropped trace context is logged once, at DEBUG (trace_context)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracing = self.tracing
        carrier, dropped = trace_context(scope["headers"])
        if dropped is not None and not self._told:
            self._told = True  # once: a client could otherwise write a line per request
            log.debug("trace_context_dropped", reason=dropped, detail="logged once")
        method, path = scope["method"], scope["path"]
        route = path if path in self.endpoints else None
        span = tracing.start(
            f"{method} {route}" if route else method,
            "server",
            tracing.extract(carrier) if carrier else None,
            http__request__method=method,
            url__path=echo(path),
            url__scheme=scope.get("scheme", "http"),
            http__route=route,
            gen_ai__operation__name=OPERATIONS.get(path),
        )
        context = span.get_span_context()
        request = Request(span, f"{context.trace_id:032x}")
        token = tracing.attach(span)
        current = CURRENT.set(request)
        ids = TRACE_ID.set((request.trace_id, f"{context.span_id:016x}"))
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            # A bug below the last line of defence, or the server's cancellation: its class
            # only (a message may quote what a client or backend sent).
            tracing.error(span, type(exc).__name__)
            raise
        finally:
            rec = scope.get(SCOPE_KEY)
            if rec is not None:
                self._describe(request, rec, status, path)
            if status:
                span.set_attribute("http.response.status_code", status)
            span.end()
            TRACE_ID.reset(ids)
            CURRENT.reset(current)
            tracing.detach(token)

    def _describe(self, request: Request, rec: AccessRecord, status: int, path: str) -> None:
        """The request's facts on its span, from its access record; the span is named after
        the operation and the client's model once a handler resolved one."""
        span, tracing = request.span, self.tracing
        operation = OPERATIONS.get(path)
        if rec.model is not None:
            span.set_attribute("gen_ai.request.model", rec.model)
            if operation:
                span.update_name(f"{operation} {rec.model}")
        if rec.upstream is not None:
            span.set_attribute(PREFIX + "upstream", rec.upstream)
        # The record's counts when the handler read them; else what the upstream's span read
        # from a relayed whole answer (tracing on only: nothing parsed for it when off).
        prompt, completion = request.usage or (None, None)
        if rec.prompt_tokens is not None or rec.completion_tokens is not None:
            prompt, completion = rec.prompt_tokens, rec.completion_tokens
        if isinstance(prompt, int):
            span.set_attribute("gen_ai.usage.input_tokens", prompt)
        if isinstance(completion, int):
            span.set_attribute("gen_ai.usage.output_tokens", completion)
        if rec.ttft_ms is not None:  # the conventions' unit: seconds
            span.set_attribute("gen_ai.response.time_to_first_chunk", rec.ttft_ms / 1000)
        if request.finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", request.finish_reasons)
        # A stream that ended in an error line went out as 200; the record has its real status.
        failed = rec.error_status if rec.error_status and status in (0, 200) else status
        if failed >= 400:
            # HTTP server spans: a 4xx is the client's, not a failure of this server
            # (semantic conventions, http-spans.md "Status"), but its error.type is kept.
            if failed >= 500:
                tracing.error(span, str(failed))  # never rec.error: see Tracing.error
            else:
                span.set_attribute("error.type", str(failed))
