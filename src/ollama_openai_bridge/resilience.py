"""Protection for the backend and for the proxy itself: a circuit breaker and a concurrency gate.

Both are plain objects owned by the app (no globals) and driven by the upstream client and the
routes; both fail fast with a 503 and a message that says what is happening and for how long.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING

from ollama_openai_bridge.errors import BreakerOpen, Busy, UpstreamTimeout, UpstreamUnavailable

if TYPE_CHECKING:
    from ollama_openai_bridge.config import Settings

# 5xx statuses about the request, not the server (RFC 9110): 501, the server does not support
# what the request asks for (section 15.6.2); 505, the request's HTTP version (15.6.6).
REQUEST_SPECIFIC_5XX = frozenset({501, 505})
# Envoy's "gateway errors" (outlier detection, consecutive_gateway_failure): the backend, or a
# proxy in front of it, cannot serve anyone right now. A 500 is not one: vLLM answers a bare 500
# both for a request its engine failed on (EngineGenerateError, "could be request specific") and
# for a dead engine (EngineDeadError) -- vllm/entrypoints/launcher.py -- so only a *rate* of 500s
# says something about the backend, never a run of them.
GATEWAY_STATUSES = frozenset({502, 503, 504})


class BreakerState(IntEnum):
    # The values are what the metric reports.
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


# The members as module globals: a global is read several times faster than an enum member
# through its class (EnumType attribute access), and before() and success() run on every call.
CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


class CircuitBreaker:
    """One backend's circuit breaker, fed one outcome per client call -- a whole retry sequence
    of :meth:`Upstream.send <ollama_openai_bridge.upstream.Upstream.send>` is one call, so a
    request retried three times counts once.

    Outcomes (:meth:`record` sorts a status): :meth:`success` -- the backend answered in its own
    words, any status below 500, or 501/505 (the request's problem); :meth:`failure` -- a sick
    backend: no answer (refused, reset, timeout) or a 502/503/504 (``gateway=True``), or another
    5xx such as 500 (``gateway=False``); :meth:`abandon` -- no verdict (the client cancelled).

    It opens (calls then fail at once with :class:`BreakerOpen`, a 503) when either

    * the failure rate over the last ``window`` seconds (whole-second buckets: resilience4j's
      TIME_BASED sliding window) reaches ``failure_rate`` percent, once the window holds at least
      ``min_calls`` calls (resilience4j's failureRateThreshold and minimumNumberOfCalls; Envoy's
      failure_percentage_threshold with its request_volume); or
    * while the window holds fewer calls than that, so that no rate can be judged, ``threshold``
      gateway failures come in a row with no other outcome between (Envoy's
      consecutive_gateway_failure): a dead backend under light traffic. Under heavier traffic
      this rule is off: a restart of a second would fail every call in flight at once.

    After ``cooldown`` seconds it is half-open: up to ``half_open_calls`` trial calls go through
    at a time; that many successes close it (with an empty window), any failure re-opens it for
    another ``cooldown``. Trial calls that report nothing for a ``cooldown`` are given up, so it
    never stays half-open for good. ``threshold`` 0 disables the breaker.

    Per call: no allocation; a success on a closed breaker is a clock read and two attribute
    updates, and a rotation of the buckets once a second. ``on_change(state, reason)`` is called
    on every change of state (the metric, the log).
    """

    def __init__(
        self,
        threshold: int = 5,
        cooldown: float = 30.0,
        *,
        failure_rate: float = 50.0,
        window: int = 30,
        min_calls: int = 20,
        half_open_calls: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failure_rate = failure_rate  # percent
        self.window = window  # seconds, one bucket each
        self.min_calls = min_calls
        self.half_open_calls = half_open_calls
        self.on_change: Callable[[BreakerState, str], None] | None = None
        self._clock = clock
        self.state = CLOSED
        self.reason = ""  # why it opened, for the 503 and the log
        self.consecutive = 0  # gateway failures in a row
        self._opened_at = 0.0
        self._trials = 0  # trial calls out while half-open
        self._trial_successes = 0
        self._trial_at = 0.0  # last trial call let through or reported
        # The window: this second's counts, and per-second buckets of the seconds before it.
        self._second = int(clock())
        self._next_second = self._second + 1
        self._calls = 0
        self._failures = 0
        self._bucket_calls = [0] * window
        self._bucket_failures = [0] * window
        self._past_calls = 0  # sums of the buckets
        self._past_failures = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> CircuitBreaker:
        """The breaker the ``CIRCUIT_BREAKER_*`` settings describe (docs/CONFIGURATION.md)."""
        return cls(
            settings.circuit_breaker_threshold,
            settings.circuit_breaker_cooldown,
            failure_rate=settings.circuit_breaker_failure_rate,
            window=settings.circuit_breaker_window,
            min_calls=settings.circuit_breaker_min_calls,
            half_open_calls=settings.circuit_breaker_half_open_calls,
        )

    # --- admission ------------------------------------------------------------------------------

    def before(self) -> None:
        """Admit one call, or raise :class:`BreakerOpen` (its message says why it opened and
        when the next call may go through). Call it once per call, before the first attempt."""
        if self.state is CLOSED:
            return
        now = self._clock()
        if self.state is OPEN:
            remaining = self._opened_at + self.cooldown - now
            if remaining > 0:
                raise BreakerOpen(
                    f"upstream unavailable: circuit breaker open: {self.reason}; "
                    f"next attempt in {math.ceil(remaining)} s"
                )
            self._trials = self._trial_successes = 0
            self._change(HALF_OPEN)
        if self._trials < self.half_open_calls or now - self._trial_at > self.cooldown:
            if self._trials >= self.half_open_calls:
                self._trials = 0  # those out never reported back: given up
            self._trials += 1
            self._trial_at = now
            return
        raise BreakerOpen(
            f"upstream unavailable: circuit breaker open: {self.reason}; trial calls are under way"
        )

    # --- outcomes ---------------------------------------------------------------------------

    def success(self) -> None:
        """The call was answered (any status but a sick 5xx)."""
        now = self._clock()
        if now >= self._next_second:
            self._rotate(now)
        self._calls += 1
        self.consecutive = 0
        if self.state is not CLOSED:
            self._trial_succeeded(now)

    def failure(self, gateway: bool) -> None:
        """The call failed in a way that says the backend is sick. ``gateway``: it got no
        answer (connect error, reset, timeout) or a 502/503/504; else another sick 5xx."""
        now = self._clock()
        if now >= self._next_second:
            self._rotate(now)
        self._calls += 1
        self._failures += 1
        self.consecutive = self.consecutive + 1 if gateway else 0
        if self.state is CLOSED:
            if self.threshold:
                self._judge(now, gateway)
        elif self.state is HALF_OPEN:
            self._open(now, f"a trial call failed after {self.cooldown:g} s open")
        # OPEN: a call let through before it opened; nothing more to decide

    def record(self, status: int) -> None:
        """The call's final answer had ``status``: a success or a failure (see the class)."""
        if status < 500 or status in REQUEST_SPECIFIC_5XX:
            self.success()
        else:
            self.failure(status in GATEWAY_STATUSES)

    def record_error(self, exc: BaseException) -> None:
        """The call's answer had begun (its headers came) but ended with ``exc`` before it could
        be used: no data in time or the connection lost is a gateway failure; anything else
        (the client cancelled, a malformed answer) is no verdict on the backend."""
        if isinstance(exc, UpstreamUnavailable | UpstreamTimeout | TimeoutError):
            self.failure(gateway=True)
        else:
            self.abandon()

    def abandon(self) -> None:
        """The call let through ended with no verdict (cancelled): if it was a trial call, the
        next call may be one."""
        if self.state is HALF_OPEN and self._trials:
            self._trials -= 1

    def counts(self) -> tuple[int, int]:
        """``(calls, failures)`` in the window now."""
        now = self._clock()
        if now >= self._next_second:
            self._rotate(now)
        return self._past_calls + self._calls, self._past_failures + self._failures

    # --- inside -------------------------------------------------------------------------------

    def _judge(self, now: float, gateway: bool) -> None:
        calls = self._past_calls + self._calls
        if calls >= self.min_calls:
            failed = self._past_failures + self._failures
            if failed * 100 >= self.failure_rate * calls:
                self._open(
                    now,
                    f"{failed} of the last {calls} calls in {self.window} s failed "
                    f"({failed * 100 / calls:.0f} %, the limit is {self.failure_rate:g} %)",
                )
        elif gateway and self.consecutive >= self.threshold:
            run = self.consecutive
            self._open(
                now,
                f"{run} call{'s' if run > 1 else ''} in a row got no answer or a 502/503/504",
            )

    def _trial_succeeded(self, now: float) -> None:
        if self.state is not HALF_OPEN:
            return  # OPEN: a call let through before it opened says nothing of now
        if self._trials:
            self._trials -= 1
        self._trial_successes += 1
        self._trial_at = now
        if self._trial_successes >= self.half_open_calls:
            # A fresh window: the failures that opened it are history, and would re-open it at
            # the first failure otherwise (resilience4j resets its metrics on closing too).
            self._past_calls = self._past_failures = self._calls = self._failures = 0
            self._bucket_calls[:] = self._bucket_failures[:] = [0] * self.window
            self.consecutive = 0
            self.reason = ""
            self._change(CLOSED)

    def _open(self, now: float, reason: str) -> None:
        self._opened_at = now
        self.reason = reason
        self._trials = self._trial_successes = 0
        self._change(OPEN)

    def _change(self, state: BreakerState) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(state, self.reason)

    def _rotate(self, now: float) -> None:
        """Move on to the second ``now`` is in: this second's counts go into its bucket, and
        the buckets that left the window are emptied (taken off the sums)."""
        second = int(now)
        calls, failures, size = self._bucket_calls, self._bucket_failures, self.window
        if second - self._second >= size:  # everything recorded is older than the window
            for i in range(size):
                calls[i] = failures[i] = 0
            self._past_calls = self._past_failures = 0
        else:
            slot = self._second % size
            calls[slot], failures[slot] = self._calls, self._failures
            self._past_calls += self._calls
            self._past_failures += self._failures
            for past in range(self._second + 1, second + 1):
                slot = past % size  # held the second ``past - size``: out of the window now
                self._past_calls -= calls[slot]
                self._past_failures -= failures[slot]
                calls[slot] = failures[slot] = 0
        self._calls = self._failures = 0
        self._second = second
        self._next_second = second + 1


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
