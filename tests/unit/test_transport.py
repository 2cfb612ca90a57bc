"""transport.py: the guarded protocol driven read by read, on an event loop whose clock the test
moves (no sleeping), with a recording transport; and the Guard's bookkeeping."""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from ollama_openai_bridge.config import load_settings
from ollama_openai_bridge.errors import BadRequest, TooManyConnections
from ollama_openai_bridge.http import REPORTS_KEY, WATCH_KEY, DisconnectWatch
from ollama_openai_bridge.transport import (
    LINGER,
    LOG_EVERY,
    Guard,
    GuardedProtocol,
    Limits,
    server_options,
)

LIMITS = Limits(
    head_bytes=1024, head_fields=10, head_timeout=10.0, body_timeout=30.0, body_min_rate=100
)


class ClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose time() is ``now``, moved by the test: timers fire when it passes
    them and the loop is stepped."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


class Wire(asyncio.Transport):
    """A transport that records what the server writes and whether it closed."""

    def __init__(self, peer: tuple[str, int] = ("10.0.0.1", 40000)) -> None:
        super().__init__()
        self.peer = peer
        self.out = bytearray()
        self.closed = False
        self.eof = False
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer, "sockname": ("127.0.0.1", 11434)}.get(name, default)

    def write(self, data: Any) -> None:
        assert not self.closed, "written after close"
        assert not self.eof, "written after the half-close"
        self.out += data

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def status(self) -> int | None:
        """The status of the first response written, if any."""
        if not self.out:
            return None
        return int(bytes(self.out).split(b" ", 2)[1])

    def json(self) -> Any:
        return orjson.loads(bytes(self.out).split(b"\r\n\r\n", 1)[1])


class App:
    """ASGI app: /lazy never reads its body; /stream answers at once and streams until
    ``release``; anything else reads the whole body and answers its length."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.scopes: list[Any] = []
        self.release = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        self.seen.append(path)
        self.scopes.append(scope)
        if path == "/lazy":
            await self.release.wait()
            return
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            await self.release.wait()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.seen.append("disconnect")
                return
            size += len(message["body"])
            if not message["more_body"]:
                break
        body = str(size).encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Harness:
    def __init__(self, limits: Limits = LIMITS, keep_alive: int = 10**6) -> None:
        self.loop = ClockLoop()
        self.app = App()
        self.guard = Guard(limits, clock=lambda: self.loop.now)
        self.state = ServerState()
        # uvicorn's keep-alive timer closes idle connections: most tests here watch the rest
        self.config = Config(
            self.app,
            http=self.guard,  # type: ignore[arg-type]  # uvicorn calls it like a class
            ws="none",
            log_config=None,
            access_log=False,
            timeout_keep_alive=keep_alive,
        )
        self.config.load()

    def connect(self, peer: tuple[str, int] = ("10.0.0.1", 40000)) -> tuple[GuardedProtocol, Wire]:
        protocol = self.guard(self.config, self.state, {}, _loop=self.loop)
        wire = Wire(peer)
        protocol.connection_made(wire)
        return protocol, wire

    def step(self, seconds: float = 0.0) -> None:
        """Move the clock, then let ready callbacks and tasks run."""
        self.loop.now += seconds
        for _ in range(5):
            self.loop.run_until_complete(asyncio.sleep(0))

    def close(self) -> None:
        for task in list(self.state.tasks):
            task.cancel()
        self.step()
        self.loop.close()


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    asyncio.set_event_loop(harness.loop)
    yield harness
    harness.close()
    asyncio.set_event_loop(None)


def request(path: str = "/", body: bytes = b"", extra: bytes = b"") -> bytes:
    length = b"content-length: %d\r\n" % len(body) if body else b""
    return b"POST %s HTTP/1.1\r\nhost: x\r\n%s%s\r\n%s" % (path.encode(), length, extra, body)


# -- head size -------------------------------------------------------------------------------


def test_a_head_over_the_size_is_refused_as_soon_as_it_passes_it(h: Harness) -> None:
    protocol, wire = h.connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nx-big: " + b"a" * 600)
    assert wire.status() is None
    protocol.data_received(b"a" * 600)  # 1,222 bytes: over 1,024, head not complete
    h.step()
    assert wire.status() == 431
    assert wire.json() == {
        "error": "request line and headers larger than 1024 bytes (REQUEST_HEADERS_MAX_SIZE)"
    }
    assert b"connection: close" in wire.out
    assert wire.eof
    assert not wire.closed
    protocol.data_received(b"a" * 100_000)  # discarded, never parsed
    assert h.app.seen == []
    h.step(LINGER)
    assert wire.closed


def test_a_head_up_to_the_size_is_served_with_its_body_in_the_same_read(h: Harness) -> None:
    bare = request("/", b"x" * 5000, extra=b"x-pad: \r\n")
    pad = 1024 - bare.index(b"\r\n\r\n") - 4
    data = request("/", b"x" * 5000, extra=b"x-pad: " + b"p" * pad + b"\r\n")
    assert data.index(b"\r\n\r\n") + 4 == 1024  # the head is exactly the limit
    protocol, wire = h.connect()
    protocol.data_received(data)
    h.step()
    assert wire.status() == 200
    assert bytes(wire.out).endswith(b"5000")


def test_a_head_one_byte_over_with_a_body_in_the_same_read_is_refused(h: Harness) -> None:
    bare = request("/", b"y" * 10, extra=b"x-pad: \r\n")
    pad = 1024 - bare.index(b"\r\n\r\n") - 4 + 1
    data = request("/", b"y" * 10, extra=b"x-pad: " + b"p" * pad + b"\r\n")
    assert data.index(b"\r\n\r\n") + 4 == 1025
    protocol, wire = h.connect()
    protocol.data_received(data)
    h.step()
    assert wire.status() == 431
    assert h.app.seen == []


def test_each_request_of_a_connection_gets_the_whole_size(h: Harness) -> None:
    protocol, wire = h.connect()
    one = request("/", extra=b"x-pad: " + b"p" * 900 + b"\r\n")
    for _ in range(3):
        protocol.data_received(one)
        h.step()
    assert bytes(wire.out).count(b"HTTP/1.1 200") == 3


def test_too_many_header_fields(h: Harness) -> None:
    protocol, wire = h.connect()
    fields = b"".join(b"x-%d: v\r\n" % i for i in range(10))  # 11 with host
    protocol.data_received(request("/v1/chat/completions", extra=fields))
    h.step()
    assert wire.status() == 431
    assert wire.json()["error"]["message"] == (
        "more than 10 header fields (REQUEST_HEADERS_MAX_COUNT)"
    )
    assert h.app.seen == []
    ok, wire2 = h.connect()
    ok.data_received(request("/", extra=b"".join(b"x-%d: v\r\n" % i for i in range(9))))
    h.step()
    assert wire2.status() == 200


def test_a_malformed_request_is_400_in_the_routes_dialect(h: Harness) -> None:
    protocol, wire = h.connect()
    protocol.data_received(b"GET /v1/models HTTP/1.1\r\nbad header\r\n\r\n")
    h.step()
    assert wire.status() == 400
    assert wire.json()["error"]["message"] == "invalid HTTP request"


# -- head time -------------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_refused_after_the_head_timeout(h: Harness) -> None:
    _, wire = h.connect()
    h.step(9.5)
    assert wire.status() is None
    h.step(0.5)
    assert wire.status() == 408
    assert wire.json() == {
        "error": "request line and headers not received within 10 s (REQUEST_HEADERS_TIMEOUT)"
    }


def test_a_head_sent_slowly_is_refused_within_the_timeout(h: Harness) -> None:
    protocol, wire = h.connect()
    protocol.data_received(b"GET /api/tags HTTP/1.1\r\n")
    for i in range(4):
        h.step(2.0)
        protocol.data_received(b"x-%d: v\r\n" % i)
    assert wire.status() is None
    h.step(2.0)  # 10 s after the opening
    assert wire.status() == 408


def test_between_requests_nothing_is_timed_and_the_next_head_gets_its_own_time(
    h: Harness,
) -> None:
    protocol, wire = h.connect()
    protocol.data_received(request())
    h.step()
    assert wire.status() == 200
    h.step(1000.0)  # idle: uvicorn's keep-alive timer closes it, not this layer
    assert bytes(wire.out).count(b"HTTP/1.1") == 1
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    h.step(9.5)
    assert bytes(wire.out).count(b"HTTP/1.1") == 1
    h.step(0.5)
    assert bytes(wire.out).count(b"408 Request Timeout") == 1


def test_bare_line_ends_between_requests_start_the_head_clock(h: Harness) -> None:
    protocol, wire = h.connect()
    protocol.data_received(request())
    h.step()
    for _ in range(6):  # the parser skips them; they still count as a head under way
        protocol.data_received(b"\r\n")
        h.step(2.0)
    assert b"408 Request Timeout" in wire.out


def test_a_next_head_begun_in_the_read_that_ended_a_request_ends_with_the_keep_alive() -> None:
    h = Harness(keep_alive=5)
    asyncio.set_event_loop(h.loop)
    try:
        protocol, wire = h.connect()
        protocol.data_received(request() + b"GET / HTTP/1.1\r\nx-a: ")
        h.step()
        assert bytes(wire.out).count(b"HTTP/1.1 200") == 1
        h.step(4.5)
        assert not wire.closed
        h.step(0.5)  # no read came to cancel uvicorn's keep-alive timer
        assert wire.closed
    finally:
        h.close()


# -- body time -------------------------------------------------------------------------------


def test_a_body_that_stops_is_refused_and_the_app_sees_a_disconnect(h: Harness) -> None:
    protocol, wire = h.connect()
    protocol.data_received(b'POST /api/chat HTTP/1.1\r\ncontent-length: 100\r\n\r\n{"mo')
    h.step(29.0)
    assert wire.status() is None
    h.step(1.0)
    assert wire.status() == 408
    assert wire.json() == {"error": "no request body received for 30 s (REQUEST_BODY_TIMEOUT)"}
    assert h.app.seen == ["/api/chat", "disconnect"]


def test_a_body_dripped_below_the_minimum_rate_is_refused(h: Harness) -> None:
    protocol, wire = h.connect()
    protocol.data_received(b"POST / HTTP/1.1\r\ncontent-length: 10000\r\n\r\n")
    for _ in range(29):
        h.step(1.0)
        protocol.data_received(b"x")
    assert wire.status() is None
    h.step(1.3)  # 30 s + 29 bytes / (100 bytes/s)
    assert wire.status() == 408
    assert wire.json() == {"error": "request body slower than 100 bytes/s (REQUEST_BODY_MIN_RATE)"}


def test_a_body_at_the_minimum_rate_is_served(h: Harness) -> None:
    protocol, wire = h.connect()
    protocol.data_received(b"POST / HTTP/1.1\r\ncontent-length: 12000\r\n\r\n")
    for _ in range(60):
        h.step(1.0)
        protocol.data_received(b"x" * 200)
    h.step()
    assert wire.status() == 200
    assert bytes(wire.out).endswith(b"12000")


def test_time_the_app_keeps_the_client_waiting_is_not_counted(h: Harness) -> None:
    protocol, wire = h.connect()
    # /lazy never reads: past 64 KiB uvicorn pauses reading, and the client must wait
    protocol.data_received(b"POST /lazy HTTP/1.1\r\ncontent-length: 200000\r\n\r\n")
    protocol.data_received(b"x" * 70000)
    h.step()
    assert wire.paused
    h.step(500.0)
    assert wire.status() is None
    assert not wire.closed


def test_a_body_announced_with_expect_100_continue_is_not_timed_until_asked_for(
    h: Harness,
) -> None:
    protocol, wire = h.connect()
    protocol.data_received(request("/lazy", b"x" * 10, extra=b"expect: 100-continue\r\n")[:-10])
    h.step(500.0)
    assert wire.status() is None


def test_a_streamed_answer_is_never_cut(h: Harness) -> None:
    protocol, wire = h.connect()
    protocol.data_received(b"GET /stream HTTP/1.1\r\n\r\n")
    h.step(3600.0)
    assert wire.status() == 200
    assert not wire.closed
    assert not wire.eof
    h.app.release.set()
    h.step()
    assert bytes(wire.out).endswith(b"0\r\n\r\n")


def test_a_lost_connection_is_reported_to_the_request_under_way(h: Harness) -> None:
    """No task per request waits for http.disconnect (issue #18): the protocol tells the
    request's DisconnectWatch, which cancels the request."""
    protocol, _ = h.connect()
    protocol.data_received(b"GET /stream HTTP/1.1\r\n\r\n")
    h.step()
    (scope,) = h.app.scopes
    assert REPORTS_KEY in scope
    (task,) = h.state.tasks

    async def receive() -> dict[str, Any]:
        raise AssertionError("nothing waits for http.disconnect")

    watch = scope[WATCH_KEY] = DisconnectWatch(receive, task, reported=True)
    watch.arm()
    protocol.connection_lost(None)
    h.step()
    assert watch.gone
    assert task.done()  # cancelled while it waited (uvicorn logs the app's CancelledError)
    assert not h.app.release.is_set()


def test_a_connection_s_attributes_keep_uvicorn_s_dict_shared(h: Harness) -> None:
    """GuardedProtocol's own attributes are slots: in the instance dict, uvicorn's alone stay
    within the 30 keys CPython 3.11 shares between the instances of a class. Past them, each
    connection had a whole dict of its own: 1.6 KB per open stream (issue #18)."""
    protocol, _ = h.connect()
    protocol.data_received(b"GET /stream HTTP/1.1\r\n\r\n")
    h.step()
    assert not set(GuardedProtocol.__slots__) & set(vars(protocol))
    assert len(vars(protocol)) <= 30, sorted(vars(protocol))
    h.app.release.set()
    h.step()


def test_a_late_body_after_the_answer_began_closes_without_a_second_answer(h: Harness) -> None:
    protocol, wire = h.connect()
    protocol.data_received(b"POST /stream HTTP/1.1\r\ncontent-length: 10\r\n\r\nab")
    h.step(30.0)
    assert bytes(wire.out).count(b"HTTP/1.1") == 1  # the 200 only
    assert wire.eof


# -- connections -----------------------------------------------------------------------------


def test_connections_beyond_the_caps_are_answered_503_and_closed() -> None:
    h = Harness(Limits(connections=3, per_ip=2))
    asyncio.set_event_loop(h.loop)
    try:
        a1, _ = h.connect(("10.0.0.1", 1))
        h.connect(("10.0.0.1", 2))
        _, refused = h.connect(("10.0.0.1", 3))
        assert refused.status() == 503
        assert refused.closed
        assert refused.json() == {
            "error": "too many connections from this address "
            "(MAX_CLIENT_CONNECTIONS_PER_IP=2); try again later"
        }
        h.connect(("10.0.0.2", 1))
        _, full = h.connect(("10.0.0.3", 1))
        assert full.status() == 503
        assert "MAX_CLIENT_CONNECTIONS=3" in full.json()["error"]
        assert len(h.state.connections) == 3
        a1.connection_lost(None)
        assert h.guard.per_ip == {"10.0.0.1": 1, "10.0.0.2": 1}
        _, again = h.connect(("10.0.0.1", 4))
        assert again.status() is None
    finally:
        h.close()


def test_guard_counts_per_address_and_exempts_trusted_proxies() -> None:
    guard = Guard(Limits(per_ip=1, trusted=("10.1.0.0/16", "192.168.0.7")))
    assert guard.admit("10.9.9.9", 0) is None
    assert isinstance(guard.admit("10.9.9.9", 0), TooManyConnections)
    for proxy in ("10.1.2.3", "192.168.0.7", "::ffff:10.1.0.1"):
        assert guard.admit(proxy, 0) is None
        assert guard.admit(proxy, 0) is None  # beyond its share: trusted
    assert guard.admit(None, 0) is None
    assert not guard.counts(None)
    guard.leave("10.9.9.9")
    assert "10.9.9.9" not in guard.per_ip
    assert Guard(Limits(per_ip=1, trusted=("*",))).trusted("203.0.113.9")
    assert not guard.trusted("not-an-address")


def test_no_per_address_cap_with_zero() -> None:
    guard = Guard(Limits(per_ip=0, connections=5))
    assert all(guard.admit("10.0.0.1", n) is None for n in range(5))
    assert guard.per_ip == {}
    assert isinstance(guard.admit("10.0.0.1", 5), TooManyConnections)


def test_refusals_are_logged_at_most_once_per_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    guard = Guard(Limits(), clock=lambda: now[0])
    lines: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "ollama_openai_bridge.transport.log.warning", lambda event, **kw: lines.append(kw)
    )
    for _ in range(5):
        guard.note("request_refused", BadRequest("x"), "10.0.0.1")
    guard.note("connection_refused", TooManyConnections("y"), "10.0.0.1")  # another kind
    now[0] = LOG_EVERY
    guard.note("request_refused", BadRequest("x"), "10.0.0.1")
    assert [(line["reason"], line.get("not_logged")) for line in lines] == [
        ("BadRequest", None),
        ("TooManyConnections", None),
        ("BadRequest", 4),
    ]


def test_a_guard_travels_to_worker_processes() -> None:
    guard = Guard(Limits(trusted=("10.0.0.0/8",)))
    guard.admit("10.0.0.1", 0)
    copy = pickle.loads(pickle.dumps(guard))
    assert copy.limits == guard.limits
    assert copy.trusted("10.2.3.4")


# -- options ---------------------------------------------------------------------------------


def test_forwarding_headers_are_believed_from_no_one_by_default() -> None:
    options = server_options(load_settings(_env_file=None))
    assert options["proxy_headers"] is False
    assert options["ws"] == "none"
    assert isinstance(options["http"], Guard)
    assert options["http"].limits == Limits()  # the settings' defaults are the Limits' own
    listed = server_options(load_settings(_env_file=None, forwarded_allow_ips="10.0.0.5, ::1"))
    assert (listed["proxy_headers"], listed["forwarded_allow_ips"]) == (True, ["10.0.0.5", "::1"])
    anyone = server_options(load_settings(_env_file=None, forwarded_allow_ips="*,10.0.0.5"))
    assert anyone["forwarded_allow_ips"] == "*"


def test_a_body_timeout_shorter_than_the_head_timeout_is_kept() -> None:
    h = Harness(Limits(head_timeout=10.0, body_timeout=2.0, body_min_rate=0))
    asyncio.set_event_loop(h.loop)
    try:
        protocol, wire = h.connect()
        protocol.data_received(b"POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nab")
        h.step(1.5)
        assert wire.status() is None
        h.step(0.5)
        assert wire.status() == 408
    finally:
        h.close()


def test_a_head_after_a_slow_body_gets_its_own_deadline(h: Harness) -> None:
    protocol, wire = h.connect()
    protocol.data_received(b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\na")
    h.step(12.0)  # the timer now waits for the body, until 30 s after its last byte
    protocol.data_received(b"b")  # the request is whole and answered
    h.step()
    assert wire.status() == 200
    protocol.data_received(b"GET / HTTP/1.1\r\n")  # the next head: due in 10 s, not 30
    h.step(10.0)
    assert bytes(wire.out).count(b"408 Request Timeout") == 1


def test_an_upgrade_request_is_served_as_plain_http(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    protocol, wire = h.connect()
    protocol.data_received(
        b"GET / HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    )
    h.step()
    assert wire.status() == 200
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
