"""Inbound authentication and per-client rate limits, as one pure ASGI middleware.

- ``PROXY_API_KEYS``: clients must send ``Authorization: Bearer <key>``; keys are compared in
  constant time, each of them, so timing tells nothing about which prefix matched. ``/`` and
  ``/health`` stay open (liveness probes), as do CORS preflights (answered before this layer).
- Without keys, any ``Authorization`` header is accepted -- n8n sends ``Bearer `` with an empty key,
  ollama-python sends ollama.com keys -- and it is never forwarded: the upstream client sends only
  the proxy's own key.
- ``RATE_LIMIT``: a moving window per key (a hash of it, never the key) or, without keys, per
  client IP; counters in memory or in Redis shared by several instances. If the storage fails,
  requests pass (and a warning is logged): a limiter outage must not become a proxy outage.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from ollama_openai_proxy.access import record
from ollama_openai_proxy.errors import ProxyError, RateLimited, Unauthorized
from ollama_openai_proxy.render import Renderer, dialect_of

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.aio.storage import Storage

log = structlog.get_logger("ollama_openai_proxy.security")

# The API documentation is public knowledge and a browser cannot send a Bearer key to read it;
# API_DOCS_ENABLED=false removes it altogether.
OPEN_PATHS = frozenset({"/", "/health", "/docs", "/docs/oauth2-redirect", "/redoc"}) | frozenset(
    {"/openapi.json", "/openapi.yaml"}
)


def _storage(uri: str) -> Storage:
    # Imported here, not at start: most deployments set no RATE_LIMIT (about 2 MB of RSS).
    from limits.aio.storage import Storage  # noqa: PLC0415
    from limits.storage import storage_from_string  # noqa: PLC0415

    if uri.startswith(("redis://", "rediss://")):
        # redis-py's asyncio client (a dependency already) rather than limits' default, coredis.
        storage = storage_from_string("async+" + uri, implementation="redispy")
    else:
        storage = storage_from_string(uri if uri.startswith("async+") else "async+" + uri)
    assert isinstance(storage, Storage)
    return storage


class RateLimits:
    def __init__(self, spec: str, storage_uri: str) -> None:
        from limits import parse_many  # noqa: PLC0415 -- see _storage
        from limits.aio.strategies import MovingWindowRateLimiter  # noqa: PLC0415

        self.items: list[RateLimitItem] = parse_many(spec)
        self.storage = _storage(storage_uri)
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def close(self) -> None:
        """Close a Redis connection pool (memory storage has nothing to close)."""
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()
            await client.connection_pool.disconnect()

    async def check(self, identity: str) -> RateLimited | None:
        for item in self.items:
            if not await self.limiter.hit(item, identity):
                stats = await self.limiter.get_window_stats(item, identity)
                retry = max(1, int(stats.reset_time - time.time() + 0.999))
                return RateLimited(f"rate limit exceeded: {item}; retry in {retry} s", retry)
        return None


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        keys: list[str],
        limits: RateLimits | None,
        renderer: Renderer,
    ) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.limits = limits
        self.renderer = renderer

    def _authorized(self, header: bytes | None) -> tuple[bool, bytes]:
        token = b""
        if header is not None and header[:7].lower() == b"bearer ":
            token = header[7:].strip()
        ok = False
        for key in self.keys:  # no early exit: every key is compared, always
            ok |= hmac.compare_digest(token, key)
        return ok, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # create_app leaves the guard out when it has nothing to check
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in OPEN_PATHS or (
            # CORS preflights carry no credentials by design; the CORS layer answers them.
            scope["method"] == "OPTIONS"
            and any(k == b"access-control-request-method" for k, _ in scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        identity = ""
        if self.keys:
            header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            ok, token = self._authorized(header)
            if not ok:
                await self._reject(scope, receive, send, Unauthorized("unauthorized"))
                return
            identity = "key:" + hashlib.sha256(token).hexdigest()[:16]
        if self.limits is not None:
            if not identity:
                client = scope.get("client")
                identity = "ip:" + (client[0] if client else "unknown")
            try:
                limited = await self.limits.check(identity)
            except Exception as exc:  # storage down: fail open, loudly
                log.warning("rate_limit_storage_failed", error=self.renderer.redact(repr(exc)))
                limited = None
            if limited is not None:
                await self._reject(scope, receive, send, limited)
                return
        await self.app(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, exc: ProxyError) -> None:
        response = self.renderer.response(exc, dialect_of(scope["path"]), record(scope))
        await response(scope, receive, send)
