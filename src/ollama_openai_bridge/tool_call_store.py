"""A small bounded store of what backends need back with a tool call (translate/carry.py).

Each entry is a :class:`~ollama_openai_bridge.translate.carry.Recalled` (the backend's id for the
call and its provider data, such as Gemini 3's thought signature) under the call's key. Entries
live ``TOOL_CALL_STORE_TTL`` seconds: a tool loop replays its calls within seconds or minutes.

Always in this process's memory (at most ``TOOL_CALL_STORE_SIZE`` entries, least recently
stored out first, and :data:`MAX_BYTES` in all; an entry larger than :data:`MAX_EXTRA` bytes is
not kept); with a
``redis://`` URI also in Redis, so that replicas behind one load balancer agree (the next turn
may land on another replica) and a restart loses nothing. Redis is a help, never a dependency:
a Redis error, a slow Redis (timeouts of a fraction of a second) or an odd answer is logged,
Redis is left alone for :data:`REDIS_REST` seconds, and the request goes on with what memory
holds -- the store only ever saves a backend's refusal, it must never cause one.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from ollama_openai_bridge.translate.carry import Recalled

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger("ollama_openai_bridge.tool_call_store")

# The project's first name: replicas of the old and the new release share entries during a
# rolling upgrade (the rename to ollama-openai-bridge changed no stored key).
PREFIX = "ollama-openai-proxy:tool-call:"
REDIS_TIMEOUT = 0.25  # seconds per Redis operation: a request never waits longer on the store
REDIS_REST = 10.0  # seconds Redis is not asked after it failed (memory still serves)


MAX_PENDING = 1000  # Redis writes in flight at most; beyond, entries stay in memory only
MAX_EXTRA = 16 * 1024  # bytes of one entry at most (a Gemini signature is a few KB): not kept
MAX_BYTES = 32 * 1024 * 1024  # bytes of all entries in memory at most, oldest out first


class ToolCallStore:
    """``await recall(keys)`` -> the entries found; ``remember(entries)``."""

    def __init__(self, uri: str = "memory://", *, ttl: float = 3600, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._memory: OrderedDict[str, tuple[float, Recalled, int]] = OrderedDict()
        self._bytes = 0  # the sizes of the entries in memory
        self._redis: Redis | None = None
        # Redis writes in flight, owned here (close() waits for them): the request that made
        # the calls never waits for Redis, and an ending stream's cleanup is no place to await.
        self._pending: set[asyncio.Task[None]] = set()
        self._resting_until = 0.0  # monotonic time until which Redis is not asked (_failed)
        if uri.startswith(("redis://", "rediss://")):
            from redis.asyncio import Redis  # noqa: PLC0415 -- only deployments that use it

            self._redis = Redis.from_url(
                uri, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
            )

    @property
    def shared(self) -> bool:
        """Whether entries are shared through Redis."""
        return self._redis is not None

    async def recall(self, keys: Iterable[str]) -> dict[str, Recalled]:
        """The entries kept under ``keys`` (32-hex-digit keys of ``carry.call_key``); keys with
        none are absent from the result. Never raises for a Redis failure (logged)."""
        now = time.monotonic()
        found: dict[str, Recalled] = {}
        missing = []
        for key in keys:
            hit = self._memory.get(key)
            if hit is not None and hit[0] > now:
                found[key] = hit[1]
            else:
                missing.append(key)
        if missing and self._redis is not None and now >= self._resting_until:
            try:
                values = await asyncio.wait_for(
                    self._redis.mget([PREFIX + k for k in missing]), REDIS_TIMEOUT * 2
                )
            except Exception as exc:  # Redis down or slow: carry on without it, loudly
                self._failed("recall", exc)
                return found
            if not isinstance(values, list) or len(values) != len(missing):
                self._failed("recall", TypeError(f"MGET answered {type(values).__name__}"))
                return found
            for key, value in zip(missing, values, strict=True):
                entry = _decode(value)
                if entry is not None:
                    found[key] = entry
                    self._keep(key, entry, now, len(value or b""))
        return found

    def _failed(self, operation: str, exc: BaseException) -> None:
        # A Redis that fails is left alone for a while: a hung one would otherwise cost every
        # replayed request its timeout, and log a warning each time.
        now = time.monotonic()
        if now >= self._resting_until:
            log.warning(
                "tool_call_store_unavailable",
                operation=operation,
                error=repr(exc),
                retry_in_s=REDIS_REST,
            )
        self._resting_until = now + REDIS_REST

    def remember(self, entries: Mapping[str, Recalled]) -> None:
        """Keep ``entries`` (key -> what to give back) for ``ttl`` seconds: in memory now, and
        in Redis (if configured) by a write that runs on its own; a failed write is logged.
        Call from the event loop."""
        if not entries:
            return
        now = time.monotonic()
        blobs: dict[str, bytes] = {}
        for key, entry in entries.items():
            blob = orjson.dumps(list(entry))
            if len(blob) > MAX_EXTRA:
                log.warning("tool_call_not_kept", reason=f"its data is over {MAX_EXTRA} bytes")
                continue
            blobs[key] = blob
            self._keep(key, entry, now, len(blob))
        if not blobs or self._redis is None or now < self._resting_until:
            return
        if len(self._pending) >= MAX_PENDING:  # Redis is not keeping up: memory only
            self._failed("remember", RuntimeError(f"{MAX_PENDING} writes in flight"))
            return
        task = asyncio.get_running_loop().create_task(self._write(blobs))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, blobs: dict[str, bytes]) -> None:
        assert self._redis is not None
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, blob in blobs.items():
                pipe.set(PREFIX + key, blob, ex=max(1, int(self.ttl)))
            await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT * 2)
        except Exception as exc:  # Redis down or slow: memory keeps the entries, loudly
            self._failed("remember", exc)

    def _keep(self, key: str, entry: Recalled, now: float, size: int) -> None:
        memory = self._memory
        old = memory.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
        memory[key] = (now + self.ttl, entry, size)
        self._bytes += size
        while len(memory) > self.size or self._bytes > MAX_BYTES:
            self._bytes -= memory.popitem(last=False)[1][2]

    def __len__(self) -> int:
        return len(self._memory)

    async def drain(self) -> None:
        """Wait for the Redis writes in flight (each bounded by its timeout)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        """Finish the Redis writes in flight, then close the connection pool, if any."""
        await self.drain()
        if self._redis is not None:
            await self._redis.aclose()


def _decode(value: Any) -> Recalled | None:
    if value is None:
        return None
    try:
        upstream, model, call_id, extra = orjson.loads(value)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None  # not ours, or from an incompatible version: as if absent
    if not isinstance(upstream, str) or not isinstance(model, str):
        return None
    return Recalled(
        upstream,
        model,
        call_id if isinstance(call_id, str) else None,
        extra if isinstance(extra, dict) else None,
    )
