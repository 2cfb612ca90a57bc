"""A small bounded store of what backends need back with a tool call (translate/carry.py).

Each entry is a :class:`~ollama_openai_proxy.translate.carry.Recalled` (the backend's id for the
call and its provider data, such as Gemini 3's thought signature) under the call's key. Entries
live ``TOOL_CALL_STORE_TTL`` seconds: a tool loop replays its calls within seconds or minutes.

Always in this process's memory (at most ``TOOL_CALL_STORE_SIZE`` entries, least recently
stored out first); with a ``redis://`` URI also in Redis, so that replicas behind one load
balancer agree (the next turn may land on another replica) and a restart loses nothing. Redis
is a help, never a dependency: a Redis error or a slow Redis (timeouts of a fraction of a
second) is logged and the request goes on with what memory holds -- the store only ever saves
a backend's refusal, it must never cause one.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from ollama_openai_proxy.translate.carry import Recalled

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger("ollama_openai_proxy.tool_call_store")

PREFIX = "ollama-openai-proxy:tool-call:"
REDIS_TIMEOUT = 0.25  # seconds per Redis operation: a request never waits longer on the store


MAX_PENDING = 1000  # Redis writes in flight at most; beyond, entries stay in memory only


class ToolCallStore:
    """``await recall(keys)`` -> the entries found; ``remember(entries)``."""

    def __init__(self, uri: str = "memory://", *, ttl: float = 3600, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._memory: OrderedDict[str, tuple[float, Recalled]] = OrderedDict()
        self._redis: Redis | None = None
        # Redis writes in flight, owned here (close() waits for them): the request that made
        # the calls never waits for Redis, and an ending stream's cleanup is no place to await.
        self._pending: set[asyncio.Task[None]] = set()
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
        if missing and self._redis is not None:
            try:
                values = await asyncio.wait_for(
                    self._redis.mget([PREFIX + k for k in missing]), REDIS_TIMEOUT * 2
                )
            except Exception as exc:  # Redis down or slow: carry on without it, loudly
                log.warning("tool_call_store_unavailable", operation="recall", error=repr(exc))
                return found
            for key, value in zip(missing, values, strict=True):
                entry = _decode(value)
                if entry is not None:
                    found[key] = entry
                    self._keep(key, entry, now)
        return found

    def remember(self, entries: Mapping[str, Recalled]) -> None:
        """Keep ``entries`` (key -> what to give back) for ``ttl`` seconds: in memory now, and
        in Redis (if configured) by a write that runs on its own; a failed write is logged.
        Call from the event loop."""
        if not entries:
            return
        now = time.monotonic()
        for key, entry in entries.items():
            self._keep(key, entry, now)
        if self._redis is None:
            return
        if len(self._pending) >= MAX_PENDING:  # Redis is not keeping up: memory only
            log.warning("tool_call_store_unavailable", operation="remember", error="backlog")
            return
        task = asyncio.get_running_loop().create_task(self._write(dict(entries)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, entries: dict[str, Recalled]) -> None:
        assert self._redis is not None
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, entry in entries.items():
                pipe.set(PREFIX + key, orjson.dumps(list(entry)), ex=max(1, int(self.ttl)))
            await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT * 2)
        except Exception as exc:  # Redis down or slow: memory keeps the entries, loudly
            log.warning("tool_call_store_unavailable", operation="remember", error=repr(exc))

    def _keep(self, key: str, entry: Recalled, now: float) -> None:
        memory = self._memory
        memory[key] = (now + self.ttl, entry)
        memory.move_to_end(key)
        while len(memory) > self.size:
            memory.popitem(last=False)

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
