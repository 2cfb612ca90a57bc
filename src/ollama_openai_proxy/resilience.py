"""Protection for the backend and for the proxy itself: a circuit breaker and a concurrency gate.

Both are plain objects owned by the app (no globals) and driven by the upstream client and the
routes; both fail fast with a 503 and a message that says what is happening and for how long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from enum import IntEnum

from ollama_openai_proxy.errors import BreakerOpen, Busy


class BreakerState(IntEnum):
    # The values are what the metric reports.
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures (connection errors, timeouts, 5xx); while
    open, calls fail at once instead of piling onto a dead backend. After ``cooldown`` seconds one
    probe is let through (half-open): its success closes the breaker, its failure re-opens it.
    A probe that reports neither (cancelled: the client left, a first-byte timeout) is given up
    with :meth:`abandon`, or after another ``cooldown``, so the breaker can never stay half-open
    for good. ``threshold`` 0 disables the breaker."""

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._probe_at = 0.0

    def before(self) -> None:
        """Raise BreakerOpen unless a call may go to the backend now."""
        if self.state is BreakerState.CLOSED or self.threshold == 0:
            return
        now = self._clock()
        remaining = self._opened_at + self.cooldown - now
        if self.state is BreakerState.OPEN and remaining <= 0:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN and (
            not self._probing or now - self._probe_at > self.cooldown  # a probe lost
        ):
            self._probing = True  # this call is the probe
            self._probe_at = now
            return
        if self.state is BreakerState.HALF_OPEN:
            raise BreakerOpen(
                f"upstream unavailable: circuit breaker open after {self.failures} consecutive "
                "failures; a probe call is under way"
            )
        raise BreakerOpen(
            f"upstream unavailable: circuit breaker open after {self.failures} consecutive "
            f"failures; next attempt in {max(remaining, 0):.0f} s"
        )

    def abandon(self) -> None:
        """The call let through ended without an answer (cancelled): if it was the probe, the
        next call may probe."""
        self._probing = False

    def success(self) -> None:
        self.failures = 0
        self._probing = False
        self.state = BreakerState.CLOSED

    def failure(self) -> None:
        self.failures += 1
        self._probing = False
        if self.threshold and (
            self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold
        ):
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()


class ConcurrencyLimiter:
    """At most ``limit`` backend calls at once (a stream counts until it ends); up to ``queue``
    more wait, first come first served, up to ``timeout`` seconds for a slot; beyond that, 503 in
    Ollama's own words (its scheduler's "maximum pending requests exceeded")."""

    def __init__(self, limit: int, queue: int, timeout: float) -> None:
        self.limit = limit
        self.queue = queue
        self.timeout = timeout
        self.active = 0
        self.waiting = 0
        self.granted = 0  # slots ever granted: tells an idle process whether anything happened
        self._slots = asyncio.Semaphore(limit)
        self._slot = _Slot(self)  # no per-request state: one context manager serves all

    def slot(self) -> _Slot:
        """``async with limiter.slot():`` holds one slot for the body (raises :class:`Busy` when
        none is free within ``timeout`` or the queue is full). The only way to take a slot: it
        is given back exactly once, however the body ends."""
        return self._slot

    async def _acquire(self) -> None:
        if self._slots.locked():
            if self.waiting >= self.queue:
                raise Busy("server busy, please try again.  maximum pending requests exceeded")
            self.waiting += 1
            try:
                async with asyncio.timeout(self.timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise Busy(
                    f"server busy, please try again.  no free slot within {self.timeout:g} s"
                ) from None
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        self.active += 1
        self.granted += 1


class _Slot:
    """The async context manager of :meth:`ConcurrencyLimiter.slot` (a class: a generator-based
    one costs a few microseconds more per request)."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: ConcurrencyLimiter) -> None:
        self._limiter = limiter

    async def __aenter__(self) -> None:
        await self._limiter._acquire()

    async def __aexit__(self, *exc: object) -> None:
        limiter = self._limiter
        limiter.active -= 1
        limiter._slots.release()
