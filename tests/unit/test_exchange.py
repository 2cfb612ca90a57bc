"""The fallback chain of :func:`exchange.execute`, with stand-ins for the upstream clients (what
execute calls of an Upstream: ``name``, ``request_timeout``, ``send``, ``read``) and for the
metrics: no network, no sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import pytest

from ollama_openai_bridge.access import AccessRecord
from ollama_openai_bridge.balance import Balancer, Pick
from ollama_openai_bridge.balance_config import BalanceSpec, OutlierSpec, ReplicaSpec
from ollama_openai_bridge.errors import (
    BreakerOpen,
    UpstreamEndpointNotFound,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRefusedParameter,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ollama_openai_bridge.exchange import (
    SSE,
    Attempt,
    EventStream,
    Plan,
    Reply,
    Route,
    adapt,
    execute,
    may_fall_back,
)
from ollama_openai_bridge.metrics import Metrics
from ollama_openai_bridge.owner import Owner
from ollama_openai_bridge.policy import Policy
from ollama_openai_bridge.refusals import Refusals
from ollama_openai_bridge.resilience import CircuitBreaker
from ollama_openai_bridge.sse import SSEEvent
from ollama_openai_bridge.upstream import Upstream

JSON = "application/json"
OK = orjson.dumps({"id": "chatcmpl-1", "choices": []})


# --- stand-ins ------------------------------------------------------------------------------


class Hang:
    """A send, or a read, that never answers (until cancelled)."""


class Content:
    """``resp.content``: hands out the scripted chunks, then b"" (the end)."""

    def __init__(self, chunks: list[bytes | BaseException | type[Hang]]) -> None:
        self.chunks = list(chunks)

    async def readany(self) -> bytes:
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if chunk is Hang:
            await asyncio.Event().wait()
        if isinstance(chunk, BaseException):
            raise chunk
        assert isinstance(chunk, bytes)
        return chunk


@dataclass
class URL:
    host: str | None


@dataclass
class FakeResponse:
    status: int = 200
    body: bytes = OK
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=lambda: {"X-Upstream": "yes"})
    chunks: list[bytes | BaseException | type[Hang]] = field(default_factory=list)
    released: bool = False
    closed: bool = False

    def __post_init__(self) -> None:
        self.content = Content(self.chunks)
        self.url = URL("backend.test")

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


def answer(status: int, error: Any = None, content_type: str = JSON) -> FakeResponse:
    body = orjson.dumps({"error": {"message": error or f"status {status}"}})
    return FakeResponse(status=status, body=body, content_type=content_type)


def sse(*chunks: bytes | BaseException | type[Hang]) -> FakeResponse:
    return FakeResponse(content_type=SSE, body=b"", chunks=list(chunks))


class StubUpstream:
    """Each ``send`` takes the next scripted outcome: a response, or an exception to raise;
    :class:`Hang` blocks. ``read`` gives the response's body, or raises ``read_error``. The
    breaker is real: what execute reports to it is what the tests read (``send`` itself reports
    nothing here, as Upstream.send when ``settle`` is false)."""

    def __init__(
        self,
        name: str,
        *outcomes: FakeResponse | BaseException | type[Hang],
        request_timeout: float = 30.0,
        read_error: BaseException | None = None,
    ) -> None:
        self.name = name
        self.request_timeout = request_timeout
        self.outcomes = list(outcomes)
        self.read_error = read_error
        self.sent: list[tuple[str, str, bytes | None, float | None]] = []
        self.settle: list[bool] = []
        self.reads = 0
        self.breaker = CircuitBreaker(5, 30.0)
        self.refusals = Refusals(clock=lambda: 0.0)
        self.balancer: Balancer | None = None  # replicas: tests/unit/test_balance.py

    @property
    def learned(self) -> dict[str, dict[str, str | None]]:
        """model -> parameter -> instead, over every endpoint and condition (for asserts)."""
        out: dict[str, dict[str, str | None]] = {}
        for model in ("o4-mini", "a-model", "b-model"):
            for entries in (self.refusals.get(model) or {}).values():
                out.setdefault(model, {}).update({p: v[0] for p, v in entries.items()})
        return out

    async def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        total: float | None = None,
        settle: bool = True,
        pick: Pick | None = None,
    ) -> FakeResponse:
        self.sent.append((method, path, body, total))
        self.settle.append(settle)
        if pick is not None:  # as Upstream.send: the attempt holds a replica
            pick.take(False)
        outcome = self.outcomes.pop(0)
        if outcome is Hang:
            await asyncio.Event().wait()
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, FakeResponse)
        return outcome

    async def read(self, resp: FakeResponse) -> bytes:
        self.reads += 1
        resp.released = True
        if self.read_error is not None:
            raise self.read_error
        return resp.body


class StubMetrics:
    def __init__(self) -> None:
        self.in_flight = 0
        self.in_flight_calls: list[int] = []
        self.fallbacks: list[str] = []
        self.adaptations: list[tuple[str, str]] = []

    def upstream_in_flight(self, delta: int) -> None:
        self.in_flight += delta
        self.in_flight_calls.append(delta)

    def fell_back(self, upstream: str) -> None:
        self.fallbacks.append(upstream)

    def adapted(self, upstream: str, parameter: str) -> None:
        self.adaptations.append((upstream, parameter))


def plan(
    *upstreams: StubUpstream, stream: bool = False, relay: bool = False, path: str = "/chat"
) -> Plan:
    attempts = tuple(
        Attempt(
            Route(cast(Upstream, u), f"{u.name}-model", Policy()),
            path,
            orjson.dumps({"model": f"{u.name}-model"}),
        )
        for u in upstreams
    )
    return Plan("POST", attempts, stream=stream, relay=relay, model="client-model")


@dataclass
class Outcome:
    result: Reply | EventStream | None
    error: UpstreamError | None
    rec: AccessRecord
    metrics: StubMetrics
    in_flight_before_close: int
    owner_callbacks: int
    reads: list[list[SSEEvent] | bytes]


def run(
    p: Plan, *, first_byte_timeout: float = 30.0, stream_timeout: float = 0.0, consume: bool = False
) -> Outcome:
    """Execute ``p`` with a fresh owner, record and metrics; close the owner afterwards (after
    reading a stream to its end when ``consume``)."""
    metrics = StubMetrics()
    rec = AccessRecord()

    async def scenario() -> Outcome:
        owner = Owner()
        result: Reply | EventStream | None = None
        error: UpstreamError | None = None
        reads: list[list[SSEEvent] | bytes] = []
        try:
            result = await execute(
                p,
                owner,
                rec,
                first_byte_timeout=first_byte_timeout,
                stream_timeout=stream_timeout,
                metrics=cast(Metrics, metrics),
            )
            if consume and isinstance(result, EventStream):
                reads.extend([read async for read in result])
        except UpstreamError as exc:
            error = exc
        in_flight = metrics.in_flight
        callbacks = len(owner._callbacks)
        await owner.aclose()
        return Outcome(result, error, rec, metrics, in_flight, callbacks, reads)

    return asyncio.run(scenario())


# --- may_fall_back --------------------------------------------------------------------------


def status_error(status: int) -> UpstreamStatusError:
    return UpstreamStatusError(f"HTTP {status}", status, 502)


@pytest.mark.parametrize(
    "exc",
    [
        UpstreamUnavailable("refused"),
        BreakerOpen("open"),
        UpstreamTimeout("slow"),
        *(status_error(s) for s in (429, 500, 502, 503, 504, 599)),
    ],
    ids=lambda e: f"{type(e).__name__}-{getattr(e, 'upstream_status', '')}",
)
def test_may_fall_back_on_what_another_upstream_may_answer(exc: BaseException) -> None:
    assert may_fall_back(exc)


@pytest.mark.parametrize(
    "exc",
    [
        UpstreamProtocolError("garbage"),
        UpstreamError("generic"),
        UpstreamModelNotFound("model 'x' not found", 404, 404),
        UpstreamEndpointNotFound("no route", 404, 502),
        *(status_error(s) for s in (400, 401, 403, 404, 408, 413, 422)),
        UpstreamStatusError("error inside a stream", 200, 502),
        ValueError("not ours"),
        TimeoutError(),
    ],
    ids=lambda e: f"{type(e).__name__}-{getattr(e, 'upstream_status', '')}",
)
def test_may_not_fall_back_on_the_requests_own_fault(exc: BaseException) -> None:
    assert not may_fall_back(exc)


# --- execute: falling back ------------------------------------------------------------------

FALLS_BACK: list[Any] = [
    UpstreamUnavailable("cannot connect"),
    UpstreamTimeout("timed out"),
    BreakerOpen("circuit breaker open"),
    TimeoutError(),  # send's own deadline: mapped to UpstreamTimeout
    answer(500),
    answer(502),
    answer(503),
    answer(504),
    answer(429),
]


def ident(value: Any) -> str:
    if isinstance(value, FakeResponse):
        return f"HTTP{value.status}"
    return type(value).__name__


@pytest.mark.parametrize("failure", FALLS_BACK, ids=ident)
def test_falls_back_to_the_next_upstream(failure: Any) -> None:
    a, b = StubUpstream("a", failure), StubUpstream("b", FakeResponse())
    out = run(plan(a, b))
    assert out.error is None
    assert isinstance(out.result, Reply)
    assert (out.result.status, out.result.data) == (200, orjson.loads(OK))
    assert len(a.sent) == len(b.sent) == 1
    assert b.sent[0][2] == b'{"model":"b-model"}'  # the next upstream gets its own body
    assert out.rec.upstream == "b"
    assert out.metrics.fallbacks == ["a"]


def test_falls_back_when_reading_the_answer_fails() -> None:
    a = StubUpstream("a", FakeResponse(), read_error=UpstreamUnavailable("closed mid-answer"))
    b = StubUpstream("b", FakeResponse())
    out = run(plan(a, b))
    assert isinstance(out.result, Reply)
    assert out.rec.upstream == "b"
    assert out.metrics.fallbacks == ["a"]


NO_FALLBACK: list[Any] = [
    answer(400),
    answer(401),
    answer(404, "The model `a-model` does not exist."),
    answer(404, "Not Found"),
    answer(408),
    answer(422),
    UpstreamProtocolError("upstream sent garbage"),
    FakeResponse(body=b"<html>not json</html>"),  # a 200 that is not JSON
]


@pytest.mark.parametrize("failure", NO_FALLBACK, ids=ident)
def test_does_not_fall_back_on_the_requests_fault(failure: Any) -> None:
    a, b = StubUpstream("a", failure), StubUpstream("b", FakeResponse())
    out = run(plan(a, b))
    assert out.result is None
    assert isinstance(out.error, UpstreamError)
    assert not may_fall_back(out.error)
    assert b.sent == []
    assert out.rec.upstream == "a"
    assert out.metrics.fallbacks == []


def test_status_errors_keep_their_meaning_when_not_falling_back() -> None:
    a = StubUpstream("a", answer(404, "The model `a-model` does not exist."))
    out = run(plan(a, StubUpstream("b")))
    assert isinstance(out.error, UpstreamModelNotFound)
    assert out.error.message == "model 'client-model' not found"  # the client's name
    a = StubUpstream("a", answer(400, "bad temperature"))
    out = run(plan(a, StubUpstream("b")))
    assert isinstance(out.error, UpstreamStatusError)
    assert (out.error.status, out.error.upstream_status) == (400, 400)
    assert out.error.message == "bad temperature"


def test_the_last_attempts_error_is_raised() -> None:
    a = StubUpstream("a", UpstreamUnavailable("a refused"))
    b = StubUpstream("b", answer(503, "b overloaded"))
    c = StubUpstream("c", UpstreamTimeout("c timed out"))
    out = run(plan(a, b, c))
    assert isinstance(out.error, UpstreamTimeout)
    assert out.error.message == "c timed out"
    assert out.rec.upstream == "c"
    assert out.metrics.fallbacks == ["a", "b"]
    assert [len(u.sent) for u in (a, b, c)] == [1, 1, 1]


def test_a_last_5xx_is_raised_as_a_status_error() -> None:
    a = StubUpstream("a", BreakerOpen("open"))
    b = StubUpstream("b", answer(503, "overloaded"))
    out = run(plan(a, b))
    assert isinstance(out.error, UpstreamStatusError)
    assert (out.error.status, out.error.upstream_status) == (502, 503)
    assert out.error.message == "upstream error (HTTP 503): overloaded"
    assert out.rec.upstream == "b"


def test_a_send_timeout_names_request_timeout() -> None:
    a = StubUpstream("a", TimeoutError(), request_timeout=12.5)
    out = run(plan(a))
    assert isinstance(out.error, UpstreamTimeout)
    assert out.error.message == "upstream did not answer within 12.5 s (REQUEST_TIMEOUT)"


def test_the_chain_stops_at_the_first_error_that_may_not_fall_back() -> None:
    a = StubUpstream("a", answer(500))
    b = StubUpstream("b", answer(400, "bad request"))
    c = StubUpstream("c", FakeResponse())
    out = run(plan(a, b, c))
    assert isinstance(out.error, UpstreamStatusError)
    assert out.error.upstream_status == 400
    assert c.sent == []
    assert out.rec.upstream == "b"
    assert out.metrics.fallbacks == ["a"]


def test_the_first_success_ends_the_chain() -> None:
    a, b, c = StubUpstream("a", FakeResponse()), StubUpstream("b"), StubUpstream("c")
    out = run(plan(a, b, c))
    assert isinstance(out.result, Reply)
    assert out.result.headers == {"X-Upstream": "yes"}
    assert (b.sent, c.sent) == ([], [])
    assert out.rec.upstream == "a"
    assert out.metrics.fallbacks == []


def test_each_attempt_gets_its_own_upstreams_request_timeout() -> None:
    a = StubUpstream("a", UpstreamUnavailable("x"), request_timeout=10.0)
    b = StubUpstream("b", FakeResponse(), request_timeout=100.0)

    async def scenario() -> None:
        async with Owner() as owner:
            await execute(
                plan(a, b),
                owner,
                AccessRecord(),
                first_byte_timeout=1,
                stream_timeout=0,
                metrics=None,
            )

    asyncio.run(scenario())
    (_, path, _, total_a), (_, _, _, total_b) = a.sent[0], b.sent[0]
    assert path == "/chat"
    assert (total_a, total_b) == (10.0, 100.0)


# --- execute: relayed plans -----------------------------------------------------------------


def test_relay_returns_the_last_attempts_error_status_as_a_reply() -> None:
    a = StubUpstream("a", answer(500))
    b = StubUpstream("b", answer(429))
    c = StubUpstream("c", answer(503, "c overloaded"))
    out = run(plan(a, b, c, relay=True))
    assert out.error is None
    assert isinstance(out.result, Reply)
    assert out.result.status == 503
    assert out.result.body == orjson.dumps({"error": {"message": "c overloaded"}})
    assert out.result.data is None  # relayed: never decoded
    assert out.rec.upstream == "c"
    assert out.metrics.fallbacks == ["a", "b"]


@pytest.mark.parametrize("status", [400, 404, 422])
def test_relay_returns_a_4xx_at_once_from_any_attempt(status: int) -> None:
    a = StubUpstream("a", answer(status))
    b = StubUpstream("b", FakeResponse())
    out = run(plan(a, b, relay=True))
    assert isinstance(out.result, Reply)
    assert out.result.status == status
    assert b.sent == []
    assert out.rec.upstream == "a"
    assert out.metrics.fallbacks == []


def test_relay_returns_a_single_upstreams_5xx() -> None:
    out = run(plan(StubUpstream("a", answer(502)), relay=True))
    assert isinstance(out.result, Reply)
    assert out.result.status == 502


def test_relay_returns_success_undecoded() -> None:
    a = StubUpstream("a", FakeResponse(body=b"not even json"))
    out = run(plan(a, relay=True))
    assert isinstance(out.result, Reply)
    assert (out.result.status, out.result.body, out.result.data) == (200, b"not even json", None)
    assert out.result.content_type == JSON


def test_relay_still_raises_transport_failures() -> None:
    a = StubUpstream("a", answer(500))
    b = StubUpstream("b", UpstreamUnavailable("refused"))
    out = run(plan(a, b, relay=True))
    assert isinstance(out.error, UpstreamUnavailable)
    assert out.rec.upstream == "b"
    assert out.metrics.fallbacks == ["a"]


# --- execute: the in-flight gauge and the owner ---------------------------------------------


def test_in_flight_counted_once_and_released_by_the_owner() -> None:
    a = StubUpstream("a", answer(502))
    b = StubUpstream("b", UpstreamTimeout("slow"))
    c = StubUpstream("c", FakeResponse())
    out = run(plan(a, b, c))
    assert isinstance(out.result, Reply)
    assert out.in_flight_before_close == 1  # once for the request, not per attempt
    assert out.owner_callbacks == 1
    assert out.metrics.in_flight_calls == [1, -1]
    assert out.metrics.in_flight == 0


@pytest.mark.parametrize("relay", [False, True])
def test_in_flight_released_by_the_owner_when_execute_raises(relay: bool) -> None:
    a = StubUpstream("a", UpstreamUnavailable("a"))
    b = StubUpstream("b", UpstreamProtocolError("b"))
    out = run(plan(a, b, relay=relay))
    assert isinstance(out.error, UpstreamProtocolError)
    assert out.in_flight_before_close == 1
    assert out.metrics.in_flight_calls == [1, -1]
    assert out.metrics.in_flight == 0


def test_in_flight_released_by_the_owner_when_execute_is_cancelled() -> None:
    metrics = StubMetrics()
    a = StubUpstream("a", Hang)

    async def scenario() -> None:
        owner = Owner()
        task = asyncio.create_task(
            execute(
                plan(a),
                owner,
                AccessRecord(),
                first_byte_timeout=30,
                stream_timeout=0,
                metrics=cast(Metrics, metrics),
            )
        )
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(a.sent) == 1
        task.cancel()  # the client left
        with pytest.raises(asyncio.CancelledError):
            await task
        assert metrics.in_flight == 1
        await owner.aclose()

    asyncio.run(scenario())
    assert metrics.in_flight_calls == [1, -1]


def test_no_metrics_is_fine() -> None:
    a = StubUpstream("a", UpstreamUnavailable("x"))
    b = StubUpstream("b", FakeResponse())

    async def scenario() -> Reply | EventStream:
        async with Owner() as owner:
            return await execute(
                plan(a, b),
                owner,
                AccessRecord(),
                first_byte_timeout=1,
                stream_timeout=0,
                metrics=None,
            )

    assert isinstance(asyncio.run(scenario()), Reply)


# --- execute: streamed plans ----------------------------------------------------------------

EVENT = b'data: {"choices":[]}\n\n'


@pytest.mark.parametrize("failure", FALLS_BACK, ids=ident)
def test_a_stream_falls_back_before_its_first_byte(failure: Any) -> None:
    a = StubUpstream("a", failure)
    resp = sse(EVENT)
    b = StubUpstream("b", resp)
    out = run(plan(a, b, stream=True))
    assert isinstance(out.result, EventStream)
    assert out.result.upstream == "b"
    assert out.rec.upstream == "b"
    assert out.metrics.fallbacks == ["a"]
    # A stream's send has no total timeout: FIRST_BYTE_TIMEOUT bounds it.
    assert a.sent[0][3] is None
    assert out.owner_callbacks == 2  # the gauge and the stream
    assert resp.closed  # not read to its end: the owner closed it
    assert out.metrics.in_flight == 0


def test_a_stream_falls_back_when_the_first_byte_is_late() -> None:
    a = StubUpstream("a", Hang)
    b = StubUpstream("b", sse(EVENT))
    out = run(plan(a, b, stream=True), first_byte_timeout=0.01)
    assert isinstance(out.result, EventStream)
    assert out.rec.upstream == "b"
    assert out.metrics.fallbacks == ["a"]


def test_a_late_first_byte_on_the_last_upstream_is_a_504() -> None:
    out = run(plan(StubUpstream("a", Hang), stream=True), first_byte_timeout=0.01)
    assert isinstance(out.error, UpstreamTimeout)
    assert out.error.message == "upstream sent nothing within 0.01 s (FIRST_BYTE_TIMEOUT)"
    assert out.metrics.in_flight == 0


def test_a_stream_falls_back_when_its_first_read_fails() -> None:
    broken = sse(ConnectionResetError("reset"))
    a = StubUpstream("a", broken)
    b = StubUpstream("b", sse(EVENT))
    out = run(plan(a, b, stream=True))
    assert isinstance(out.result, EventStream)
    assert broken.closed  # never handed to the owner: execute closed it
    assert out.rec.upstream == "b"
    assert out.metrics.fallbacks == ["a"]


def test_a_stream_read_to_its_end_gives_its_connection_back() -> None:
    resp = sse(EVENT, b'data: {"choices":[{"delta":{}}]}\n\n', b"data: [DONE]\n\n")
    out = run(plan(StubUpstream("a", resp), stream=True), consume=True)
    assert isinstance(out.result, EventStream)
    assert out.result.clean
    assert [[e.data for e in read] for read in out.reads if isinstance(read, list)] == [
        ['{"choices":[]}'],
        ['{"choices":[{"delta":{}}]}'],
        ["[DONE]"],
    ]
    assert (resp.released, resp.closed) == (True, False)


def test_a_first_read_of_many_events_is_parsed_two_events_first() -> None:
    # A backend with its answer ready sends it in one read: the first two events (role, first
    # token) come out alone, so the first line does not wait for the others to be parsed.
    events = [b'data: {"n":%d}\n\n' % i for i in range(5)]
    resp = sse(b"".join(events), b"data: [DONE]\n\n")
    out = run(plan(StubUpstream("a", resp), stream=True), consume=True)
    assert [[e.data for e in read] for read in out.reads if isinstance(read, list)] == [
        ['{"n":0}', '{"n":1}'],
        ['{"n":2}', '{"n":3}', '{"n":4}'],
        ["[DONE]"],
    ]
    assert isinstance(out.result, EventStream)
    assert out.result.clean


@pytest.mark.parametrize(
    "first",
    [
        b'data: {"n":0}\n\ndata: {"n":1}\n\n',  # two events: nothing left to split off
        b'data: {"n":0}\n\ndata: {"n":1}',  # the second not ended in this read
        b'data: {"n":0}\r\n\r\ndata: {"n":1}\r\n\r\ndata: {"n":2}\r\n\r\n',  # CRLF framing
    ],
)
def test_a_first_read_that_cannot_or_need_not_be_split_is_parsed_whole(first: bytes) -> None:
    rest = [b"\n\n"] if not first.endswith(b"\n") else []  # the second event's end
    resp = sse(first, *rest, b"data: [DONE]\n\n")
    out = run(plan(StubUpstream("a", resp), stream=True), consume=True)
    reads = [[e.data for e in read] for read in out.reads if isinstance(read, list)]
    assert reads[0] == ['{"n":0}', '{"n":1}', '{"n":2}'][: len(reads[0])]
    assert [d for read in reads for d in read][-1] == "[DONE]"
    # every event once, in order, whatever the cut
    assert [d for read in reads for d in read if d != "[DONE]"] == [
        f'{{"n":{i}}}' for i in range(first.count(b"data:"))
    ]


def test_only_the_first_read_is_split() -> None:
    many = b"".join(b'data: {"n":%d}\n\n' % i for i in range(4))
    resp = sse(b'data: {"n":-1}\n\n', many, b"data: [DONE]\n\n")
    out = run(plan(StubUpstream("a", resp), stream=True), consume=True)
    sizes = [len(read) for read in out.reads if isinstance(read, list)]
    assert sizes == [1, 4, 1]


def test_a_relayed_stream_yields_the_bytes_as_received() -> None:
    resp = sse(EVENT, b"data: [DO", b"NE]\n\n")
    out = run(plan(StubUpstream("a", resp), stream=True, relay=True), consume=True)
    assert out.reads == [EVENT, b"data: [DO", b"NE]\n\n"]
    assert resp.released


def test_a_stream_answered_with_one_json_body_is_a_reply() -> None:
    out = run(plan(StubUpstream("a", FakeResponse()), stream=True))
    assert isinstance(out.result, Reply)
    assert out.result.data == orjson.loads(OK)
    assert out.owner_callbacks == 1  # only the gauge


def test_a_relayed_stream_returns_the_last_error_status() -> None:
    a = StubUpstream("a", answer(503))
    b = StubUpstream("b", answer(429, "slow down"))
    out = run(plan(a, b, stream=True, relay=True))
    assert isinstance(out.result, Reply)
    assert out.result.status == 429
    assert out.metrics.fallbacks == ["a"]
    assert out.rec.upstream == "b"


def test_a_stream_does_not_fall_back_on_a_4xx() -> None:
    a = StubUpstream("a", answer(400, "bad"))
    b = StubUpstream("b", sse(EVENT))
    out = run(plan(a, b, stream=True))
    assert isinstance(out.error, UpstreamStatusError)
    assert b.sent == []


# --- execute: a parameter the backend refuses -----------------------------------------------


def refusal(param: str, instead: str | None = None) -> FakeResponse:
    message = f"Unsupported parameter: '{param}' is not supported with this model."
    if instead:
        message += f" Use '{instead}' instead."
    body = {"error": {"message": message, "param": param, "code": "unsupported_parameter"}}
    return FakeResponse(status=400, body=orjson.dumps(body))


def body_plan(u: StubUpstream, body: dict[str, Any], *, stream: bool = False) -> Plan:
    route = Route(cast(Upstream, u), "o4-mini", Policy())
    return Plan(
        "POST", (Attempt(route, "/chat", orjson.dumps(body)),), stream=stream, model="client"
    )


BODY = {"model": "o4-mini", "messages": [], "max_tokens": 9, "top_p": 0.5, "seed": 1}


@pytest.mark.parametrize("stream", [False, True])
def test_a_refused_parameter_is_renamed_or_dropped_and_sent_again(stream: bool) -> None:
    ok = sse(b'data: {"choices":[]}\n\n') if stream else FakeResponse()
    u = StubUpstream("a", refusal("max_tokens", "max_completion_tokens"), refusal("top_p"), ok)
    out = run(body_plan(u, BODY, stream=stream))
    assert out.error is None
    sent = [orjson.loads(b or b"") for _, _, b, _ in u.sent]
    assert sent[1] == {
        "model": "o4-mini",
        "messages": [],
        "top_p": 0.5,
        "seed": 1,
        "max_completion_tokens": 9,
    }
    assert sent[2] == {"model": "o4-mini", "messages": [], "seed": 1, "max_completion_tokens": 9}
    # Remembered for the model, so the next request is shaped right at once; counted.
    assert u.learned == {"o4-mini": {"max_tokens": "max_completion_tokens", "top_p": None}}
    assert out.metrics.adaptations == [("a", "max_tokens"), ("a", "top_p")]
    assert out.in_flight_before_close == 1  # one backend call in flight, not three


def test_at_most_three_parameters_are_given_up_per_request() -> None:
    body = {"model": "o4-mini", "messages": [], "a": 1, "b": 2, "c": 3, "d": 4}
    u = StubUpstream("a", *(refusal(p) for p in "abcd"), FakeResponse())
    out = run(body_plan(u, body))
    assert isinstance(out.error, UpstreamRefusedParameter)
    assert out.error.parameter == "d"
    assert len(u.sent) == 4


@pytest.mark.parametrize(
    ("body", "refused", "relay"),
    [
        (BODY, refusal("messages"), False),  # the request cannot do without it
        (BODY, refusal("logit_bias"), False),  # not sent by us: nothing to take away
        (BODY, refusal("top_p"), True),  # the client's own OpenAI request: relayed as is
    ],
)
def test_what_cannot_be_adapted_is_the_clients_400(
    body: dict[str, Any], refused: FakeResponse, relay: bool
) -> None:
    u = StubUpstream("a", refused, FakeResponse())
    p = body_plan(u, body)
    out = run(p._replace(relay=relay))
    assert len(u.sent) == 1
    assert u.learned == {}
    if relay:
        assert isinstance(out.result, Reply)
        assert out.result.status == 400
    else:
        assert isinstance(out.error, UpstreamRefusedParameter)
        assert out.error.status == 400


def test_a_rename_never_overwrites_a_field_already_sent() -> None:
    body = {"model": "m", "messages": [], "max_tokens": 9, "max_completion_tokens": 5}
    u = StubUpstream("a", refusal("max_tokens", "max_completion_tokens"), FakeResponse())
    run(body_plan(u, body))
    assert orjson.loads(u.sent[1][2] or b"") == {
        "model": "m",
        "messages": [],
        "max_completion_tokens": 5,
    }
    assert u.learned == {"o4-mini": {"max_tokens": None}}


def test_adapt_is_pure_apart_from_what_it_learns() -> None:
    u = StubUpstream("a")
    p = body_plan(u, BODY)
    exc = UpstreamRefusedParameter("no", 400, "unsupported_parameter", "seed")
    retry = adapt(p, p.attempts[0], exc)
    assert retry is not None
    assert orjson.loads(retry.body or b"") == {k: v for k, v in BODY.items() if k != "seed"}
    assert orjson.loads(p.attempts[0].body or b"") == BODY  # the plan is left as it was


# --- execute: what a stream tells the circuit breaker --------------------------------------
# Upstream.send reports a whole answer at its headers; a stream is reported by execute after its
# first read (send(settle=False)), once.


def test_a_stream_is_a_success_once_its_first_read_came() -> None:
    a = StubUpstream("a", sse(EVENT))
    out = run(plan(a, stream=True))
    assert isinstance(out.result, EventStream)
    assert a.settle == [False]
    assert a.breaker.counts() == (1, 0)


def test_headers_and_then_nothing_is_one_gateway_failure() -> None:
    # a stuck engine: the stream's headers at once, no first event
    a = StubUpstream("a", sse(Hang))
    out = run(plan(a, stream=True), first_byte_timeout=0.01)
    assert isinstance(out.error, UpstreamTimeout)
    assert a.breaker.counts() == (1, 1)
    assert a.breaker.consecutive == 1


def test_no_headers_in_time_is_one_gateway_failure() -> None:
    a = StubUpstream("a", Hang)
    run(plan(a, stream=True), first_byte_timeout=0.01)
    assert (a.breaker.counts(), a.breaker.consecutive) == ((1, 1), 1)


def test_a_first_read_cut_is_a_gateway_failure() -> None:
    a = StubUpstream("a", sse(ConnectionResetError("reset")))
    out = run(plan(a, stream=True))
    assert isinstance(out.error, UpstreamUnavailable)
    assert (a.breaker.counts(), a.breaker.consecutive) == ((1, 1), 1)


@pytest.mark.parametrize(("status", "failures"), [(400, 0), (404, 0), (429, 0), (500, 1)])
def test_a_stream_answered_with_an_error_status_is_reported_by_it(
    status: int, failures: int
) -> None:
    a = StubUpstream("a", answer(status))
    run(plan(a, stream=True))
    assert a.breaker.counts() == (1, failures)


def test_a_failure_send_raised_is_not_reported_again() -> None:
    # Upstream.send reported it (the stub does not): execute adds nothing
    a = StubUpstream("a", UpstreamUnavailable("refused"))
    run(plan(a, stream=True))
    assert a.breaker.counts() == (0, 0)


def test_a_malformed_first_read_is_no_verdict() -> None:
    a = StubUpstream("a", sse(b"data: \xff\n\n"))
    out = run(plan(a, stream=True))
    assert isinstance(out.error, UpstreamProtocolError)
    assert a.breaker.counts() == (0, 0)


def test_a_stream_the_client_left_before_its_first_read_is_no_verdict() -> None:
    a = StubUpstream("a", sse(Hang))

    async def scenario() -> None:
        owner = Owner()
        task = asyncio.create_task(
            execute(
                plan(a, stream=True),
                owner,
                AccessRecord(),
                first_byte_timeout=30,
                stream_timeout=0,
                metrics=None,
            )
        )
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(a.sent) == 1
        task.cancel()  # the client left
        with pytest.raises(asyncio.CancelledError):
            await task
        await owner.aclose()

    asyncio.run(scenario())
    assert a.breaker.counts() == (0, 0)


def test_what_is_learned_is_kept_per_endpoint_and_reasoning_and_expires() -> None:
    now = [0.0]
    refusals = Refusals(clock=lambda: now[0])
    refusals.learn("gpt-5.1", "/chat/completions", True, "temperature", None)
    learned = refusals.get("gpt-5.1")
    assert learned == {("/chat/completions", True): {"temperature": (None, 3600.0)}}
    now[0] = 3601.0  # a backend may come to take it: asked again after an hour
    assert refusals.get("gpt-5.1") is None
    assert refusals.get("never-refused") is None


def test_a_refusal_while_reasoning_is_learned_as_such() -> None:
    body = {"model": "o4-mini", "messages": [], "temperature": 0.5, "reasoning_effort": "high"}
    u = StubUpstream("a", refusal("temperature"), FakeResponse())
    run(body_plan(u, body))
    assert u.refusals.get("o4-mini") == {("/chat", True): {"temperature": (None, 3600.0)}}


# --- execute: a balanced upstream's replica is held by the owner (balance.py) ---------------


def balanced(stub: StubUpstream) -> Balancer:
    replicas = (ReplicaSpec("http://r0/v1", 1, "r0"), ReplicaSpec("http://r1/v1", 1, "r1"))
    stub.balancer = Balancer(stub.name, BalanceSpec(replicas, outlier=OutlierSpec(1, 30, 300, 50)))
    return stub.balancer


def held(balancer: Balancer) -> list[int]:
    return [r.in_flight for r in balancer.replicas]


def run_held(
    p: Plan, balancer: Balancer, *, consume: bool = False, first_byte_timeout: float = 30.0
) -> tuple[Reply | EventStream | UpstreamError, list[int], list[int]]:
    """Execute ``p``: what it gave, the replicas' in-flight counts before the owner closed
    (after reading a stream to its end when ``consume``) and after."""

    async def scenario() -> tuple[Reply | EventStream | UpstreamError, list[int], list[int]]:
        owner = Owner()
        result: Reply | EventStream | UpstreamError
        try:
            result = await execute(
                p,
                owner,
                AccessRecord(),
                first_byte_timeout=first_byte_timeout,
                stream_timeout=0,
                metrics=None,
            )
            if consume and isinstance(result, EventStream):
                [read async for read in result]
        except UpstreamError as exc:
            result = exc
        before = held(balancer)
        await owner.aclose()
        return result, before, held(balancer)

    return asyncio.run(scenario())


def test_a_whole_answer_holds_its_replica_until_the_owner_closes() -> None:
    a = StubUpstream("a", FakeResponse())
    balancer = balanced(a)
    result, before, after = run_held(plan(a), balancer)
    assert isinstance(result, Reply)
    assert sorted(before) == [0, 1]
    assert after == [0, 0]


def test_a_stream_holds_its_replica_until_it_ends() -> None:
    a = StubUpstream("a", sse(EVENT, b"data: [DONE]\n\n"))
    balancer = balanced(a)
    result, before, after = run_held(plan(a, stream=True), balancer, consume=True)
    assert isinstance(result, EventStream)
    assert sorted(before) == [0, 1]  # read to its end, but the owner has not closed yet
    assert after == [0, 0]
    assert sum(r.consecutive for r in balancer.replicas) == 0


def test_a_fallback_frees_the_replica_at_once() -> None:
    a = StubUpstream("a", UpstreamUnavailable("refused"))
    b = StubUpstream("b", FakeResponse())
    balancer = balanced(a)
    result, before, after = run_held(plan(a, b), balancer)
    assert isinstance(result, Reply)
    assert before == [0, 0]  # a's replica given back when b was tried
    assert after == [0, 0]


def test_a_late_first_byte_counts_against_the_replica() -> None:
    a = StubUpstream("a", Hang)
    balancer = balanced(a)
    result, before, after = run_held(plan(a, stream=True), balancer, first_byte_timeout=0.01)
    assert isinstance(result, UpstreamTimeout)
    assert sorted(before) == [0, 1]
    assert after == [0, 0]
    assert sorted(r.ejections for r in balancer.replicas) == [0, 1]  # ejected (threshold 1)


def test_a_cancelled_call_gives_its_replica_back_when_the_owner_closes() -> None:
    a = StubUpstream("a", Hang)
    balancer = balanced(a)

    async def scenario() -> list[int]:
        owner = Owner()
        task = asyncio.create_task(
            execute(
                plan(a),
                owner,
                AccessRecord(),
                first_byte_timeout=30,
                stream_timeout=0,
                metrics=None,
            )
        )
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        before = held(balancer)
        await owner.aclose()
        return before

    assert sorted(asyncio.run(scenario())) == [0, 1]
    assert held(balancer) == [0, 0]
    assert all(r.consecutive == 0 for r in balancer.replicas)  # no verdict
