"""Where the response cache (response_cache.py) keeps its answers: this process's memory, or
Redis.

Both stores hold opaque blobs (response_cache.encode) under a key (a SHA-256 hex digest) for
``RESPONSE_CACHE_TTL`` seconds, and share one interface: ``await get(key)`` -> the blob or None,
``put(key, blob)`` (never waits), ``await close()``.

- :class:`MemoryStore`: at most ``RESPONSE_CACHE_MAX_ENTRIES`` blobs and
  ``RESPONSE_CACHE_MAX_BYTES`` bytes, the least recently used out first; expired entries are
  dropped when met. Each process (each worker) has its own.
- :class:`RedisStore`: ``SET ... PX <ttl>``, so every replica sees an answer any of them kept, and
  Redis expires it; its own ``maxmemory-policy`` decides what goes when it is full. Redis is a
  help, never a dependency, as in tool_call_store.py: a failure or a slow answer (timeouts of a
  fraction of a second) is logged and counted, Redis is left alone for :data:`REDIS_REST`
  seconds, and the request goes on as a miss -- to the backend, as without a cache.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ollama_openai_bridge.metrics import Metrics

log = structlog.get_logger("ollama_openai_bridge.response_cache")

PREFIX = "ollama-openai-bridge:response:"
REDIS_TIMEOUT = 0.25  # seconds per Redis operation: a lookup waits at most twice this
REDIS_REST = 10.0  # seconds Redis is not asked after it failed
MAX_PENDING = 100  # Redis writes in flight at most; beyond, an answer is not kept


class Store(Protocol):
    """What the response cache needs of a store."""

    shared: bool

    async def get(self, key: str) -> bytes | None:
        """The blob kept under ``key``, None if there is none (or it expired, or the store
        failed: never raises)."""
        ...

    def put(self, key: str, blob: bytes) -> None:
        """Keep ``blob`` under ``key`` for the TTL; never waits, never raises."""

    async def close(self) -> None:
        """Finish what is in flight and let go of connections."""


class MemoryStore:
    """Blobs in this process's memory, least recently used out first. ``clock``: monotonic
    seconds (tests pass their own)."""

    shared = False

    def __init__(
        self,
        *,
        ttl: float,
        max_entries: int,
        max_bytes: int,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0  # the sizes of the blobs held
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._metrics = metrics
        self._clock = clock
        if metrics is not None:
            metrics.cache_size(0, 0)

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entries = self._entries
        found = entries.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            del entries[key]
            self.bytes -= len(found[1])
            self._changed("expired", 1)
            return None
        entries.move_to_end(key)  # recently used: the last to go
        return found[1]

    def put(self, key: str, blob: bytes) -> None:
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old[1])
        entries[key] = (self._clock() + self.ttl, blob)
        self.bytes += len(blob)
        evicted = 0
        while len(entries) > self.max_entries or self.bytes > self.max_bytes:
            self.bytes -= len(entries.popitem(last=False)[1][1])
            evicted += 1
        self._changed("size", evicted)

    def _changed(self, reason: str, evicted: int) -> None:
        metrics = self._metrics
        if metrics is not None:
            if evicted:
                metrics.cache_evicted(reason, evicted)
            metrics.cache_size(len(self._entries), self.bytes)

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0


class RedisStore:
    """Blobs in Redis under :data:`PREFIX` + key, expiring after ``ttl`` seconds."""

    shared = True

    def __init__(self, uri: str, *, ttl: float, metrics: Metrics | None = None) -> None:
        from redis.asyncio import Redis  # noqa: PLC0415 -- only deployments that use it
        from redis.asyncio.retry import Retry  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415

        self.ttl_ms = max(1, round(ttl * 1000))
        self._metrics = metrics
        # No retries inside redis-py (by default 3, with a backoff of up to seconds): a failure
        # must come back within the timeout; the rest period is the retry.
        self._redis: Redis = Redis.from_url(
            uri,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        self._pending: set[asyncio.Task[None]] = set()
        self._resting_until = 0.0  # monotonic time until which Redis is not asked

    async def get(self, key: str) -> bytes | None:
        if time.monotonic() < self._resting_until:
            return None
        try:
            value = await asyncio.wait_for(self._redis.get(PREFIX + key), REDIS_TIMEOUT * 2)
        except Exception as exc:  # Redis down or slow: a miss, loudly
            self._failed("get", exc)
            return None
        if value is not None and not isinstance(value, bytes):
            self._failed("get", TypeError(f"GET answered {type(value).__name__}"))
            return None
        return value

    def put(self, key: str, blob: bytes) -> None:
        if time.monotonic() < self._resting_until:
            return
        if len(self._pending) >= MAX_PENDING:  # Redis is not keeping up: not kept
            self._failed("set", RuntimeError(f"{MAX_PENDING} writes in flight"))
            return
        task = asyncio.get_running_loop().create_task(self._write(key, blob))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, key: str, blob: bytes) -> None:
        try:
            await asyncio.wait_for(
                self._redis.set(PREFIX + key, blob, px=self.ttl_ms), REDIS_TIMEOUT * 2
            )
        except Exception as exc:  # Redis down or slow: not kept, loudly
            self._failed("set", exc)

    def _failed(self, operation: str, exc: BaseException) -> None:
        # A Redis that fails is left alone for a while: a hung one would otherwise cost every
        # cacheable request its timeout, and log a warning each time.
        now = time.monotonic()
        if now >= self._resting_until:
            log.warning(
                "response_cache_unavailable",
                operation=operation,
                error=repr(exc),
                retry_in_s=REDIS_REST,
            )
        self._resting_until = now + REDIS_REST
        if self._metrics is not None:
            self._metrics.cache_failed(operation)

    async def drain(self) -> None:
        """Wait for the writes in flight (each bounded by its timeout)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self._redis.aclose()
