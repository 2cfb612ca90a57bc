"""Liveness and version probes; none of them calls the backend except /ready."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ollama_openai_bridge.buildinfo import build_info
from ollama_openai_bridge.context import Context, get_context
from ollama_openai_bridge.errors import ProxyError, RouteNotFound
from ollama_openai_bridge.http import json_response
from ollama_openai_bridge.routing import Router
from ollama_openai_bridge.upstream import Upstream

router = Router()

# Ollama's /api/status (0.16.2; server/routes.go StatusHandler, api/types.go StatusResponse):
# whether its cloud features -- cloud models, web search -- are disabled, and by what ("none",
# "env", "config" or "both"). The proxy serves neither, by its nature: disabled, by
# configuration. `ollama launch` then offers no cloud model through it, and the desktop app's
# tools say so (cmd/launch/models.go cloudStatusDisabled, app/tools/cloud_policy.go).
CLOUD_STATUS = {"cloud": {"disabled": True, "source": "config"}}


@router.get_and_head(
    "/",
    media_type="text/plain",
    operation_id="root",
    summary="Liveness probe, as Ollama answers it",
    description="Ollama clients (the Go client's Heartbeat, older n8n credential tests) expect "
    "`Ollama is running` in plain text.",
)
async def root(_: Request) -> Response:
    return PlainTextResponse("Ollama is running")


@router.get_and_head(
    "/api/version",
    operation_id="version",
    summary="Ollama version (configurable, numeric)",
    description="The Ollama release whose API the proxy serves (OLLAMA_VERSION). Open WebUI "
    "parses it as dotted integers; Codex --oss needs >= 0.13.4, VS Code Copilot >= 0.6.4.",
)
async def version(request: Request) -> Response:
    return json_response({"version": get_context(request).settings.ollama_version})


@router.get_and_head(  # Ollama has GET only; here every GET route answers HEAD too
    "/api/status",
    operation_id="status",
    summary="Cloud features: disabled (no Ollama cloud behind this proxy)",
)
async def status(_: Request) -> Response:
    return json_response(CLOUD_STATUS)


@router.get_and_head(
    "/v1/version",
    operation_id="proxy_version",
    summary="The proxy's own version, build and dependencies (VERSION_ENDPOINT_ENABLED)",
)
async def proxy_version(request: Request) -> Response:
    if not get_context(request).settings.version_endpoint_enabled:
        raise RouteNotFound("404 page not found")
    return json_response(build_info())


async def metrics(request: Request) -> Response:
    """Prometheus text exposition (registered by create_app when metrics are enabled)."""
    m = get_context(request).metrics
    assert m is not None
    return Response(m.exposition(), media_type=m.content_type)


@router.get_and_head(
    "/health",
    operation_id="health",
    summary="Liveness: the process answers (no backend call)",
)
async def health(_: Request) -> Response:
    return json_response({"status": "ok"})


@router.get_and_head(
    "/ready",
    operation_id="ready",
    summary="Readiness: the backend answers GET /models within HEALTH_CHECK_TIMEOUT",
    responses={503: {"description": "backend unreachable"}},
)
async def ready(request: Request) -> Response:
    ctx = get_context(request)
    upstreams = list(ctx.backends.upstreams.values())
    checks = await asyncio.gather(*(_check(ctx, u) for u in upstreams))
    if not ctx.backends.multi:
        body = checks[0]
        return json_response(body, 200 if body["status"] == "ready" else 503)
    # Several upstreams: ready while any of them answers (the others' models fall back or fail
    # with a clear error); each one's state is in the body.
    ready = any(c["status"] == "ready" for c in checks)
    return json_response(
        {
            "status": "ready" if ready else "unavailable",
            "upstreams": {u.name: c for u, c in zip(upstreams, checks, strict=True)},
        },
        200 if ready else 503,
    )


# One backend call at a time per upstream, whoever asks: the checks in flight, by upstream.
# /ready is not rate-limited (security.UNLIMITED_PATHS, for the probes), so a caller looping
# on it must not multiply the backend's GET /models; joiners get the same fresh answer, nothing
# is kept after it.
_in_flight: weakref.WeakKeyDictionary[Upstream, asyncio.Future[dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


async def _check(ctx: Context, upstream: Upstream) -> dict[str, Any]:
    """``{"status": "ready"|"unavailable", "circuit_breaker", "profile"[, "error"]}`` for one
    upstream, from its ``GET /models`` within HEALTH_CHECK_TIMEOUT; concurrent callers share
    one call (``asyncio.shield``: one caller going away does not cancel the others' check)."""
    task = _in_flight.get(upstream)
    if task is None:
        task = asyncio.ensure_future(_ask(ctx, upstream))
        _in_flight[upstream] = task
        task.add_done_callback(lambda _: _in_flight.pop(upstream, None))
    return await asyncio.shield(task)


async def _ask(ctx: Context, upstream: Upstream) -> dict[str, Any]:
    profile = ctx.backends.policy(upstream.name).profile.name
    try:
        await upstream.json("GET", "/models", timeout=ctx.settings.health_check_timeout)
    except ProxyError as exc:  # unreachable, an error status, or the breaker open
        out: dict[str, Any] = {
            "status": "unavailable",
            "error": ctx.renderer.redact(exc.message),
            "circuit_breaker": upstream.breaker.state.name.lower(),
            "profile": profile,
        }
    else:
        out = {
            "status": "ready",
            "circuit_breaker": upstream.breaker.state.name.lower(),
            "profile": profile,
        }
    if upstream.balancer is not None:  # replicas: each one's load and outlier state
        out["balance"] = upstream.balancer.strategy
        out["replicas"] = upstream.balancer.snapshot()
    return out
