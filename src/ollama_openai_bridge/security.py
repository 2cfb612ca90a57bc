"""Inbound authentication and per-client rate limits, as one pure ASGI middleware.

- ``PROXY_API_KEYS``: clients must send ``Authorization: Bearer <key>`` -- or, on the Anthropic
  routes (``/v1/messages*``), ``x-api-key: <key>``, which the anthropic SDKs and Claude Code send
  for ANTHROPIC_API_KEY (Bearer is their ANTHROPIC_AUTH_TOKEN); keys are compared in constant
  time, each of them, so timing tells nothing about which prefix matched. ``/`` and ``/health``
  stay open (liveness probes), as do CORS preflights (answered before this layer).
- Without keys, any ``Authorization`` header is accepted -- n8n sends ``Bearer `` with an empty key,
  ollama-python sends ollama.com keys -- and it is never forwarded: the upstream client sends only
  the proxy's own key.
- ``AUTH_FAILURE_LIMIT``: failed authentications per client address (``10/minute``); beyond
  it, that address gets 429 without its key being compared until the window frees an attempt, so
  keys cannot be guessed at line rate (fail2ban's and sshd's ``MaxAuthTries`` idea, per address).
- ``RATE_LIMIT``: a moving window per key (a hash of it, never the key) or, without keys, per
  client IP; counters in memory or in Redis shared by several instances. If the storage fails,
  requests pass (and a warning is logged): a limiter outage must not become a proxy outage.
- ``USAGE_ADMIN_KEY``: accepted as a Bearer key on :data:`ADMIN_PATHS` only (``/v1/usage``,
  every key's token usage), as the caller ``access.ADMIN_CALLER``; it opens nothing else.
  Token budgets themselves are checked by the next layer (budgets.BudgetGuard), which reads the
  caller this one records.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from ollama_openai_bridge.access import ADMIN_CALLER, record
from ollama_openai_bridge.errors import ProxyError, RateLimited, Unauthorized
from ollama_openai_bridge.render import Dialect, Renderer, dialect_of

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.aio.storage import Storage

log = structlog.get_logger("ollama_openai_bridge.security")

# The API documentation is public knowledge and a browser cannot send a Bearer key to read it;
# API_DOCS_ENABLED=false removes it altogether.
OPEN_PATHS = frozenset({"/", "/health", "/docs", "/docs/oauth2-redirect", "/redoc"}) | frozenset(
    {"/openapi.json", "/openapi.yaml"}
)
# Probes: a key is still needed (/ready calls the backend), but RATE_LIMIT does not count them.
# The readiness probe of every pod sends the first inbound key (healthcheck.py): counted, it
# would spend that team's budget -- shared by all replicas through Redis -- and, once the limit
# is reached, mark every pod unready (issue #19's review, H1). routes/meta.py makes concurrent
# /ready calls share one backend call, so exempting them amplifies nothing.
UNLIMITED_PATHS = frozenset({"/ready"})
# Where USAGE_ADMIN_KEY is a key (routes/usage.py): it reads every key's usage, and nothing else.
ADMIN_PATHS = frozenset({"/v1/usage"})


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
        await _close(self.storage)

    async def check(self, identity: str) -> RateLimited | None:
        for item in self.items:
            if not await self.limiter.hit(item, identity):
                stats = await self.limiter.get_window_stats(item, identity)
                retry = max(1, int(stats.reset_time - time.time() + 0.999))
                return RateLimited(f"rate limit exceeded: {item}; retry in {retry} s", retry)
        return None


class AuthThrottle:
    """Failed authentications per client address, counted in ``limits``' moving window (in
    memory, or in the rate limits' Redis so that every instance sees them).

    Only addresses that failed recently are looked up: the rest of the traffic costs a dict
    lookup, not a storage call (a Redis round trip) per request. That local list is bounded by
    :data:`MAX_SUSPECTS` addresses, so a client cycling through addresses cannot grow it."""

    MAX_SUSPECTS = 100_000

    def __init__(self, spec: str, storage_uri: str, clock: Callable[[], float] = time.monotonic):
        from limits import parse  # noqa: PLC0415 -- see _storage
        from limits.aio.strategies import MovingWindowRateLimiter  # noqa: PLC0415

        self.item: RateLimitItem = parse(spec)
        self.storage = _storage(storage_uri)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self._clock = clock
        self._suspects: dict[str, float] = {}  # address -> until when (clock) it is looked up

    async def close(self) -> None:
        """Close a Redis connection pool (memory storage has nothing to close)."""
        await _close(self.storage)

    def _limited(self, retry: float) -> RateLimited:
        seconds = max(1, int(retry + 0.999))
        return RateLimited(
            f"too many failed authentication attempts from this address: {self.item}; "
            f"retry in {seconds} s",
            seconds,
        )

    async def check(self, address: str) -> RateLimited | None:
        """Before the key is compared: the 429 for an address over its limit, else None."""
        until = self._suspects.get(address)
        if until is None:
            return None
        if until < self._clock():
            del self._suspects[address]
            return None
        key = "auth-failures:" + address  # apart from RATE_LIMIT's counters in a shared Redis
        if await self.limiter.test(self.item, key):
            return None
        stats = await self.limiter.get_window_stats(self.item, key)
        return self._limited(stats.reset_time - time.time())

    async def failed(self, address: str) -> RateLimited | None:
        """Count a failed authentication (logging ``auth_throttled`` when it used the last
        attempt); the 429 if the limit was already reached, else None."""
        suspects = self._suspects
        if address not in suspects and len(suspects) >= self.MAX_SUSPECTS:
            now = self._clock()
            for stale in [a for a, until in suspects.items() if until < now]:
                del suspects[stale]
            while len(suspects) >= self.MAX_SUSPECTS:  # all recent: forget the oldest
                del suspects[next(iter(suspects))]
        suspects[address] = self._clock() + self.item.get_expiry()
        key = "auth-failures:" + address
        if not await self.limiter.hit(self.item, key):  # another instance used the last one
            return self._limited(self.item.get_expiry())
        stats = await self.limiter.get_window_stats(self.item, key)
        if stats.remaining == 0:  # once per episode: the attempts refused after it are not
            log.warning("auth_throttled", client=address, limit=str(self.item))
        return None


async def _close(storage: Storage) -> None:
    client = getattr(getattr(storage, "bridge", None), "storage", None)
    if client is not None and hasattr(client, "aclose"):
        await client.aclose()
        await client.connection_pool.disconnect()


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        keys: list[str],
        limits: RateLimits | None,
        renderer: Renderer,
        throttle: AuthThrottle | None = None,
        admin_key: str = "",
    ) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.admin_key = admin_key.encode()  # USAGE_ADMIN_KEY, on ADMIN_PATHS only
        self.limits = limits
        self.renderer = renderer
        self.throttle = throttle if keys else None  # nothing to guess without keys

    def _authorized(self, header: bytes | None, api_key: bytes | None = None) -> tuple[bool, bytes]:
        """Whether the Bearer token of ``header`` -- or ``api_key``, an ``x-api-key`` header
        where the route takes one -- is a key; and the token that matched (else the Bearer
        one), for the caller's identity."""
        token = b""
        if header is not None and header[:7].lower() == b"bearer ":
            token = header[7:].strip()
        ok = False
        for key in self.keys:  # no early exit: every key is compared, always
            ok |= hmac.compare_digest(token, key)
        if api_key is not None and not ok:
            api_key = api_key.strip()
            for key in self.keys:
                ok |= hmac.compare_digest(api_key, key)
            if ok:
                token = api_key
        return ok, token

    def _admin(self, path: str, header: bytes | None) -> bool:
        """Whether the Bearer token of ``header`` is USAGE_ADMIN_KEY on a path it opens."""
        if not self.admin_key or path not in ADMIN_PATHS or header is None:
            return False
        if header[:7].lower() != b"bearer ":
            return False
        return hmac.compare_digest(header[7:].strip(), self.admin_key)

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
        client = scope.get("client")
        address = client[0] if client else "unknown"
        if self.keys:
            throttle = self.throttle
            if throttle is not None:
                refused = await self._guarded(throttle.check, address)
                if refused is not None:
                    await self._reject(scope, receive, send, refused)
                    return
            header = api_key = None
            anthropic = dialect_of(path) is Dialect.ANTHROPIC
            for k, v in scope["headers"]:
                if k == b"authorization" and header is None:
                    header = v
                elif anthropic and k == b"x-api-key" and api_key is None:
                    api_key = v
            ok, token = self._authorized(header, api_key)
            if ok:  # budget_plan.caller_of makes the same hash of a key
                identity = "key:" + hashlib.sha256(token).hexdigest()[:16]
            elif self._admin(path, header):
                identity = ADMIN_CALLER
            else:
                error: ProxyError = Unauthorized("unauthorized")
                if throttle is not None:
                    error = await self._guarded(throttle.failed, address) or error
                await self._reject(scope, receive, send, error)
                return
            record(scope).caller = identity
        if self.limits is not None and path not in UNLIMITED_PATHS:
            if not identity:
                identity = "ip:" + address
            try:
                limited = await self.limits.check(identity)
            except Exception as exc:  # storage down: fail open, loudly
                log.warning("rate_limit_storage_failed", error=self.renderer.redact(repr(exc)))
                limited = None
            if limited is not None:
                await self._reject(scope, receive, send, limited)
                return
        await self.app(scope, receive, send)

    async def _guarded(
        self, step: Callable[[str], Awaitable[RateLimited | None]], address: str
    ) -> RateLimited | None:
        try:
            return await step(address)
        except Exception as exc:  # storage down: fail open, loudly (as the rate limits do)
            log.warning("auth_throttle_storage_failed", error=self.renderer.redact(repr(exc)))
            return None

    async def _reject(self, scope: Scope, receive: Receive, send: Send, exc: ProxyError) -> None:
        response = self.renderer.response(exc, dialect_of(scope["path"]), record(scope))
        await response(scope, receive, send)
