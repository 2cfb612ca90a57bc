"""The circuit breaker, driven by an injected clock (no sleeps), and how ``Upstream.send`` feeds
it: one outcome per client call, retries included.

The scenarios of issue #14: a few requests whose content makes the backend answer 500 must not
open it, nor must a backend failing 15 % of calls; a dead backend must; 4xx and cancellations
never count."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any, cast

import aiohttp
import pytest

from ollama_openai_bridge import upstream as upstream_module
from ollama_openai_bridge.config import Settings
from ollama_openai_bridge.errors import BreakerOpen, UpstreamTimeout, UpstreamUnavailable
from ollama_openai_bridge.resilience import BreakerState, CircuitBreaker
from ollama_openai_bridge.topology import UpstreamSpec
from ollama_openai_bridge.upstream import Upstream, aiohttp_client


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def breaker(
    clock: Clock,
    *,
    threshold: int = 5,
    failure_rate: float = 50.0,
    window: int = 30,
    min_calls: int = 20,
    half_open_calls: int = 1,
    cooldown: float = 30.0,
) -> CircuitBreaker:
    return CircuitBreaker(
        threshold,
        cooldown,
        failure_rate=failure_rate,
        window=window,
        min_calls=min_calls,
        half_open_calls=half_open_calls,
        clock=clock,
    )


def state(b: CircuitBreaker) -> BreakerState:
    # a call, so that mypy does not narrow b.state across the calls that change it
    return b.state


def fails_fast(b: CircuitBreaker) -> str:
    with pytest.raises(BreakerOpen) as info:
        b.before()
    assert info.value.status == 503
    return info.value.message


def call(b: CircuitBreaker, status: int) -> None:
    """One client call admitted and answered with ``status``."""
    b.before()
    b.record(status)


def opened_by_a_dead_backend(clock: Clock, **kwargs: Any) -> CircuitBreaker:
    b = breaker(clock, **kwargs)
    while state(b) is BreakerState.CLOSED:
        b.before()
        b.failure(gateway=True)
    return b


# --- what counts ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 408, 413, 422, 429, 501, 505])
def test_answers_below_500_and_request_specific_5xx_are_successes(status: int) -> None:
    # a 4xx is the request's problem (or the client's quota), 501/505 the request's (RFC 9110)
    b = breaker(Clock(), min_calls=1, failure_rate=1.0, threshold=1)
    for _ in range(50):
        call(b, status)
    assert b.counts() == (50, 0)
    assert state(b) is BreakerState.CLOSED


@pytest.mark.parametrize(("status", "gateway"), [(500, False), (507, False), (502, True)])
def test_sick_statuses_are_failures_and_only_gateway_errors_run_in_a_row(
    status: int, gateway: bool
) -> None:
    b = breaker(Clock())
    call(b, 502)
    call(b, status)
    assert b.counts() == (2, 2)
    assert b.consecutive == (2 if gateway else 0)  # a 500 is an answer: it ends a run (Envoy)


@pytest.mark.parametrize("status", [503, 504])
def test_503_and_504_are_gateway_failures(status: int) -> None:
    b = breaker(Clock())
    call(b, status)
    assert (b.counts(), b.consecutive) == ((1, 1), 1)


def test_a_cancelled_call_never_counts() -> None:
    b = breaker(Clock(), threshold=1)
    for _ in range(100):
        b.before()
        b.abandon()
        b.before()
        b.record_error(asyncio.CancelledError())
    assert b.counts() == (0, 0)
    assert state(b) is BreakerState.CLOSED


def test_an_answer_lost_after_its_headers_is_a_gateway_failure() -> None:
    b = breaker(Clock())
    for exc in (UpstreamTimeout("stalled"), UpstreamUnavailable("reset"), TimeoutError()):
        b.before()
        b.record_error(exc)
    assert (b.counts(), b.consecutive) == ((3, 3), 3)


# --- when it opens ----------------------------------------------------------------------------


def test_two_request_specific_failures_among_successes_never_open_it() -> None:
    clock = Clock()
    b = breaker(clock)
    for i in range(200):
        call(b, 500 if i in (37, 38) else 200)  # two bad requests, one after the other
        clock.advance(0.1)
    assert state(b) is BreakerState.CLOSED
    assert b.counts() == (200, 2)


def test_a_backend_failing_15_percent_of_calls_never_opens_it() -> None:
    clock, rng = Clock(), random.Random(14)
    b = breaker(clock)
    failed = 0
    for _ in range(12_000):  # 20 calls a second for 10 minutes
        b.before()  # would raise if it ever opened
        if rng.random() < 0.15:
            failed += 1
            b.failure(gateway=rng.random() < 0.5)
        else:
            b.success()
        clock.advance(0.05)
    assert state(b) is BreakerState.CLOSED
    assert 1600 < failed < 2000  # the scenario really was ~15 %


def test_a_dead_backend_under_traffic_opens_it_at_min_calls_by_the_rate() -> None:
    clock = Clock()
    b = breaker(clock, min_calls=20)
    for _ in range(19):  # 500s: no run of gateway errors, so only the rate can open it
        call(b, 500)
        clock.advance(0.01)
    assert state(b) is BreakerState.CLOSED  # 19 calls: too few to judge a rate by
    call(b, 500)
    assert state(b) is BreakerState.OPEN
    message = fails_fast(b)
    assert message == (
        "upstream unavailable: circuit breaker open: 20 of the last 20 calls in 30 s failed "
        "(100 %, the limit is 50 %); next attempt in 30 s"
    )


def test_the_rate_opens_it_at_the_threshold_not_below() -> None:
    clock = Clock()
    b = breaker(clock, min_calls=20, failure_rate=50.0)
    for _ in range(10):
        call(b, 200)
    for _ in range(9):
        call(b, 500)
    call(b, 200)  # 9 of 20: 45 %
    assert state(b) is BreakerState.CLOSED
    call(b, 500)  # 10 of 21: 47.6 %
    assert state(b) is BreakerState.CLOSED
    call(b, 500)  # 11 of 22: 50 %
    assert state(b) is BreakerState.OPEN
    assert "11 of the last 22 calls in 30 s failed (50 %" in fails_fast(b)


def test_a_dead_backend_under_light_traffic_opens_it_after_threshold_in_a_row() -> None:
    clock = Clock()
    b = breaker(clock, threshold=5, min_calls=20)
    for _ in range(4):
        b.before()
        b.failure(gateway=True)  # connection refused, after its retries
        clock.advance(2.0)
    assert state(b) is BreakerState.CLOSED
    b.before()
    b.failure(gateway=True)
    assert state(b) is BreakerState.OPEN
    assert fails_fast(b) == (
        "upstream unavailable: circuit breaker open: 5 calls in a row got no answer or a "
        "502/503/504; next attempt in 30 s"
    )


def test_a_run_of_gateway_errors_under_traffic_is_judged_by_the_rate() -> None:
    # A restart of a second fails every call in flight at once: with enough calls in the
    # window, only the rate decides.
    clock = Clock()
    b = breaker(clock, threshold=5, min_calls=20)
    for _ in range(100):
        call(b, 200)
        clock.advance(0.1)
    for _ in range(40):
        call(b, 503)
    assert b.consecutive == 40
    assert state(b) is BreakerState.CLOSED  # 40 of 140: 29 %


def test_a_success_ends_a_run() -> None:
    b = breaker(Clock(), threshold=3, min_calls=100)
    for _ in range(10):
        call(b, 502)
        call(b, 502)
        call(b, 200)
    assert state(b) is BreakerState.CLOSED
    assert b.consecutive == 0


def test_the_window_slides_and_old_failures_expire() -> None:
    clock = Clock(1000.0)
    b = breaker(clock, window=30, min_calls=20)
    for _ in range(15):
        call(b, 500)
    assert b.counts() == (15, 15)
    clock.advance(10.0)
    for _ in range(3):
        call(b, 200)
    assert b.counts() == (18, 15)
    clock.advance(19.9)  # 1029.9: the first second (1000) is still in the window
    assert b.counts() == (18, 15)
    clock.advance(0.1)  # 1030.0: it left
    assert b.counts() == (3, 0)
    for _ in range(10):  # would have opened it with the 15 old failures: 25 of 28
        call(b, 500)
    assert state(b) is BreakerState.CLOSED  # 10 of 13: too few calls
    assert b.counts() == (13, 10)
    clock.advance(10.0)  # the 3 successes leave too
    assert b.counts() == (10, 10)


def test_a_long_silence_empties_the_window() -> None:
    clock = Clock()
    b = breaker(clock, window=5, min_calls=5, failure_rate=60.0)
    for second in range(5):
        clock.now = 1000.0 + second
        call(b, 200)
        call(b, 500)
    assert b.counts() == (10, 5)
    clock.advance(3600.0)
    assert b.counts() == (0, 0)
    for _ in range(4):
        call(b, 500)
    assert state(b) is BreakerState.CLOSED  # 4 calls: the old ones do not make up min_calls


def test_a_one_second_window() -> None:
    clock = Clock(1000.5)
    b = breaker(clock, window=1, min_calls=3)
    call(b, 500)
    call(b, 500)
    clock.advance(0.5)
    assert b.counts() == (0, 0)
    call(b, 500)
    call(b, 500)
    call(b, 500)
    assert state(b) is BreakerState.OPEN


def test_threshold_zero_disables_the_breaker() -> None:
    b = breaker(Clock(), threshold=0, min_calls=1)
    for _ in range(100):
        call(b, 503)
    assert state(b) is BreakerState.CLOSED
    b.before()


# --- open, half-open, closed --------------------------------------------------------------------


def test_open_fails_fast_until_the_cooldown_saying_how_long() -> None:
    clock = Clock()
    b = opened_by_a_dead_backend(clock, cooldown=30.0)
    clock.advance(12.4)
    assert fails_fast(b).endswith("next attempt in 18 s")  # 17.6 s, rounded up
    clock.advance(17.5)
    assert fails_fast(b).endswith("next attempt in 1 s")  # never "in 0 s" while open
    assert b.counts() == (5, 5)  # refusals are not calls


def test_half_open_lets_a_limited_number_of_trial_calls_through() -> None:
    clock = Clock()
    b = opened_by_a_dead_backend(clock, half_open_calls=2)
    clock.advance(30.0)
    b.before()
    b.before()
    assert state(b) is BreakerState.HALF_OPEN
    assert fails_fast(b).endswith("; trial calls are under way")
    b.success()  # one back: another may go
    assert state(b) is BreakerState.HALF_OPEN  # one success is not enough with 2 trials
    b.before()
    assert "trial calls are under way" in fails_fast(b)
    b.success()
    assert state(b) is BreakerState.CLOSED
    assert (b.counts(), b.consecutive) == ((0, 0), 0)  # closed with a fresh window
    b.before()


def test_a_failed_trial_call_reopens_it_for_another_cooldown() -> None:
    clock = Clock()
    b = opened_by_a_dead_backend(clock, half_open_calls=3)
    clock.advance(30.0)
    b.before()
    b.before()
    b.success()
    b.failure(gateway=False)
    assert state(b) is BreakerState.OPEN
    assert fails_fast(b) == (
        "upstream unavailable: circuit breaker open: a trial call failed after 30 s open; "
        "next attempt in 30 s"
    )
    clock.advance(30.0)
    b.before()
    assert state(b) is BreakerState.HALF_OPEN


def test_an_abandoned_trial_call_frees_its_place_at_once() -> None:
    clock = Clock()
    b = opened_by_a_dead_backend(clock)
    clock.advance(30.0)
    b.before()  # the trial call
    fails_fast(b)
    b.abandon()  # cancelled: Upstream.send reports it
    b.before()  # the next call is the trial
    b.success()
    assert state(b) is BreakerState.CLOSED


def test_trial_calls_never_heard_of_again_are_given_up_after_a_cooldown() -> None:
    clock = Clock()
    b = opened_by_a_dead_backend(clock, cooldown=30.0)
    clock.advance(30.0)
    b.before()
    clock.advance(29.0)
    fails_fast(b)
    clock.advance(2.0)
    b.before()
    fails_fast(b)


def test_a_call_let_through_before_it_opened_cannot_close_it() -> None:
    clock = Clock()
    b = breaker(clock, threshold=2)
    b.before()  # a long call, let through while closed
    call(b, 502)
    call(b, 502)
    assert state(b) is BreakerState.OPEN
    b.success()  # the long call ends well: it says nothing of the backend now
    assert state(b) is BreakerState.OPEN
    fails_fast(b)


def test_every_change_of_state_is_told() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1)
    changes: list[tuple[BreakerState, str]] = []
    b.on_change = lambda s, reason: changes.append((s, reason))
    call(b, 503)
    clock.advance(30.0)
    b.before()
    b.success()
    assert changes == [
        (BreakerState.OPEN, "1 call in a row got no answer or a 502/503/504"),
        (BreakerState.HALF_OPEN, "1 call in a row got no answer or a 502/503/504"),
        (BreakerState.CLOSED, ""),
    ]


def test_from_settings() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        circuit_breaker_threshold=7,
        circuit_breaker_cooldown=12.5,
        circuit_breaker_failure_rate=25,
        circuit_breaker_window=60,
        circuit_breaker_min_calls=40,
        circuit_breaker_half_open_calls=4,
    )
    b = CircuitBreaker.from_settings(settings)
    assert (b.threshold, b.cooldown, b.failure_rate, b.window, b.min_calls, b.half_open_calls) == (
        7,
        12.5,
        25.0,
        60,
        40,
        4,
    )


# --- Upstream.send: one outcome per call --------------------------------------------------------


class Hang:
    """An attempt that never answers (until cancelled)."""


class StubResponse:
    def __init__(self, status: int, retry_after: str | None = None) -> None:
        self.status = status
        self.headers = {} if retry_after is None else {"Retry-After": retry_after}
        self.released = False

    def release(self) -> None:
        self.released = True


class StubSession:
    """``aiohttp.ClientSession.request``: each attempt takes the next outcome, a status or an
    exception to raise."""

    def __init__(self, *outcomes: int | BaseException | type[Hang]) -> None:
        self.outcomes = list(outcomes)
        self.attempts = 0
        self.hanging = asyncio.Event()  # set when an attempt hangs
        self.retry_after: str | None = None  # the Retry-After of every answer

    async def request(self, method: str, url: str, **kwargs: Any) -> StubResponse:
        self.attempts += 1
        outcome = self.outcomes.pop(0)
        if outcome is Hang:
            self.hanging.set()
            await asyncio.Event().wait()
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, int)
        return StubResponse(outcome, self.retry_after)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_module, "_backoff", lambda attempt: 0.0)


def upstream_with(
    b: CircuitBreaker, *outcomes: int | BaseException | type[Hang], retries: int = 3
) -> tuple[Upstream, StubSession]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, max_retries=retries, upstream_http_client="aiohttp"
    )
    up = Upstream(settings, UpstreamSpec("default", "http://backend.test/v1"), b)
    aiohttp_client()  # the stub session raises aiohttp's failures, as an aiohttp upstream would
    session = StubSession(*outcomes)
    up._session = cast(aiohttp.ClientSession, session)
    return up, session


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def test_one_request_retried_three_times_counts_once() -> None:
    b = breaker(Clock(), threshold=1, min_calls=1)
    up, session = upstream_with(b, 500, 500, 500, 500)
    resp = run(up.send("POST", "/chat/completions", b"{}"))
    assert (resp.status, session.attempts) == (500, 4)
    assert b.counts() == (1, 1)
    # min_calls=1 and a 100 % rate: one failed call opens it -- once, for 4 failed attempts
    assert state(b) is BreakerState.OPEN


def test_a_request_that_succeeds_on_its_last_retry_is_a_success() -> None:
    b = breaker(Clock())
    up, session = upstream_with(b, 503, aiohttp.ServerDisconnectedError(), 502, 200)
    assert run(up.send("POST", "/chat/completions", b"{}")).status == 200
    assert session.attempts == 4
    assert (b.counts(), b.consecutive) == ((1, 0), 0)


def test_refused_connections_after_every_retry_are_one_gateway_failure() -> None:
    b = breaker(Clock())
    refused = [aiohttp.ClientOSError(111, "Connection refused") for _ in range(4)]
    up, session = upstream_with(b, *refused)
    with pytest.raises(UpstreamUnavailable):
        run(up.send("POST", "/chat/completions", b"{}"))
    assert session.attempts == 4
    assert (b.counts(), b.consecutive) == ((1, 1), 1)


def test_a_timeout_is_one_gateway_failure() -> None:
    b = breaker(Clock())
    up, _ = upstream_with(b, TimeoutError())
    with pytest.raises(TimeoutError):
        run(up.send("POST", "/chat/completions", b"{}", total=5.0))
    assert (b.counts(), b.consecutive) == ((1, 1), 1)


def test_a_4xx_is_a_success_and_is_not_retried() -> None:
    b = breaker(Clock())
    up, session = upstream_with(b, 400)
    assert run(up.send("POST", "/chat/completions", b"{}")).status == 400
    assert (session.attempts, b.counts()) == (1, (1, 0))


def test_a_cancelled_request_is_no_verdict() -> None:
    clock = Clock()
    b = opened_by_a_dead_backend(clock)
    clock.advance(30.0)
    up, session = upstream_with(b, 503, Hang)

    async def scenario() -> None:
        task = asyncio.create_task(up.send("POST", "/chat/completions", b"{}"))
        await session.hanging.wait()  # the trial call's retry is under way
        assert session.attempts == 2
        fails_fast(b)  # it holds the one trial place
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    before = b.counts()
    run(scenario())
    assert b.counts() == before
    b.before()  # its place is free again
    assert state(b) is BreakerState.HALF_OPEN


def test_retries_stop_once_the_breaker_opened() -> None:
    b = breaker(Clock(), threshold=2)

    class OthersFail(StubSession):
        async def request(self, method: str, url: str, **kwargs: Any) -> StubResponse:
            call(b, 502)  # meanwhile, other requests open the breaker
            call(b, 502)
            return await super().request(method, url, **kwargs)

    up, _ = upstream_with(b)
    session = OthersFail(503, 503, 503, 503)
    up._session = cast(aiohttp.ClientSession, session)
    assert run(up.send("POST", "/chat/completions", b"{}")).status == 503
    assert session.attempts == 1  # no retry against a backend the breaker gave up on
    assert b.counts() == (3, 3)


def test_a_refused_call_is_not_sent() -> None:
    clock = Clock()
    b = opened_by_a_dead_backend(clock)
    up, session = upstream_with(b, 200)
    with pytest.raises(BreakerOpen):
        run(up.send("POST", "/chat/completions", b"{}"))
    assert session.attempts == 0


def test_unsettled_answers_are_left_to_the_caller() -> None:
    b = breaker(Clock())
    up, _ = upstream_with(b, 200, 500, 500, 500, 500)
    run(up.send("POST", "/chat/completions", b"{}", settle=False))
    run(up.send("POST", "/chat/completions", b"{}", settle=False))
    assert b.counts() == (0, 0)


def test_the_metric_follows_the_state() -> None:
    class Metrics:
        def __init__(self) -> None:
            self.states: list[int] = []

        def breaker_state(self, upstream: str, value: int) -> None:
            self.states.append(value)

        def upstream_done(self, *args: Any) -> None:
            pass

    clock = Clock()
    b = breaker(clock, threshold=1)
    metrics = Metrics()
    settings = Settings(_env_file=None, max_retries=0)  # type: ignore[call-arg]
    up = Upstream(settings, UpstreamSpec("default", "http://x/v1"), b, cast(Any, metrics))
    up._session = cast(aiohttp.ClientSession, StubSession(502, 200))
    resp = run(up.send("POST", "/chat/completions", b"{}"))
    assert resp.status == 502
    clock.advance(30.0)
    assert run(up.send("POST", "/chat/completions", b"{}")).status == 200
    assert metrics.states == [2, 1, 0]


def test_out_of_time_while_retrying_ends_as_the_last_attempt_did() -> None:
    # a 429 asking to wait longer than the time left: the backend is busy, not sick
    b = breaker(Clock())
    up, session = upstream_with(b, 429, 200)
    session.retry_after = "5"
    with pytest.raises(TimeoutError):
        run(up.send("POST", "/chat/completions", b"{}", total=0.001))
    assert (session.attempts, b.counts()) == (1, (1, 0))
    # a 503: that one is
    b = breaker(Clock())
    up, session = upstream_with(b, 503, 200)
    session.retry_after = "5"
    with pytest.raises(TimeoutError):
        run(up.send("POST", "/chat/completions", b"{}", total=0.001))
    assert (b.counts(), b.consecutive) == ((1, 1), 1)
