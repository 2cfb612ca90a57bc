"""The concurrency gate, driven by asyncio directly: each scenario runs in its own
``asyncio.run``, no sleeps beyond yielding to the loop. (The circuit breaker: test_breaker.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ollama_openai_bridge.errors import Busy
from ollama_openai_bridge.resilience import ConcurrencyLimiter

BUSY = "server busy, please try again.  maximum pending requests exceeded"


# --- concurrency limiter --------------------------------------------------------------------


async def settle() -> None:
    """Let every ready task run until it blocks (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


class Holder:
    """A task that takes a slot, notes when it got it, and holds it until released."""

    def __init__(self, limiter: ConcurrencyLimiter, name: str, order: list[str]) -> None:
        self.release = asyncio.Event()
        self.entered = False
        self.error: BaseException | None = None
        self._limiter, self._name, self._order = limiter, name, order
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async with self._limiter.slot():
                self.entered = True
                self._order.append(self._name)
                await self.release.wait()
        except Busy as exc:
            self.error = exc


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def assert_capacity(limiter: ConcurrencyLimiter) -> None:
    """Nothing is held: exactly ``limit`` callers get a slot at once and the next one queues
    (the semaphore was released neither too little nor too much)."""
    assert (limiter.active, limiter.waiting) == (0, 0)
    order: list[str] = []
    holders = [Holder(limiter, f"c{i}", order) for i in range(limiter.limit + 1)]
    await settle()
    assert [h.entered for h in holders] == [True] * limiter.limit + [False]
    if limiter.queue:
        assert (limiter.active, limiter.waiting) == (limiter.limit, 1)
    else:
        assert isinstance(holders[-1].error, Busy)
    for h in holders:
        h.release.set()
    await asyncio.gather(*(h.task for h in holders))
    assert all(h.entered for h in holders[:-1])
    assert holders[-1].entered == bool(limiter.queue)
    assert (limiter.active, limiter.waiting) == (0, 0)


def test_at_most_limit_holders_and_the_rest_wait_in_order() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit=2, queue=5, timeout=60.0)
        order: list[str] = []
        holders = [Holder(limiter, f"h{i}", order) for i in range(6)]
        await settle()
        assert order == ["h0", "h1"]
        assert (limiter.active, limiter.waiting) == (2, 4)
        # each freed slot goes to the longest waiter
        for i, expected in [(1, "h2"), (0, "h3"), (3, "h4"), (2, "h5")]:
            holders[i].release.set()
            await settle()
            assert order[-1] == expected
            assert limiter.active == 2
        assert limiter.waiting == 0
        for h in holders:
            h.release.set()
        await asyncio.gather(*(h.task for h in holders))
        assert order == ["h0", "h1", "h2", "h3", "h4", "h5"]
        assert limiter.granted == 6
        await assert_capacity(limiter)

    run(scenario)


def test_beyond_the_queue_an_immediate_busy() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit=1, queue=2, timeout=60.0)
        order: list[str] = []
        holders = [Holder(limiter, f"h{i}", order) for i in range(3)]
        await settle()
        assert (limiter.active, limiter.waiting) == (1, 2)
        with pytest.raises(Busy) as info:
            async with limiter.slot():
                pytest.fail("the body must not run")
        assert info.value.status == 503
        assert info.value.message == BUSY  # Ollama's wording, two spaces included
        assert (limiter.active, limiter.waiting) == (1, 2)
        for h in holders:
            h.release.set()
        await asyncio.gather(*(h.task for h in holders))
        assert order == ["h0", "h1", "h2"]
        await assert_capacity(limiter)

    run(scenario)


def test_queue_zero_refuses_at_once_when_all_slots_are_taken() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit=2, queue=0, timeout=60.0)
        order: list[str] = []
        holders = [Holder(limiter, f"h{i}", order) for i in range(3)]
        await settle()
        assert order == ["h0", "h1"]
        assert isinstance(holders[2].error, Busy)
        assert holders[2].error.message == BUSY
        assert holders[2].task.done()
        for h in holders:
            h.release.set()
        await asyncio.gather(*(h.task for h in holders))
        await assert_capacity(limiter)

    run(scenario)


def test_a_waiter_without_a_slot_in_time_gets_busy() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit=1, queue=1, timeout=0.01)
        holder = Holder(limiter, "h", [])
        await settle()
        with pytest.raises(Busy) as info:
            async with limiter.slot():
                pytest.fail("the body must not run")
        assert info.value.status == 503
        assert info.value.message == "server busy, please try again.  no free slot within 0.01 s"
        assert (limiter.active, limiter.waiting) == (1, 0)
        holder.release.set()
        await holder.task
        await assert_capacity(limiter)

    run(scenario)


def test_slot_released_when_the_body_returns() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit=2, queue=1, timeout=60.0)

        async def work() -> str:
            async with limiter.slot():
                assert limiter.active == 1
                return "done"

        assert await work() == "done"
        assert limiter.granted == 1
        await assert_capacity(limiter)

    run(scenario)


def test_slot_released_when_the_body_raises() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit=2, queue=1, timeout=60.0)
        with pytest.raises(ValueError, match="boom"):
            async with limiter.slot():
                raise ValueError("boom")
        await assert_capacity(limiter)

    run(scenario)


def test_slot_released_when_the_holder_is_cancelled() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit=1, queue=1, timeout=60.0)
        order: list[str] = []
        first, second = Holder(limiter, "first", order), Holder(limiter, "second", order)
        await settle()
        assert (limiter.active, limiter.waiting) == (1, 1)
        first.task.cancel()
        await settle()
        assert first.task.cancelled()
        assert order == ["first", "second"]  # the waiter got the freed slot
        assert (limiter.active, limiter.waiting) == (1, 0)
        second.release.set()
        await second.task
        await assert_capacity(limiter)

    run(scenario)


def test_a_cancelled_waiter_leaves_the_queue_without_a_slot() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit=1, queue=2, timeout=60.0)
        order: list[str] = []
        holders = [Holder(limiter, f"h{i}", order) for i in range(3)]
        await settle()
        assert (limiter.active, limiter.waiting) == (1, 2)
        holders[1].task.cancel()
        await settle()
        assert holders[1].task.cancelled()
        assert (limiter.active, limiter.waiting) == (1, 1)
        # its place in the queue is free again
        late = Holder(limiter, "late", order)
        await settle()
        assert (limiter.active, limiter.waiting) == (1, 2)
        for h in [*holders, late]:
            h.release.set()
        await asyncio.gather(holders[0].task, holders[2].task, late.task)
        assert order == ["h0", "h2", "late"]
        await assert_capacity(limiter)

    run(scenario)


def test_a_waiter_cancelled_as_it_is_granted_gives_the_slot_on() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit=1, queue=2, timeout=60.0)
        order: list[str] = []
        go = asyncio.Event()
        waiters: list[Holder] = []

        async def first() -> None:
            async with limiter.slot():
                await go.wait()
            # The slot was just handed to w0; cancel w0 before it resumes.
            waiters[0].task.cancel()

        task = asyncio.create_task(first())
        await settle()
        waiters.extend(Holder(limiter, f"w{i}", order) for i in range(2))
        await settle()
        assert (limiter.active, limiter.waiting) == (1, 2)
        go.set()
        await task
        await settle()
        assert waiters[0].task.cancelled()
        assert order == ["w1"]  # w0's slot went on to the next in line
        assert (limiter.active, limiter.waiting) == (1, 0)
        waiters[1].release.set()
        await waiters[1].task
        await assert_capacity(limiter)

    run(scenario)


def test_a_waiter_timing_out_does_not_take_or_leak_a_slot() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit=2, queue=3, timeout=0.01)
        order: list[str] = []
        holders = [Holder(limiter, f"h{i}", order) for i in range(2)]
        await settle()
        waiters = [Holder(limiter, f"w{i}", order) for i in range(3)]
        await asyncio.gather(*(w.task for w in waiters))
        assert all(isinstance(w.error, Busy) for w in waiters)
        assert (limiter.active, limiter.waiting) == (2, 0)
        for h in holders:
            h.release.set()
        await asyncio.gather(*(h.task for h in holders))
        assert order == ["h0", "h1"]
        await assert_capacity(limiter)

    run(scenario)


def test_slot_is_only_an_async_context_manager() -> None:
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(limit=1, queue=0, timeout=1.0)
        slot = limiter.slot()
        assert not hasattr(slot, "__enter__")
        assert limiter.active == 0  # creating it takes nothing
        async with slot:
            assert limiter.active == 1
        await assert_capacity(limiter)

    run(scenario)
