"""``create_app()``: routes, middleware, error rendering and the upstream session's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ollama_openai_bridge import __version__, allocator, apidocs, tracing
from ollama_openai_bridge.access import record
from ollama_openai_bridge.backends import Backends
from ollama_openai_bridge.config import Settings, load_settings
from ollama_openai_bridge.context import Context, contexts
from ollama_openai_bridge.cors import CORSForBrowsers
from ollama_openai_bridge.errors import ProxyError, Redactor
from ollama_openai_bridge.fastpath import FastRoutes
from ollama_openai_bridge.logs import carry_trace_ids, configure_logging
from ollama_openai_bridge.metrics import Metrics
from ollama_openai_bridge.middleware import RequestContextMiddleware
from ollama_openai_bridge.recycle import supervised
from ollama_openai_bridge.render import Renderer, dialect_of
from ollama_openai_bridge.resilience import ConcurrencyLimiter
from ollama_openai_bridge.routes import (
    anthropic,
    embed,
    inference,
    manage,
    meta,
    models,
    openai,
    responses,
    usage,
)
from ollama_openai_bridge.routing import Operation, Router
from ollama_openai_bridge.security import AuthThrottle, GuardMiddleware, RateLimits
from ollama_openai_bridge.tool_call_store import ToolCallStore

if TYPE_CHECKING:
    from ollama_openai_bridge.budgets import TokenBudgets
    from ollama_openai_bridge.response_cache import ResponseCache

log = structlog.get_logger("ollama_openai_bridge")

ROUTERS = (meta, models, inference, embed, manage, openai, responses, anthropic, usage)

# Seconds the start waits for the model lists: requests resolve names against them (backends.py).
STARTUP_LIST_WAIT = 5.0


class ProxyApp(Starlette):
    """Starlette, entered through the proxy's own pure-ASGI chain (``front``).

    Starlette's middleware stack (error and exception wrappers, router) cost a share of the CPU
    of a proxied request (py-spy, bench/README.md); the hot routes skip it (fastpath.py).
    Lifespan events and the other routes still go through Starlette. ``operations``: the route
    table (routing.py) that :meth:`openapi` documents."""

    front: ASGIApp | None = None

    def __init__(
        self,
        *,
        title: str,
        version: str,
        operations: list[Operation],
        limits: Any,
        routes: list[BaseRoute],
        **kwargs: Any,
    ) -> None:
        super().__init__(routes=routes, **kwargs)
        self.title = title
        self.version = version
        self.operations = operations
        self._limits = limits
        self._document: dict[str, Any] | None = None

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document (openapi.build), made at its first request: the builder is
        imported then too (apidocs.py)."""
        if self._document is None:
            from ollama_openai_bridge import openapi  # noqa: PLC0415 -- at the first request

            self._document = openapi.build(
                self.operations, title=self.title, version=self.version, limits=self._limits
            )
        return self._document

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # Request.app, as Starlette would set it
        await self.front(scope, receive, send)

    async def fallback(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None, *, recycle: Callable[[], None] | None = None
) -> ProxyApp:
    """The app. ``recycle`` replaces this process with a fresh one (``MEMORY_RECYCLE_ABOVE_MB``);
    the command passes it when it serves alone, and a worker of several falls back to leaving
    (uvicorn's supervisor starts a new worker on the same socket)."""
    if settings is None:  # uvicorn workers build the app (and their logging) from the env
        env_file = os.environ.get("PROXY_ENV_FILE")
        settings = load_settings(_env_file=env_file) if env_file else load_settings()
        configure_logging(
            "DEBUG" if settings.debug else settings.log_level,
            Redactor(settings.secrets()),
        )
    inbound_keys = settings.inbound_keys()
    renderer = Renderer(Redactor(settings.secrets()))
    metrics = Metrics() if settings.enable_metrics else None
    model_map, policy, topology = settings.model_map(), settings.policy(), settings.topology()
    # OTEL_*: traces only when asked for (load_settings validated the variables); off, the
    # OpenTelemetry packages are never imported and nothing below changes.
    tracer = tracing.start() if tracing.wanted(os.environ) else None
    backends = Backends(topology, settings, model_map, policy, metrics, tracer)
    # The response cache and the token budgets: None when off, and then nothing per request
    # and their modules never imported (issue #18: a worker's memory is mostly its imports).
    cache: ResponseCache | None = None
    if settings.cache_uri():
        from ollama_openai_bridge import response_cache  # noqa: PLC0415 -- only when on

        cache = response_cache.from_settings(settings, metrics)
    if cache is not None:
        backends.execute = cache.wrap(backends.execute)
    accounts = settings.budget_accounts()
    budgets: TokenBudgets | None = None
    if accounts is not None:
        from ollama_openai_bridge.budgets import TokenBudgets  # noqa: PLC0415 -- only when on

        budgets = TokenBudgets(accounts, settings.budget_uri(), metrics)
    if budgets is not None:  # outermost: a cached answer is admitted and counted too
        backends.execute = budgets.wrap(backends.execute)
    ctx = Context(
        settings=settings,
        backends=backends,
        model_map=model_map,
        policy=policy,
        renderer=renderer,
        limiter=ConcurrencyLimiter(
            settings.max_concurrent_requests, settings.max_queued_requests, settings.queue_timeout
        ),
        metrics=metrics,
        limits=settings.limits(),
        tool_calls=ToolCallStore(
            settings.store_uri(),
            ttl=settings.tool_call_store_ttl,
            size=settings.tool_call_store_size,
        ),
        conversations=contexts(settings),
        budgets=budgets,
        tracing=tracer,
    )
    if settings.memory_recycle_above_mb and recycle is None:
        recycle = supervised()
        if recycle is None:
            log.warning(
                "memory_recycle_disabled",
                detail="MEMORY_RECYCLE_ABOVE_MB needs the ollama-openai-bridge command, which "
                "starts a fresh process on the same socket; ignored here",
            )

    rate_limits = (
        RateLimits(settings.rate_limit, settings.rate_limit_storage_uri)
        if settings.rate_limit
        else None
    )
    auth_throttle = (
        AuthThrottle(settings.auth_failure_limit, settings.rate_limit_storage_uri)
        if settings.auth_failure_limit and inbound_keys
        else None
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await backends.start()
        await backends.warm_up(STARTUP_LIST_WAIT)
        log.info(
            "started",
            upstreams={u.name: u.base_url for u in backends.upstreams.values()},
            version=__version__,
        )
        # Where tool calls' data lives decides whether replicas agree (docs/BACKENDS.md).
        log.info(
            "tool_call_store", shared=ctx.tool_calls.shared, ttl_s=settings.tool_call_store_ttl
        )
        if budgets is not None:
            # Whether replicas and workers agree on the budgets (docs/DEPLOYMENT.md).
            log.info("token_budgets", keys=len(budgets.accounts), shared=budgets.shared)
            budgets.start()  # counts held while Redis failed are handed over when it is back
            if not budgets.shared and settings.workers > 1:
                log.warning(
                    "token_budgets_per_worker",
                    detail="TOKEN_BUDGET counts in each worker's memory: with WORKERS > 1 a key "
                    "may use its budget once per worker; set TOKEN_BUDGET_STORAGE_URI=redis://...",
                )
        if tracer is not None:
            resource = tracer.provider.resource.attributes
            log.info("tracing", service=resource.get("service.name"), exporter="otlp")
        if cache is not None:
            # Whether replicas and workers share the answers (docs/DEPLOYMENT.md).
            log.info(
                "response_cache",
                storage=settings.response_cache,
                shared=cache.store.shared,
                ttl_s=settings.response_cache_ttl,
                across_keys=settings.response_cache_across_keys,
                nondeterministic=settings.response_cache_nondeterministic,
            )
        for name in backends.upstreams:
            profile = backends.policy(name).profile
            # Which shaping applies is an operator's first question when a backend refuses.
            log.info("upstream_profile", upstream=name, profile=profile.name, title=profile.title)
        if settings.disable_ssl_verification:
            log.warning(
                "tls_verification_disabled",
                detail="DISABLE_SSL_VERIFICATION is set: the backend's certificate is NOT checked; "
                "anyone on the network path can read and alter traffic, including the API key",
            )
        if settings.forwarded_allow_ips == ["*"]:
            log.warning(
                "forwarded_headers_from_anyone",
                detail="FORWARDED_ALLOW_IPS=*: every peer's X-Forwarded-For is believed, so a "
                "client that reaches the port directly chooses the address its rate limit and "
                "connection cap count; list the reverse proxies instead",
            )
        for spec in topology.upstreams:
            if not spec.api_key and "api.openai.com" in spec.base_url:
                log.warning(
                    "no_api_key",
                    upstream=spec.name,
                    detail="the API key is empty (OPENAI_API_KEY); OpenAI will answer 401",
                )
        releaser = (
            asyncio.create_task(
                allocator.release_when_idle(
                    ctx.limiter,
                    settings.memory_release_after_idle,
                    recycle_above_mb=settings.memory_recycle_above_mb,
                    recycle=recycle,
                )
            )
            if settings.memory_release_after_idle
            else None
        )
        try:
            yield
        finally:
            if releaser is not None:
                releaser.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await releaser
            await backends.close()
            await ctx.tool_calls.close()
            if cache is not None:
                await cache.close()
            if budgets is not None:
                await budgets.close()
            if rate_limits is not None:
                await rate_limits.close()
            if auth_throttle is not None:
                await auth_throttle.close()
            if metrics is not None:
                metrics.close()
            if tracer is not None:
                await tracer.shutdown()  # the spans still batched are sent before the exit

    docs = settings.api_docs_enabled
    table = Router()
    for module in ROUTERS:
        table.operations.extend(module.router.operations)
    if metrics is not None:
        for path in dict.fromkeys(("/v1/metrics", settings.metrics_path)):
            table.add(path, meta.metrics, methods=["HEAD"], include_in_schema=False)
            table.add(
                path,
                meta.metrics,
                methods=["GET"],
                operation_id="metrics" if path == "/v1/metrics" else None,
                include_in_schema=path == "/v1/metrics",
                summary="Prometheus metrics",
            )
    routes: list[BaseRoute] = [
        Route(op.path, op.handler, methods=[op.method], include_in_schema=op.include_in_schema)
        for op in table.operations
    ]
    app = ProxyApp(
        title="ollama-openai-bridge",
        version=__version__,
        operations=table.operations,
        limits=ctx.limits,
        routes=routes,
        lifespan=lifespan,
    )
    # A trailing slash gets 404, never a redirect: Starlette would build its Location from the
    # client's Host header (an open redirect off-host).
    app.router.redirect_slashes = False
    if docs:
        app.router.routes[:0] = apidocs.routes(app, yaml_url="/openapi.yaml")
    app.state.ctx = ctx

    # Every error a handler raises is rendered by the one renderer (render.py), in the dialect
    # of the route, for Starlette's routes and the hot routes (FastRoutes) alike.
    async def proxy_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        path = request.scope["path"]
        return renderer.response(exc, dialect_of(path), record(request.scope))

    def allowed(scope: Scope) -> str:
        """The methods the routes at this path serve, for a 405's ``Allow`` (RFC 9110 §15.5.6):
        every route of the path, since Starlette names only the first one's (GET and HEAD
        are separate routes here)."""
        methods: set[str] = set()
        for route in app.router.routes:
            if (
                isinstance(route, Route)
                and route.methods
                and route.matches(scope)[0] is not Match.NONE
            ):
                methods |= route.methods
        return ", ".join(sorted(methods))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        allow = allowed(request.scope) if exc.status_code == 405 else ""
        error = Renderer.route_error(exc.status_code, str(exc.detail), allow)
        return renderer.response(error, dialect_of(request.scope["path"]), record(request.scope))

    async def unexpected(request: Request, exc: Exception) -> Response:
        return await proxy_error(request, Renderer.unexpected(exc))

    app.add_exception_handler(ProxyError, proxy_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)

    async def on_error(request: Request, exc: Exception) -> Response:
        return await (proxy_error if isinstance(exc, ProxyError) else unexpected)(request, exc)

    hot: dict[tuple[str, str], Any] = {
        ("POST", "/api/chat"): inference.chat,
        ("POST", "/api/generate"): inference.generate,
        ("POST", "/api/embed"): embed.embed,
        ("POST", "/api/embeddings"): embed.embeddings,
        ("POST", "/api/show"): models.show,
        ("GET", "/api/tags"): models.tags,
        ("GET", "/api/version"): meta.version,
        ("POST", "/v1/chat/completions"): openai.chat_completions,
        ("POST", "/v1/completions"): openai.completions,
        ("POST", "/v1/embeddings"): openai.embeddings,
        ("POST", "/v1/responses"): responses.responses,
        ("POST", "/v1/messages"): anthropic.messages,
    }
    origins = settings.cors_origins
    endpoints = {"/v1/metrics", settings.metrics_path}
    if docs:
        endpoints.update(("/docs", "/redoc", "/openapi.json", "/openapi.yaml"))
    endpoints.update(op.path for op in table.operations)
    # Outermost first: request id, access log and metrics; keys and rate limits; token budgets;
    # CORS; the hot routes; everything else goes on to Starlette's own stack (app.fallback).
    inner: ASGIApp = CORSForBrowsers(
        FastRoutes(app.fallback, routes=hot, on_error=on_error), renderer, origins
    )
    if budgets is not None:  # inside the key check, which names the caller
        from ollama_openai_bridge.budgets import BudgetGuard  # noqa: PLC0415 -- only when on

        inner = BudgetGuard(inner, budgets)
    if inbound_keys or rate_limits is not None:  # else the guard has nothing to check
        inner = GuardMiddleware(
            inner,
            keys=inbound_keys,
            limits=rate_limits,
            renderer=renderer,
            throttle=auth_throttle,
            admin_key=settings.usage_admin_key.get_secret_value(),
        )
    if cache is not None:  # Cache-Control in, X-Cache-Status out
        from ollama_openai_bridge.response_cache import CacheStatusMiddleware  # noqa: PLC0415

        inner = CacheStatusMiddleware(inner)
    app.front = RequestContextMiddleware(
        inner, renderer=renderer, metrics=metrics, endpoints=endpoints
    )
    if tracer is not None:  # outermost: the access line is inside the request's span
        from ollama_openai_bridge.tracing_asgi import TraceRequests  # noqa: PLC0415 -- when on

        app.front = TraceRequests(app.front, tracer, endpoints)
        carry_trace_ids()
    return app
