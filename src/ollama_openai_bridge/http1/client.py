"""The pool and the requests of :mod:`ollama_openai_bridge.http1`: connections per origin, kept
alive and reused (RFC 9112 §9.3), the request head as bytes made once per target."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import structlog

from ollama_openai_bridge.http1.connection import Connection
from ollama_openai_bridge.http1.errors import (
    ConnectFailed,
    ConnectTimeout,
    Disconnected,
    TotalTimeout,
)
from ollama_openai_bridge.http1.response import Origin, Response

log = structlog.get_logger("ollama_openai_bridge.http1")

MAX_HEAD = 64 * 1024  # bytes of a response's status line, fields and interim heads; of a trailer
IDLE_EXPIRY = 15.0  # seconds an idle connection is kept (aiohttp's keepalive_timeout)
MAX_TARGETS = 256  # request targets whose head bytes are kept (model ids make more)
DNS_TTL = 300.0  # seconds a host's addresses are kept (aiohttp's ttl_dns_cache, as Upstream set it)
ACCEPT_ENCODING = "gzip, deflate"  # the codings decoded here (aiohttp adds br/zstd if installed)
# RFC 9110 §9.2.2: sending these twice has the effect of sending them once (aiohttp's
# IDEMPOTENT_METHODS, Go's isReplayable); the proxy sends only GET and POST.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Seconds added to a connection's round trip to bound a close that crossed the request
# (resend_reason): uvloop's clock counts whole milliseconds, so a gap read from it is up to
# 1 ms off, and a busy loop notices a close some milliseconds after it came (measured: 3 ms).
RESEND_SLACK = 0.005
RESEND_WINDOW_MAX = 0.25  # seconds: a round trip measured during a loss is no round trip
_PORTS = {"http": 80, "https": 443}


def unsupported(url: str) -> str | None:
    """Why :class:`Client` cannot send to ``url`` (an upstream's base URL), or None when it can:
    not http(s), credentials in the URL (aiohttp turns them into Basic auth), a host name that is
    not ASCII (aiohttp IDNA-encodes it)."""
    parts = urlsplit(url)
    if parts.scheme not in _PORTS:
        return f"the scheme {parts.scheme!r} (http and https only)"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL (user:password@)"
    if not parts.hostname:
        return "no host"
    if not parts.netloc.isascii():
        return "a host name that is not ASCII (IDNA)"
    return None


_CONTEXTS: dict[tuple[bool, str | None, str | None], ssl.SSLContext] = {}


def default_context(verify: bool) -> ssl.SSLContext:
    """The process's TLS context: the system's CAs, or those of OpenSSL's ``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR``, host names checked; with ``verify`` false, nothing checked. Made once per
    value of those variables, when first needed: loading the CAs takes tens of milliseconds."""
    key = (verify, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        ctx = _CONTEXTS[key] = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    return ctx


def resend_reason(method: str, exc: Disconnected, round_trip: float) -> tuple[bool, str]:
    """Whether a request that failed with ``exc`` -- a reused connection closed by the server
    before a byte of the answer -- may be sent once more on a new connection, and why (for the
    DEBUG log). ``round_trip``: seconds of one round trip to the server as the kernel measured
    it (connection.kernel_round_trip; 0.0 when unknown).

    RFC 9112 §9.3.1: a client MUST NOT retry a non-idempotent request automatically unless it
    knows it was never applied. Go's net/http resends one only when nothing of it was written
    (transport.go ``shouldRetryRequest``); aiohttp never does (client.py, idempotent methods
    only). The race this resend is for -- a server's keep-alive timer closing an idle
    connection as a request is sent -- leaves one more sign: a FIN that left the server before
    the request reached it arrives within a round trip of the write, while a server that read
    the request closes a round trip and its own work later. Measured on loopback under uvloop
    against a server closing idle connections on a timer (fresh-eyes review of #18), 400
    requests sent as the timer fired: the crossing close was seen at most 1 ms after the write,
    at most 3 ms with the loop busy 2 ms in every 3; a server that read the request and worked
    1 s closed 1001 ms after it. So a POST is sent again only when nothing of it was written,
    or the close -- a FIN, or a reset (the server closed with the request unread) -- came
    within one round trip plus :data:`RESEND_SLACK`. The round trip is the kernel's, not a
    timing of the connect: that one also counts a busy loop, TLS's round trips and DNS (a
    connect timed at 201 ms let a backend that worked 150 ms run a POST twice: second review).
    The time bounds a reset too: L4 load balancers reset connections silent for minutes (a
    backend thinking that long). A server that reads a request and closes within those few
    milliseconds has done no work worth the name (no model answers that fast). Any other
    failure is left to ``MAX_RETRIES`` (upstream.py), which counts it once."""
    if not exc.sent:
        return True, "nothing of the request was written: the connection was found closed"
    if method in IDEMPOTENT:
        return True, f"{method} is idempotent (RFC 9110 §9.2.2)"
    how = "a reset" if exc.reset else "a close"
    if exc.after is None:
        return False, f"{how} at an unknown time: the server may have acted on the {method}"
    window = min(round_trip, RESEND_WINDOW_MAX) + RESEND_SLACK
    timing = (
        f"{how} {exc.after * 1000:.1f} ms after the request was written, the connection's "
        f"round trip bound being {window * 1000:.1f} ms"
    )
    if exc.after <= window:
        return True, f"{timing}: the close crossed the request, unread"
    return False, f"{timing}: the server may have read and acted on the {method} (RFC 9112 §9.3.1)"


def _fields(headers: Mapping[str, str]) -> bytes:
    """``headers`` as header-field lines; ValueError for one that is not printable ASCII (a
    line break would end the head)."""
    lines = []
    for name, value in headers.items():
        if not (name.isascii() and value.isascii() and (name + value).isprintable()):
            raise ValueError(f"header {name!r}: printable ASCII only")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode()


class Client:
    """Pooled HTTP/1.1 connections to the backends, used like an ``aiohttp.ClientSession``
    through :meth:`request`. ``headers`` are sent with every request (printable ASCII, checked
    here: raises ValueError); ``limit`` bounds the connections open at once (idle ones included;
    a request waits for one beyond it); ``connect_timeout`` and ``read_timeout`` in seconds
    (module docstring); ``ssl_context`` verifies the server (default: the system's CAs, and
    ``SSL_CERT_FILE``, with host names checked), ``verify=False`` checks nothing. Made inside
    the running event loop."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        limit: int,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        verify: bool = True,
        idle_expiry: float = IDLE_EXPIRY,
        max_head: int = MAX_HEAD,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.read_timeout = read_timeout
        self.max_head = max_head
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._idle_expiry = idle_expiry
        self._ssl = ssl_context  # else made at the first https connection (module's, shared)
        self._verify = verify
        self._fields = _fields({"Accept-Encoding": ACCEPT_ENCODING, **headers})
        self._targets: dict[str, tuple[Origin, bytes]] = {}
        # (host, port) -> (expiry in loop time, the lookup giving its addresses)
        self._dns: dict[tuple[str, int], tuple[float, asyncio.Task[Any]]] = {}
        self._idle: dict[Origin, list[Connection]] = {}
        self._open = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._all: set[Connection] = set()
        self._closing = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send ``method url`` with body ``data``; the :class:`Response` once its head arrived
        (any status). ``timeout``: seconds for the whole request, the body's reading included;
        ``headers``: fields for this request alone, after the fixed ones (a ``traceparent``,
        tracing.py). Raises the module's failures (its docstring); ValueError for a URL it
        cannot send to, or a header that is not printable ASCII."""
        target = self._targets.get(url)
        if target is None:
            target = self._target(url)
        origin, rest = target
        if headers:
            rest += _fields(headers)
        if data is not None or method != "GET":
            if method == "HEAD":
                raise ValueError("HEAD is not supported (llhttp would wait for a body)")
            head = b"%s %sContent-Length: %d\r\n\r\n" % (
                method.encode(),
                rest,
                len(data) if data else 0,
            )
        else:
            head = b"GET " + rest + b"\r\n"
        loop = self.loop
        deadline = loop.time() + timeout if timeout else 0.0
        idle = self._idle.get(origin)
        conn = idle.pop() if idle else await self._acquire(origin, deadline)  # LIFO: warmest
        try:
            return await conn.send(head, data, deadline)
        except Disconnected as exc:
            if exc.answered or not conn.served:
                raise
            # RFC 9112 §9.3.1: a reused connection closed without a byte of answer -- its idle
            # timer may have won the race -- once more on a new one if that is safe.
            resend, reason = resend_reason(method, exc, conn.round_trip)
            log.debug(
                "upstream_request_resent" if resend else "upstream_request_not_resent",
                host=origin.host,
                method=method,
                reason=reason,
            )
            if not resend:
                raise
        conn = await self._acquire(origin, deadline, fresh=True)
        return await conn.send(head, data, deadline)

    async def close(self) -> None:
        """Close every connection; requests in progress fail."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
        for _, lookup in self._dns.values():
            lookup.cancel()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionAbortedError("the client was closed"))

    # --- the pool ---------------------------------------------------------------------------

    def release(self, conn: Connection) -> None:
        """``conn`` finished an answer and stays open: idle, for the next request."""
        if self._closing:
            conn.close()
            return
        now = conn.idle_since = self.loop.time()
        idle = self._idle.get(conn.origin)
        if idle is None:
            idle = self._idle[conn.origin] = []
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_at(now + self._idle_expiry, self._sweep)
        if self._waiters:
            self._wake()

    def lost(self, conn: Connection) -> None:
        """``conn`` closes: its place is free. A connection never handed out -- its connect was
        cancelled or failed after the transport existed, so asyncio still reports it lost --
        has had its place given back by :meth:`_acquire` already: counting it again drove the
        count below zero and let MAX_CONNECTIONS be exceeded (fresh-eyes review of #18)."""
        if conn not in self._all:
            return
        self._open -= 1
        self._all.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        """Close the connections idle for ``idle_expiry`` seconds (the oldest are first in each
        list); come back when the next one will be."""
        self._sweeper = None
        now = self.loop.time()
        expiry = self._idle_expiry
        oldest = 0.0
        for conns in self._idle.values():
            while conns and now - conns[0].idle_since >= expiry:
                conns.pop(0).close()
            if conns and (not oldest or conns[0].idle_since < oldest):
                oldest = conns[0].idle_since
        if oldest:
            self._sweeper = self.loop.call_at(oldest + expiry, self._sweep)

    async def _acquire(self, origin: Origin, deadline: float, *, fresh: bool = False) -> Connection:
        """An idle connection to ``origin`` (unless ``fresh``), else a new one once there is
        room: at ``limit``, an idle connection to another origin is closed, or the request
        waits for a connection to be released or closed (until ``deadline``)."""
        loop = self.loop
        while True:
            if self._closing:
                raise ConnectionAbortedError("the client was closed")
            idle = self._idle.get(origin)
            if idle and not fresh:
                return idle.pop()
            if self._open < self._limit:
                break
            other = next((conns for conns in self._idle.values() if conns), None)
            if other is not None:
                other.pop(0).close()  # the longest idle, of another origin (or this one: fresh)
                continue
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                if deadline:
                    try:
                        async with asyncio.timeout_at(deadline):
                            await waiter
                    except TimeoutError:
                        raise TotalTimeout("no connection free before the timeout") from None
                else:
                    await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # Woken for a free place, but cancelled or timed out in the same instant:
                    # hand the wake-up on, or the next waiter waits for a place that is free
                    # (fresh-eyes review of #18; aiohttp's connector passes it on too).
                    self._wake()
                else:
                    waiter.cancel()
                raise
        self._open += 1
        try:
            return await self._connect(origin, deadline)
        except BaseException:
            self._open -= 1
            if self._waiters:
                self._wake()
            raise

    async def _connect(self, origin: Origin, deadline: float) -> Connection:
        """A new connection to ``origin``: its addresses tried in turn (the TCP and TLS
        handshakes within ``connect_timeout``, or ``deadline`` if sooner)."""
        loop = self.loop
        limit = loop.time() + self._connect_timeout
        total = bool(deadline) and deadline < limit
        tls = None
        if origin.scheme == "https":
            tls = self._ssl = self._ssl or default_context(self._verify)
        try:
            async with asyncio.timeout_at(deadline if total else limit):
                addresses = await self._resolve(origin)
                for i, (family, address) in enumerate(addresses):
                    try:
                        _, conn = await loop.create_connection(
                            lambda: Connection(self, origin),
                            address[0],
                            address[1],
                            family=family,
                            ssl=tls,
                            server_hostname=origin.host if tls is not None else None,
                        )
                        break
                    except ssl.SSLError:
                        raise  # the server answered: another address is the same server
                    except OSError:
                        if i == len(addresses) - 1:
                            raise
        except TimeoutError:
            if total:
                raise TotalTimeout("the request's timeout passed while connecting") from None
            raise ConnectTimeout(
                f"no connection to {origin.host} within {self._connect_timeout:g} s"
            ) from None
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise ConnectFailed(origin.host, exc) from None
        if self._closing:
            conn.abort()
            raise ConnectionAbortedError("the client was closed")
        self._all.add(conn)
        return conn

    async def _resolve(self, origin: Origin) -> list[tuple[int, tuple[Any, ...]]]:
        """``origin``'s addresses, ``(family, sockaddr)`` in the resolver's order, kept for
        :data:`DNS_TTL` seconds as aiohttp's connector does (``ttl_dns_cache``): new connections
        in a burst ask the resolver once, not once each (its lookups queue in a small thread
        pool). The lookup is a task of its own, so a caller that gives up cancels no other's;
        a failed one is not kept."""
        key = (origin.host, origin.port)
        loop = self.loop
        entry = self._dns.get(key)
        if entry is None or (entry[1].done() and entry[0] <= loop.time()):
            if len(self._dns) >= MAX_TARGETS:
                self._dns.clear()
            task = loop.create_task(self._lookup(origin))
            entry = self._dns[key] = (loop.time() + DNS_TTL, task)
            task.add_done_callback(lambda t: self._forget(key, t))
        return await asyncio.shield(entry[1])

    async def _lookup(self, origin: Origin) -> list[tuple[int, tuple[Any, ...]]]:
        infos = await self.loop.getaddrinfo(
            origin.host, origin.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        return list(dict.fromkeys((info[0], info[4]) for info in infos))

    def _forget(self, key: tuple[str, int], task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            entry = self._dns.get(key)
            if entry is not None and entry[1] is task:
                del self._dns[key]

    def _target(self, url: str) -> tuple[Origin, bytes]:
        """``url``'s origin and the bytes of its head after the method: target, version, Host
        and the fixed fields (made once per URL, :data:`MAX_TARGETS` kept)."""
        reason = unsupported(url)
        if reason is not None:
            raise ValueError(f"cannot send to {url}: {reason}")
        parts = urlsplit(url)
        host = parts.hostname
        assert host is not None
        port = parts.port or _PORTS[parts.scheme]
        path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        # The path is the proxy's own (a base URL and an endpoint, a model id quoted by
        # routes.openai.model_path): a space or control character would break the request line.
        if not (path.isascii() and path.isprintable()) or " " in path:
            raise ValueError(f"cannot send to {url}: the path must be printable ASCII")
        authority = f"[{host}]" if ":" in host else host
        if parts.port is not None and port != _PORTS[parts.scheme]:
            authority += f":{port}"
        rest = f"{path} HTTP/1.1\r\nHost: {authority}\r\n".encode() + self._fields
        if len(self._targets) >= MAX_TARGETS:
            self._targets.clear()
        origin = Origin(parts.scheme, host, port)
        self._targets[url] = (origin, rest)
        return origin, rest
