"""OpenTelemetry traces, following the GenAI semantic conventions (issue #20).

Off by default, and then free: nothing here is imported by the request path, the OpenTelemetry
packages (the ``otel`` extra) are not imported at all, and the app is built exactly as without
this module -- the hooks elsewhere are a ``tracing is not None`` test on an object of the app.
On when the standard variables ask for it (:func:`wanted`): ``OTEL_TRACES_EXPORTER=otlp``, or
an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``);
``OTEL_SDK_DISABLED=true`` wins over both. :func:`check` validates them at start.

The spans of one request (docs/DEPLOYMENT.md, "Tracing"):

* a SERVER span per request (:class:`~ollama_openai_bridge.tracing_asgi.TraceRequests`), from
  its arrival to its last byte -- a stream's end, however it ends; it continues the client's
  W3C ``traceparent``; named ``{gen_ai.operation.name} {gen_ai.request.model}`` once the model
  is known (else ``{method} {route}``), with the model, the upstream, the token counts, the time
  to first chunk, the finish reasons and the error;
* a CLIENT span per upstream tried (:meth:`Tracing.attempt`: fallbacks are siblings), the GenAI
  inference span of the conventions, covering the upstream's retries and, for a stream, its
  reading to the end (gen-ai-spans.md: "SHOULD cover the duration of the logical operation with
  all retries");
* a CLIENT span per HTTP request sent (:class:`TracedSession`: each retry is one, with
  ``http.request.resend_count``), ending when the answer's head arrives as OpenTelemetry's own
  aiohttp and httpx instrumentations do; its ``traceparent`` goes to the backend.

Never in a span: prompts, completions, keys or headers (the conventions' content capture,
``gen_ai.input.messages`` and the like, is opt-in; this proxy has no such option). Spans are
exported in batches by the SDK's own thread (BatchSpanProcessor), never on the event loop;
:meth:`Tracing.shutdown` flushes them as the app stops, for at most :data:`FLUSH_DEADLINE_S`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog

from ollama_openai_bridge import __version__, tracing_env

log = structlog.get_logger("ollama_openai_bridge.tracing")

SERVICE = "ollama-openai-bridge"  # service.name unless OTEL_SERVICE_NAME says otherwise
EXTRA = 'pip install "ollama-openai-bridge[otel]"'
PREFIX = "ollama_openai_bridge."  # this project's own span attributes
# Longest wait for the last export as the app stops: well inside the Helm chart's 10 s margin
# after SHUTDOWN_GRACE_PERIOD and the preStop pause (templates/deployment.yaml), which the
# closing of the backends, Redis clients and the rest share.
FLUSH_DEADLINE_S = 5.0
# What the extra brings: checked at start, imported only when tracing is on.
_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")

# gen_ai.operation.name by the backend path the proxy calls (every route is translated to one
# of these; /models and the like are no GenAI operation and get an HTTP span only).
OPERATIONS = {
    "/chat/completions": "chat",
    "/completions": "text_completion",
    "/embeddings": "embeddings",
}
# gen_ai.provider.name: the conventions' well-known values where a profile is that provider
# (registry gen-ai.md); any other profile (vllm, llamacpp, ...) by its own name.
PROVIDERS = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "azure-v1": "azure.ai.openai",
    "groq": "groq",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "gemini": "gcp.gemini",
    "anthropic": "anthropic",
    "openrouter": "openrouter",
}


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces: ``OTEL_TRACES_EXPORTER`` names ``otlp``, or
    (unset) an OTLP endpoint is set; never with ``OTEL_SDK_DISABLED=true``. The SDK's own
    default exporter is ``otlp``; here no variable means no tracing (off by default)."""
    if _true(environ.get("OTEL_SDK_DISABLED")):
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if exporters:
        return "otlp" in {e.strip().lower() for e in exporters.split(",")}
    return any(environ.get(name, "").strip() for name in _ENDPOINTS)


def check(environ: Mapping[str, str]) -> str | None:
    """What is wrong with the OTEL_* variables, checked at start (config.load_settings makes it
    a ConfigError), saying what to do; None if nothing is. Wrong: an exporter other than
    ``otlp``/``none``, a protocol other than ``http/protobuf``, an endpoint that is no http(s)
    URL, or traces asked for without the OpenTelemetry packages (then: which extra to
    install), and any other OTEL_* value the SDK would refuse, warn about or fall back from
    (:func:`ollama_openai_bridge.tracing_env.problem`)."""
    if _true(environ.get("OTEL_SDK_DISABLED")):
        return None
    for name in environ.get("OTEL_TRACES_EXPORTER", "").split(","):
        exporter = name.strip().lower()
        if exporter and exporter not in ("otlp", "none"):
            return (
                f"OTEL_TRACES_EXPORTER={exporter}: traces are exported with OTLP over HTTP only "
                "(otlp), or not at all (none)"
            )
    if not wanted(environ):
        return None
    for var in _PROTOCOLS:
        protocol = environ.get(var, "").strip()
        if protocol and protocol != "http/protobuf":
            return (
                f"{var}={protocol}: only http/protobuf is supported (OTLP/HTTP, port 4318 "
                "on the OpenTelemetry collector)"
            )
    for var in _ENDPOINTS:
        endpoint = environ.get(var, "").strip()
        if endpoint and (urlsplit(endpoint).scheme not in ("http", "https")):
            return f"{var}={endpoint}: an http:// or https:// URL is needed"
    missing = [m for m in _MODULES if not _importable(m)]
    if missing:
        return (
            "traces are asked for (OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_*ENDPOINT), but "
            f"the OpenTelemetry packages are not installed ({missing[0]}): {EXTRA}, or unset "
            "those variables (or set OTEL_SDK_DISABLED=true)"
        )
    # Every other variable the SDK reads for traces (sampler, batch, limits, exporter TLS,
    # headers, compression, timeout, resource, propagators): tracing_env.py.
    return tracing_env.problem(environ)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


@dataclass(slots=True)
class Request:
    """One request's tracing state (:data:`CURRENT`): its server span, what its answer said,
    and the upstream attempt under way."""

    span: Any
    trace_id: str
    finish_reasons: list[str] = field(default_factory=list)
    attempt: Attempt | None = None
    # The usage a relayed whole answer reported (Attempt._describe): the handler does not read
    # it when budgets are off, so its access record has none (issue #20's review, L5).
    usage: tuple[Any, Any] | None = None


# The request being traced, set by tracing_asgi.TraceRequests (only when tracing is on).
CURRENT: ContextVar[Request | None] = ContextVar("otel_request", default=None)


class Tracing:
    """One app's tracer: the SDK's provider (a batch processor and the OTLP/HTTP exporter,
    both configured by the standard OTEL_* variables), W3C trace context in and out. Made by
    :func:`start`, only when tracing is on."""

    def __init__(self, otel: Any, provider: Any) -> None:
        self._otel = otel  # the imported modules, see start()
        self.provider = provider
        self.tracer = provider.get_tracer("ollama_openai_bridge", __version__)
        self.propagator = otel.propagator()

    # --- context ------------------------------------------------------------------------------

    def extract(self, carrier: Mapping[str, str]) -> Any:
        """The OpenTelemetry context of a client's ``traceparent``/``tracestate`` (an empty one
        when they are absent or invalid: the request starts a trace)."""
        return self.propagator.extract(carrier)

    def inject(self, span: Any) -> dict[str, str]:
        """``traceparent`` (and ``tracestate``) naming ``span``, for a backend request."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=self._otel.trace.set_span_in_context(span))
        return carrier

    def attach(self, span: Any) -> object:
        """Make ``span`` the current one (its children's parent); returns the token for
        :meth:`detach`."""
        return self._otel.context.attach(self._otel.trace.set_span_in_context(span))

    def detach(self, token: object) -> None:
        """Undo the :meth:`attach` that gave ``token``: the span before it is current again."""
        self._otel.context.detach(token)

    def start(self, name: str, kind: str, parent: Any = None, **attributes: Any) -> Any:
        """A span (``kind``: ``server`` or ``client``), child of ``parent`` (a context) or of
        the current span."""
        kinds = self._otel.trace.SpanKind
        return self.tracer.start_span(
            name,
            context=parent,
            kind=kinds.SERVER if kind == "server" else kinds.CLIENT,
            attributes={k.replace("__", "."): v for k, v in attributes.items() if v is not None},
        )

    def error(self, span: Any, kind: str) -> None:
        """Mark ``span`` failed: ``error.type`` (a status code or a class of failure) and the
        ERROR status, described by that alone (``HTTP 502``, ``UpstreamTimeout``). Never a
        message: a backend's error text can quote the prompt it was sent, and traces often go
        to a third party trusted less than the local logs (issue #20's review, L3)."""
        span.set_attribute("error.type", kind)
        description = f"HTTP {kind}" if kind.isdigit() else kind
        span.set_status(self._otel.trace.Status(self._otel.trace.StatusCode.ERROR, description))

    # --- the GenAI span of one upstream tried -----------------------------------------------------

    def attempt(self, model: str, path: str, upstream: Any, index: int, stream: bool) -> Attempt:
        """The CLIENT span of one upstream of the fallback chain (``index`` 0 is the first),
        made current so the HTTP spans of its retries are its children; end it with
        :meth:`Attempt.failed` or :meth:`Attempt.answered`."""
        operation = OPERATIONS.get(path)
        parts = urlsplit(upstream.base_url)
        attributes: dict[str, Any] = {
            "server.address": parts.hostname,
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
            PREFIX + "upstream": upstream.name,
            PREFIX + "fallback_index": index,
        }
        if operation:  # else no GenAI operation (/models): the span groups its HTTP requests
            attributes["gen_ai.operation.name"] = operation
            attributes["gen_ai.provider.name"] = PROVIDERS.get(
                upstream.profile.name, upstream.profile.name
            )
            attributes["gen_ai.request.model"] = model or None
            attributes["gen_ai.request.stream"] = stream
        name = f"{operation} {model}" if operation and model else f"upstream {upstream.name}"
        span = self.tracer.start_span(
            name,
            kind=self._otel.trace.SpanKind.CLIENT,
            attributes={k: v for k, v in attributes.items() if v is not None},
        )
        attempt = Attempt(self, span, self.attach(span), CURRENT.get())
        if attempt.request is not None:
            attempt.request.attempt = attempt
        return attempt

    def finished(self, reason: str | None) -> None:
        """The answer's finish reason (a translated stream's, as the backend gave it), for the
        request's span and its upstream's."""
        request = CURRENT.get()
        if request is not None and reason and not request.finish_reasons:
            request.finish_reasons.append(reason)

    async def shutdown(self, deadline: float = FLUSH_DEADLINE_S) -> bool:
        """Flush what is batched and stop the exporter, for at most ``deadline`` seconds;
        True if that finished in time. Past it, the spans not yet sent are dropped with one
        warning and the app's stop goes on (issue #20's review, L2: a hung collector held the
        exit 18 s, past the Helm chart's 10 s margin after SHUTDOWN_GRACE_PERIOD).

        The SDK's own bounds do not hold here: BatchProcessor.force_flush ignores its timeout
        (opentelemetry-python #4568), and its shutdown joins the worker for 30 s before the
        exporter's retries (each up to OTEL_EXPORTER_OTLP_TIMEOUT). So the SDK's shutdown runs
        in a daemon thread of its own -- not the loop's executor, whose threads asyncio.run
        joins at exit -- and is left behind if it overruns (its export threads are daemons
        too: the process exits without them)."""
        import asyncio  # noqa: PLC0415 -- only when tracing is on
        import threading  # noqa: PLC0415

        finished = threading.Event()

        def run() -> None:
            try:
                self.provider.shutdown()
            finally:
                finished.set()

        threading.Thread(target=run, name="otel-shutdown", daemon=True).start()
        if await asyncio.to_thread(finished.wait, deadline):
            return True
        log.warning(
            "tracing_flush_incomplete",
            deadline_s=deadline,
            detail="the OTLP collector did not take the last spans in time (down or hung); "
            "they are dropped so that the proxy stops",
        )
        return False


class Attempt:
    """The GenAI CLIENT span of one upstream tried (:meth:`Tracing.attempt`)."""

    __slots__ = ("_token", "request", "sends", "span", "tracing")

    def __init__(self, tracing: Tracing, span: Any, token: object, request: Request | None):
        self.tracing = tracing
        self.span = span
        self._token: object | None = token
        self.request = request
        self.sends = 0  # HTTP requests sent for it: retries and re-sends after an adaptation

    def _leave(self) -> None:
        """No longer the current span (the next upstream's, or the handler's code, follows)."""
        token, self._token = self._token, None
        if token is not None:
            self.tracing.detach(token)
        if self.request is not None and self.request.attempt is self:
            self.request.attempt = None

    def failed(self, exc: BaseException) -> None:
        """It failed (another upstream may follow): ``error.type`` is the backend's status, or
        the failure's class (UpstreamTimeout, UpstreamUnavailable, BreakerOpen, ...)."""
        self._leave()
        status = getattr(exc, "upstream_status", None)
        self.tracing.error(self.span, str(status) if status else type(exc).__name__)
        self.span.end()

    def answered(self, reply: Any, owner: Any, rec: Any) -> None:
        """It answered: a whole reply ends it now, with what its JSON says (usage, finish
        reasons, id, model); a stream ends it when its owner closes, with the tokens and finish
        reasons the stream reported (``rec``, :meth:`Tracing.finished`)."""
        self._leave()
        status = getattr(reply, "status", 200)
        if status >= 400:  # a relayed error answer, passed on as it is
            self.tracing.error(self.span, str(status))
        if hasattr(reply, "aclose"):  # an EventStream
            owner.callback(self._stream_over, rec)
            return
        data = reply.data
        if data is None and status < 300 and reply.body[:1] == b"{":
            data = _json(reply.body)  # a relayed answer (tracing on only)
        if isinstance(data, dict):
            self._describe(data)
        self.span.end()

    def _describe(self, data: dict[str, Any]) -> None:
        span = self.span
        usage = data.get("usage")
        if isinstance(usage, dict):
            tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
            _usage(span, *tokens)
            if self.request is not None:
                self.request.usage = tokens
        reasons = [
            c["finish_reason"]
            for c in data.get("choices") or ()
            if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)
        ]
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
            if self.request is not None:
                self.request.finish_reasons[:] = reasons
        for key, attr in (("id", "gen_ai.response.id"), ("model", "gen_ai.response.model")):
            value = data.get(key)
            if isinstance(value, str):
                span.set_attribute(attr, value[:256])

    def _stream_over(self, rec: Any) -> None:
        span = self.span
        _usage(span, rec.prompt_tokens, rec.completion_tokens)
        if self.request is not None and self.request.finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", self.request.finish_reasons)
        if rec.error_status and rec.error_status >= 500:
            self.tracing.error(span, str(rec.error_status))
        span.end()


def _usage(span: Any, prompt: Any, completion: Any) -> None:
    if isinstance(prompt, int):
        span.set_attribute("gen_ai.usage.input_tokens", prompt)
    if isinstance(completion, int):
        span.set_attribute("gen_ai.usage.output_tokens", completion)


def _json(body: bytes) -> Any:
    import orjson  # noqa: PLC0415 -- already loaded; kept local with its only use

    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


class TracedSession:
    """An upstream's HTTP session (http1.Client or aiohttp's), each request in a CLIENT span
    whose ``traceparent`` goes with it -- put in place of the session when tracing is on, so
    the upstream's retry loop is the same code either way. A request outside any traced
    request (the model lists refreshed in the background) is sent as it is."""

    __slots__ = ("_session", "_tracing")

    def __init__(self, session: Any, tracing: Tracing) -> None:
        self._session = session
        self._tracing = tracing

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    async def close(self) -> None:
        """Close the session it wraps."""
        await self._session.close()

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """``session.request``, traced: the span ends when the answer's head arrived (its
        status) or the request failed (the failure's class)."""
        request = CURRENT.get()
        if request is None:
            return await self._session.request(method, url, **kwargs)
        tracing = self._tracing
        attempt = request.attempt
        parts = urlsplit(url)
        resends = 0
        address, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        if attempt is not None:
            resends = attempt.sends
            attempt.sends += 1
            # A balanced upstream (base_urls, balance.py) picks a replica per request sent:
            # the upstream's span names the one sent to last -- the one that answered, or the
            # last one that failed -- not its first URL (issue #20's review, L4).
            attempt.span.set_attribute("server.address", address)
            attempt.span.set_attribute("server.port", port)
        span = tracing.start(
            method,
            "client",
            http__request__method=method,
            # no query: an Azure api-version is harmless, but a query is where keys may hide
            url__full=f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}",
            server__address=address,
            server__port=port,
            http__request__resend_count=resends or None,
        )
        kwargs["headers"] = tracing.inject(span)
        try:
            resp = await self._session.request(method, url, **kwargs)
        except BaseException as exc:
            tracing.error(span, type(exc).__name__)
            span.end()
            raise
        span.set_attribute("http.response.status_code", resp.status)
        if resp.status >= 400:
            tracing.error(span, str(resp.status))
        span.end()
        return resp


class _Modules:
    """The OpenTelemetry modules :class:`Tracing` uses, imported by :func:`start` only."""

    def __init__(self) -> None:
        # The extra's packages: imported here alone, when tracing is on (module docstring).
        from opentelemetry import context, trace  # noqa: PLC0415
        from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
            TraceContextTextMapPropagator,
        )

        self.context = context
        self.trace = trace
        self.propagator = TraceContextTextMapPropagator


def start() -> Tracing:
    """The tracer of an app whose environment asks for traces (:func:`wanted`, validated by
    :func:`check`): resource ``service.name`` (OTEL_SERVICE_NAME, else :data:`SERVICE`) and
    ``service.version``, OTEL_RESOURCE_ATTRIBUTES, the sampler (OTEL_TRACES_SAMPLER), the batch
    processor (OTEL_BSP_*) and the exporter (OTEL_EXPORTER_OTLP_*) as the SDK reads them."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(_Modules(), provider)
