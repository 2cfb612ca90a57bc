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

from collections.abc import Collection

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
_CARRIED = (b"traceparent", b"tracestate")  # W3C Trace Context, the only headers read


class TraceRequests:
    """One SERVER span per HTTP request; ``endpoints``: the app's routes, named as
    ``http.route`` (any other path is not, so a client's paths do not make span names)."""

    def __init__(self, app: ASGIApp, tracing: Tracing, endpoints: Collection[str]) -> None:
        self.app = app
        self.tracing = tracing
        self.endpoints = frozenset(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracing = self.tracing
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _CARRIED
        }
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
        if rec.prompt_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", rec.prompt_tokens)
        if rec.completion_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", rec.completion_tokens)
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
                tracing.error(span, str(failed), rec.error)
            else:
                span.set_attribute("error.type", str(failed))
