"""The request's resource owner: last in, first out, exactly once, whatever fails."""

from __future__ import annotations

import asyncio

import pytest

from ollama_openai_bridge.owner import Owner


def test_callbacks_run_newest_first_once() -> None:
    ran: list[str] = []

    async def later(name: str) -> None:
        ran.append(name)

    async def scenario() -> None:
        async with Owner() as owner:
            owner.callback(ran.append, "slot")
            owner.push_async_callback(later, "stream")
            owner.callback(ran.append, "gauge")
        await owner.aclose()  # again: nothing left to run

    asyncio.run(scenario())
    assert ran == ["gauge", "stream", "slot"]


def test_one_failure_does_not_stop_the_rest() -> None:
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("first")

    async def cancelled() -> None:
        raise asyncio.CancelledError

    owner = Owner()
    owner.callback(ran.append, "slot")
    owner.push_async_callback(cancelled)
    owner.callback(boom)
    with pytest.raises(RuntimeError, match="first"):
        asyncio.run(owner.aclose())
    assert ran == ["slot"]  # released although two callbacks after it failed


def test_pop_all_moves_everything_to_the_new_owner() -> None:
    ran: list[int] = []
    owner = Owner()
    owner.callback(ran.append, 1)
    moved = owner.pop_all()
    asyncio.run(owner.aclose())
    assert ran == []
    asyncio.run(moved.aclose())
    asyncio.run(moved.aclose())
    assert ran == [1]
