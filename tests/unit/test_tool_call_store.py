"""The tool-call store in memory: bounded in size and time (tool_call_store.py)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from ollama_openai_bridge.tool_call_store import ToolCallStore
from ollama_openai_bridge.translate.carry import Recalled

ENTRY = Recalled("default", "gemini-3-pro-preview", "g1", {"google": {"thought_signature": "s"}})


def test_what_is_remembered_is_recalled_and_nothing_else() -> None:
    store = ToolCallStore()

    async def go() -> None:
        store.remember({"a" * 32: ENTRY})
        assert await store.recall(["a" * 32, "b" * 32]) == {"a" * 32: ENTRY}
        store.remember({})  # nothing to keep: no error

    asyncio.run(go())
    assert not store.shared


def test_entries_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    store = ToolCallStore(ttl=60)

    async def go() -> None:
        store.remember({"k": ENTRY})
        now[0] += 59
        assert await store.recall(["k"]) == {"k": ENTRY}
        now[0] += 2
        assert await store.recall(["k"]) == {}

    asyncio.run(go())


def test_memory_is_bounded_oldest_out_first() -> None:
    store = ToolCallStore(size=3)

    async def go() -> None:
        for i in range(5):
            store.remember({f"k{i}": ENTRY})
        assert len(store) == 3
        assert set(await store.recall([f"k{i}" for i in range(5)])) == {"k2", "k3", "k4"}

    asyncio.run(go())


def test_an_entry_too_large_is_not_kept_and_memory_is_bounded_in_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ollama_openai_bridge import tool_call_store as module

    store = ToolCallStore()
    huge = Recalled("u", "m", "id", {"google": {"thought_signature": "x" * module.MAX_EXTRA}})

    async def go() -> None:
        store.remember({"big": huge})
        assert await store.recall(["big"]) == {}
        monkeypatch.setattr(module, "MAX_BYTES", 3 * len(orjson.dumps(list(ENTRY))))
        for i in range(5):
            store.remember({f"k{i}": ENTRY})
        assert len(store) == 3

    asyncio.run(go())
