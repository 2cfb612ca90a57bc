"""The tool-call store shared through a real redis-server, and what happens when Redis fails
(tool_call_store.py): replicas agree, and a sick Redis is logged, never an error."""

from __future__ import annotations

import asyncio
import socket
import time

from structlog.testing import capture_logs

from ollama_openai_bridge.tool_call_store import PREFIX, ToolCallStore
from ollama_openai_bridge.translate.carry import Recalled

ENTRY = Recalled("default", "gemini-3-pro-preview", "g1", {"google": {"thought_signature": "s"}})


def test_replicas_share_entries_through_redis(redis_url: str) -> None:
    async def go() -> None:
        a, b = ToolCallStore(redis_url, ttl=30), ToolCallStore(redis_url, ttl=30)
        try:
            assert a.shared
            a.remember({"k1": ENTRY})
            await a.drain()  # the write runs on its own: the request never waits for Redis
            assert await b.recall(["k1", "k2"]) == {"k1": ENTRY}  # another replica's entry
            assert len(b) == 1  # and now in b's memory too
            ttl = await a._redis.ttl(PREFIX + "k1")  # type: ignore[union-attr]
            assert 0 < ttl <= 30
            # an entry that is not ours, or from an incompatible version, reads as absent
            await a._redis.set(PREFIX + "bad", b"not json")  # type: ignore[union-attr]
            await a._redis.set(PREFIX + "odd", b"[1, 2, 3, 4]")  # type: ignore[union-attr]
            assert await b.recall(["bad", "odd"]) == {}
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_redis_that_is_down_is_logged_and_memory_still_serves() -> None:
    async def go() -> None:
        store = ToolCallStore(f"redis://127.0.0.1:{_closed_port()}/0")
        try:
            with capture_logs() as logs:
                started = time.monotonic()
                store.remember({"k": ENTRY})
                await store.drain()
                assert await store.recall(["k", "other"]) == {"k": ENTRY}
                assert time.monotonic() - started < 2  # bounded waits, never a hang
            ops = [e["operation"] for e in logs if e["event"] == "tool_call_store_unavailable"]
            assert ops == ["remember"]  # then Redis is left alone a while: one warning, no wait
        finally:
            await store.close()

    asyncio.run(go())


def test_a_redis_that_does_not_answer_is_not_waited_for() -> None:
    # A listener that accepts and never answers: a hung Redis, not a refused connection.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        async def go() -> None:
            store = ToolCallStore(f"redis://127.0.0.1:{port}/0")
            try:
                with capture_logs() as logs:
                    started = time.monotonic()
                    assert await store.recall(["k"]) == {}
                    assert time.monotonic() - started < 2
                assert [e["event"] for e in logs] == ["tool_call_store_unavailable"]
            finally:
                await store.close()

        asyncio.run(go())


def test_a_redis_that_answers_nonsense_fails_nothing(redis_url: str) -> None:
    async def go() -> None:
        store = ToolCallStore(redis_url)
        try:

            async def odd(keys: list[str]) -> object:
                return 7  # an integer where a list of values belongs

            store._redis.mget = odd  # type: ignore[method-assign,union-attr]
            with capture_logs() as logs:
                assert await store.recall(["k"]) == {}
            assert [e["event"] for e in logs] == ["tool_call_store_unavailable"]
        finally:
            await store.close()

    asyncio.run(go())
