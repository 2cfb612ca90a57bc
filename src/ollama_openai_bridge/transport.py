"""Limits on what a client may make the server hold, below the app: in uvicorn's httptools protocol.

uvicorn's ``HttpToolsProtocol`` (uvicorn/protocols/http/httptools_impl.py, 0.54) reads a request
head with no bound on its size or its time, and waits for a body for ever; httptools joins the
pieces of one header with ``bytes +=`` (httptools/parser/parser.pyx, ``_on_header_value``), so a
64 MB header costs seconds of CPU while every other client waits. :class:`GuardedProtocol`,
installed as uvicorn's ``http`` protocol by :func:`server_options`, adds, per connection:

- **Head size.** The request line and headers together at most ``REQUEST_HEADERS_MAX_SIZE``
  bytes, counted as they arrive, before the parser buffers more; at most
  ``REQUEST_HEADERS_MAX_COUNT`` fields. Beyond either: 431 (RFC 6585 section 5), then close.
- **Head time.** A head must arrive whole within ``REQUEST_HEADERS_TIMEOUT`` of its first byte
  (of the connection's opening, for the first request): else 408 (RFC 9110 section 15.5.9).
- **Body time.** Once the head is in, ``REQUEST_BODY_TIMEOUT`` without a byte of body, or a body
  slower than ``REQUEST_BODY_MIN_RATE`` bytes/s past that grace period (the rule of Apache's
  mod_reqtimeout ``body=T,MinRate=R``: the deadline grows by 1 s per R bytes): 408. Waits the
  server causes do not count -- the app has not read what came (flow control paused reading), or
  has not yet asked for a body announced with ``Expect: 100-continue``.
- **Connections.** At most ``MAX_CLIENT_CONNECTIONS`` open in this process and
  ``MAX_CLIENT_CONNECTIONS_PER_IP`` from one address (the reverse proxies of
  ``FORWARDED_ALLOW_IPS`` excepted); a connection beyond is answered 503 at once and closed.
- **Departures.** A connection lost before its answer ended is reported to the request's
  ``http.DisconnectWatch`` (the scope's ``http.REPORTS_KEY`` says so), which cancels it: no
  task per request waiting for ``http.disconnect`` (about 1.5 KB per open stream, issue #18).

A request read whole is never timed here: a streamed answer lasts as long as it lasts, and an
idle keep-alive connection is uvicorn's (``timeout_keep_alive``). A refusal is the error in the
route's dialect (render.py) with ``Connection: close``; the connection is then half-closed and
read (and discarded) for at most :data:`LINGER` seconds, so that the client reads the refusal
rather than a reset. Refusals are logged at most once per :data:`LOG_EVERY` seconds per kind.

Cost: one timer per connection, re-armed when it fires rather than per request; per read, one
clock reading and a counter; no task per connection or request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import httptools
import structlog
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ollama_openai_bridge.errors import (
    BadRequest,
    HeadersTooLarge,
    PayloadTooLarge,
    ProxyError,
    Redactor,
    RequestTimeout,
    TooManyConnections,
)
from ollama_openai_bridge.http import REPORTS_KEY, STOPPING_KEY, WATCH_KEY, DisconnectWatch
from ollama_openai_bridge.render import Renderer, dialect_of

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
    from uvicorn.server import ServerState

    from ollama_openai_bridge.config import Settings

log = structlog.get_logger("ollama_openai_bridge.transport")

LINGER = 2.0  # seconds a refused connection is still drained before it is closed
LOG_EVERY = 10.0  # seconds between two log lines for one kind of refusal
INVALID = "invalid HTTP request"
_RENDER = Renderer(Redactor())  # refusals quote no secret; the messages are the proxy's own


@dataclass(frozen=True)
class Limits:
    """The transport settings (their meaning: module docstring; sizes in bytes, times in
    seconds, ``body_min_rate`` in bytes/s, 0 = none; ``per_ip`` 0 = no cap; ``trusted`` the
    FORWARDED_ALLOW_IPS entries)."""

    head_bytes: int = 64 * 1024
    head_fields: int = 100
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    body_min_rate: int = 500
    connections: int = 16384
    per_ip: int = 1024
    trusted: tuple[str, ...] = ()
    body_bytes: int = 64 * 1024 * 1024  # REQUEST_MAX_SIZE: what one request's body may carry

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            head_bytes=settings.request_headers_max_size,
            head_fields=settings.request_headers_max_count,
            head_timeout=settings.request_headers_timeout,
            body_timeout=settings.request_body_timeout,
            body_min_rate=settings.request_body_min_rate,
            connections=settings.max_client_connections,
            per_ip=settings.max_client_connections_per_ip,
            trusted=tuple(settings.forwarded_allow_ips),
            body_bytes=settings.request_max_size,
        )


class Guard:
    """One server's limits and what its connections share in this process: open connections per
    client address, and the log throttle. uvicorn calls it like a protocol class
    (``Config(http=guard)``); it is pickled into each worker of several, where it starts empty.

    ``clock`` (seconds, monotonic) paces the log lines; tests inject one."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.per_ip: dict[str, int] = {}
        self.clock = clock
        self._logged: dict[str, tuple[float, int]] = {}

    def __call__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> GuardedProtocol:
        return GuardedProtocol(config, server_state, app_state, _loop, guard=self)

    @cached_property
    def _networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None:
        """The trusted networks; None when every peer is trusted ('*')."""
        if "*" in self.limits.trusted:
            return None
        return tuple(ipaddress.ip_network(entry) for entry in self.limits.trusted)

    def trusted(self, ip: str) -> bool:
        """Whether ``ip`` is one of FORWARDED_ALLOW_IPS (an IPv4 address seen through an IPv6
        socket, ``::ffff:a.b.c.d``, counts as itself)."""
        networks = self._networks
        if networks is None:
            return True
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in networks)

    def admit(self, ip: str | None, open_now: int) -> TooManyConnections | None:
        """Count a new connection from ``ip`` (None: no address, e.g. a Unix socket), or the
        refusal when ``open_now`` connections are already open or ``ip`` holds its share. An
        admitted ``ip`` must be given back with :meth:`leave` once; a refused one must not."""
        limits = self.limits
        if open_now >= limits.connections:
            return TooManyConnections(
                f"too many connections to the proxy (MAX_CLIENT_CONNECTIONS={limits.connections})"
                "; try again later"
            )
        if ip is None or not limits.per_ip:
            return None
        held = self.per_ip.get(ip, 0)
        if held >= limits.per_ip and not self.trusted(ip):
            return TooManyConnections(
                "too many connections from this address "
                f"(MAX_CLIENT_CONNECTIONS_PER_IP={limits.per_ip}); try again later"
            )
        self.per_ip[ip] = held + 1
        return None

    def counts(self, ip: str | None) -> bool:
        """Whether :meth:`admit` counted ``ip`` (so :meth:`leave` must give it back)."""
        return ip is not None and self.limits.per_ip > 0

    def leave(self, ip: str) -> None:
        held = self.per_ip.get(ip, 0) - 1
        if held > 0:
            self.per_ip[ip] = held
        else:
            self.per_ip.pop(ip, None)

    def note(self, event: str, error: ProxyError, client: str | None) -> None:
        """Log a refusal as a warning, at most once per :data:`LOG_EVERY` seconds for each kind
        (the error's type); the line after a quiet spell says how many were not logged."""
        kind = type(error).__name__
        now = self.clock()
        last, quiet = self._logged.get(kind, (-math.inf, 0))
        if now - last < LOG_EVERY:
            self._logged[kind] = (last, quiet + 1)
            return
        self._logged[kind] = (now, 0)
        extra = {"not_logged": quiet} if quiet else {}
        log.warning(
            event, status=error.status, reason=kind, error=error.message, client=client, **extra
        )


def answer(error: ProxyError, path: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The whole HTTP/1.1 response refusing a request: ``error`` in the dialect of ``path``
    (render.py), ``Connection: close``, and uvicorn's default headers (Date)."""
    body = _RENDER.body(error, dialect_of(path))
    head = [STATUS_LINE[error.status]]
    for name, value in default_headers:
        head += [name, b": ", value, b"\r\n"]
    head.append(
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % len(body)
    )
    return b"".join(head) + body


# uvicorn's callbacks, called directly from the overrides below: super() costs about 0.1 µs
# a call, twice per request.
_on_header = HttpToolsProtocol.on_header
_headers_complete = HttpToolsProtocol.on_headers_complete
_message_complete = HttpToolsProtocol.on_message_complete


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`Guard` (module docstring)."""

    # Slots, not the instance dict, for what this class adds: uvicorn's 28 attributes stay a
    # dict whose keys all instances share (CPython shares at most 30), where 47 made each
    # connection's dict a full one of its own -- 1.6 KB per connection, measured with
    # tracemalloc with 1,000 streams open (issue #18).
    __slots__ = (
        "_body_bytes",
        "_body_start",
        "_body_timeout",
        "_head_due",
        "_head_room",
        "_head_timeout",
        "_in_head",
        "_ip",
        "_last_read",
        "_lingering",
        "_max_body",
        "_max_fields",
        "_max_head",
        "_open",
        "_time",
        "_timer",
        "_timer_at",
        "_trailers",
        "guard",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: Guard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        limits = guard.limits
        self._max_head = limits.head_bytes
        self._max_fields = limits.head_fields
        self._head_timeout = limits.head_timeout
        self._body_timeout = limits.body_timeout
        # A body's bytes and its chunked trailers, which httptools gathers like headers: a
        # body larger than REQUEST_MAX_SIZE, framing and trailers included, is refused here
        # even when the app answered without reading it (a 401).
        self._max_body = limits.body_bytes + limits.head_bytes
        self._trailers = 0
        self._ip: str | None = None  # counted in guard.per_ip until the connection is lost
        self._open = False  # admitted (uvicorn knows the connection)
        self._lingering = False  # refused: drained until closed
        # The request under way: its head (_in_head), or its body. Between requests, _in_head
        # with _head_due 0: nothing is timed until a byte of the next one comes.
        self._in_head = True
        self._head_room = limits.head_bytes  # bytes the head may still take
        self._head_due = 0.0  # loop time by which the head must be complete; 0 = none under way
        self._last_read = 0.0  # loop time of the last read
        self._body_start = 0.0
        self._body_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # loop time the timer is set for
        self._time = self.loop.time

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) and peer else None
        refusal = self.guard.admit(ip, len(self.connections))
        if refusal is not None:
            # Before anything is read and without uvicorn knowing it: no parser, no timer.
            self.guard.note("connection_refused", refusal, ip)
            transport.write(answer(refusal, "/", self.server_state.default_headers))
            transport.close()
            return
        self._open = True
        self._ip = ip if self.guard.counts(ip) else None
        super().connection_made(transport)
        self._last_read = now = self.loop.time()
        self._start_head(now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._open:
            return
        self._open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ip is not None:
            self.guard.leave(self._ip)
        super().connection_lost(exc)
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The request's DisconnectWatch, told at once (http.REPORTS_KEY): no task per
            # request waiting for http.disconnect.
            watch = cycle.scope.get(WATCH_KEY)
            if isinstance(watch, DisconnectWatch):
                watch.lost()

    def shutdown(self) -> None:
        """uvicorn's start of a graceful shutdown: besides its own (close if idle, else after
        the response), the request under way is told, in its scope (http.STOPPING_KEY), so that
        if uvicorn cancels it when SHUTDOWN_GRACE_PERIOD is over it ends with an error in its
        dialect -- its stream's last event -- rather than a cut connection and a traceback."""
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.scope[STOPPING_KEY] = True  # type: ignore[literal-required]
        super().shutdown()

    # -- reading -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # The hot path: per read, a clock reading and a counter. Helpers are called only when
        # the timer must move or a limit is near, since each Python call costs about 0.3 µs.
        self._last_read = now = self._time()
        if self.timeout_keep_alive_task is not None:
            self._unset_keepalive_if_required()
        if self._in_head:
            if self._head_due == 0.0:  # the first bytes after a request (even bare CRLFs)
                self._head_due = due = now + self._head_timeout
                if self._timer is None or self._timer_at > due:
                    self._arm(due)
            room = self._head_room - len(data)
            if room < 0:
                self._past_room(data)
                return
            self._head_room = room
        else:
            self._body_bytes += len(data)
            if self._body_bytes > self._max_body:
                self._refuse(
                    PayloadTooLarge(
                        f"request body larger than {self._max_body - self._max_head} bytes "
                        "(REQUEST_MAX_SIZE)"
                    )
                )
                return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parser_stopped(exc)

    def _past_room(self, data: bytes) -> None:
        """A read longer than the head may still grow: the parser gets only what the head may
        take; if the head is still incomplete then, 431. What follows a complete head (its body,
        a next request) is fed on as usual."""
        if self._lingering:
            return
        view = memoryview(data)
        while view:
            if not self._in_head:
                self._body_bytes += len(view)
                self._feed(view)
                return
            room = self._head_room
            if len(view) <= room:
                self._head_room = room - len(view)
                self._feed(view)
                return
            self._head_room = 0  # on_message_complete resets it if a request ends in the slice
            if room:
                self._feed(view[:room])
                if self._lingering or self.transport.is_closing():
                    return
            if self._in_head and self._head_room == 0:
                self._refuse(
                    HeadersTooLarge(
                        "request line and headers larger than "
                        f"{self._max_head} bytes (REQUEST_HEADERS_MAX_SIZE)"
                    )
                )
                return
            view = view[room:]

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parser_stopped(exc)

    def _parser_stopped(self, exc: Exception) -> None:
        """What stopped httptools' parser, answered here (uvicorn's ``data_received`` would
        answer every refusal and error with a plain-text 400)."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # A callback that raised is the context of HttpParserCallbackError; ours raise a
        # ProxyError (on_headers_complete).
        cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None
        self._refuse(cause if isinstance(cause, ProxyError) else BadRequest(INVALID))

    def _unsupported_upgrade_warning(self) -> None:
        """An ``Upgrade`` request (WebSocket, h2c) is served as plain HTTP/1.1, as RFC 9110
        section 7.8 allows. uvicorn would log two warnings for each, one advising to install a
        WebSocket library: noise any client could repeat without end."""

    # -- parser callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            # A chunked body's trailer field: no ASGI app sees trailers, so none is kept
            # (uvicorn would add each to the request's headers), and they count as head fields.
            self._trailers += 1
            if self._trailers > self._max_fields:
                raise HeadersTooLarge(
                    f"more than {self._max_fields} trailer fields (REQUEST_HEADERS_MAX_COUNT)"
                )
            return
        _on_header(self, name, value)

    def on_headers_complete(self) -> None:
        if len(self.headers) > self._max_fields:
            raise HeadersTooLarge(
                f"more than {self._max_fields} header fields (REQUEST_HEADERS_MAX_COUNT)"
            )
        self._in_head = False
        self._body_start = now = self._last_read
        self._body_bytes = 0
        self._trailers = 0
        due = now + self._body_timeout
        if self._timer is None or self._timer_at > due:
            self._arm(due)
        self.scope[REPORTS_KEY] = True  # type: ignore[literal-required]  # connection_lost
        _headers_complete(self)

    def on_message_complete(self) -> None:
        # The next head's clock starts with its first read. One begun in the read that ended
        # this request, then stalled, waits at most uvicorn's keep-alive timeout once this
        # request is answered (no read comes to cancel that timer).
        self._in_head = True
        self._head_room = self._max_head
        self._head_due = 0.0
        _message_complete(self)

    # -- time --------------------------------------------------------------------------------

    def _start_head(self, now: float) -> None:
        self._head_due = due = now + self._head_timeout
        self._arm(due)

    def _arm(self, due: float) -> None:
        """Have the timer fire by ``due``: a timer already set for then or earlier stays (it
        finds what to do when it fires), so a busy connection re-arms rarely, not per request."""
        timer = self._timer
        if timer is not None:
            if self._timer_at <= due:
                return
            timer.cancel()
        self._timer = self.loop.call_at(due, self._check)
        self._timer_at = due

    def _check(self) -> None:
        """The connection's one timer: refuse a late head or body, else sleep until the next
        moment one could be late. Between requests it stops; the next head re-arms it."""
        self._timer = None
        if self._lingering or self.transport.is_closing():
            return
        now = self.loop.time()
        limits = self.guard.limits
        if self._in_head:
            due = self._head_due
            if due == 0.0:
                return
            if now >= due:
                self._refuse(
                    RequestTimeout(
                        f"request line and headers not received within {limits.head_timeout:g} s"
                        " (REQUEST_HEADERS_TIMEOUT)"
                    )
                )
                return
        else:
            cycle: RequestResponseCycle | None = self.cycle
            if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
                # The server is the one waiting (for the app to read, or to ask for the body).
                self._body_start = self._last_read = now
                self._body_bytes = 0
            idle_due = self._last_read + limits.body_timeout
            rate_due = math.inf
            if limits.body_min_rate:
                rate_due = (
                    self._body_start + limits.body_timeout + self._body_bytes / limits.body_min_rate
                )
            due = min(idle_due, rate_due)
            if now >= due:
                self._refuse(
                    RequestTimeout(
                        f"no request body received for {limits.body_timeout:g} s "
                        "(REQUEST_BODY_TIMEOUT)"
                        if idle_due <= rate_due
                        else f"request body slower than {limits.body_min_rate} bytes/s "
                        "(REQUEST_BODY_MIN_RATE)"
                    )
                )
                return
        self._arm(due)

    # -- refusing ----------------------------------------------------------------------------

    def _refuse(self, error: ProxyError) -> None:
        """Answer ``error`` unless a response to this connection's request has begun, end the
        request the app may be reading (its receive() sees a disconnect, its sends are dropped),
        and close after draining."""
        self.guard.note("request_refused", error, self.client[0] if self.client else None)
        cycle: RequestResponseCycle | None = self.cycle
        write = True
        if cycle is not None:
            if not cycle.response_complete:
                write = not cycle.response_started
                cycle.disconnected = True
                cycle.message_event.set()
            elif not self._in_head:  # this request was answered; only its body is late
                write = False
        if write:
            path = self.url.decode("latin-1") if hasattr(self, "url") else "/"
            self.transport.write(answer(error, path, self.server_state.default_headers))
        self._linger()

    def _linger(self) -> None:
        """Half-close and read (discarding) for at most LINGER seconds: closing a socket with
        unread bytes sends a reset, and the client could lose the refusal with it."""
        self._lingering = True
        self._in_head = True
        self._head_room = -1  # every read goes to _past_room, which discards it
        self._head_due = -1.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flow.resume_reading()
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            self._timer = self.loop.call_later(LINGER, transport.close)
        else:  # TLS: no half-close
            transport.close()


def server_options(settings: Settings) -> dict[str, Any]:
    """The transport part of ``uvicorn.Config``'s options (for the command and the tests alike):
    the guarded protocol, no WebSocket (the proxy serves none; an upgrade request is served as
    plain HTTP), and forwarding headers believed only from FORWARDED_ALLOW_IPS -- uvicorn's own
    default trusts 127.0.0.1, which let any local client choose its rate-limit identity."""
    trusted = settings.forwarded_allow_ips
    return {
        "http": Guard(Limits.of(settings)),
        "ws": "none",
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": "*" if trusted == ["*"] else list(trusted),
    }
