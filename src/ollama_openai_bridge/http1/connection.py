"""One HTTP/1.1 connection of :mod:`ollama_openai_bridge.http1`: the asyncio protocol and llhttp's
callbacks, one request at a time (RFC 9112 §9.3), with flow control and the request's timer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import TYPE_CHECKING, cast

import httptools
import structlog
from multidict import CIMultiDict

from ollama_openai_bridge.http1.errors import (
    Disconnected,
    InvalidResponse,
    ReadTimeout,
    TotalTimeout,
    parser_failure,
)
from ollama_openai_bridge.http1.response import PIECE_OVERHEAD, Origin, Response

if TYPE_CHECKING:
    from ollama_openai_bridge.http1.client import Client

log = structlog.get_logger("ollama_openai_bridge.http1")

HIGH_WATER = 256 * 1024  # bytes waiting for the consumer before reading pauses (PIECE_OVERHEAD)
COALESCE_AT = 1024  # pieces waiting, reading paused, that are joined into one (on_body)
_NO_BODY = (204, 304)  # RFC 9112 §6.3 rule 1: never a body, whatever the fields say
_CODINGS = frozenset({"gzip", "x-gzip", "deflate"})


# Linux's struct tcp_info (include/uapi/linux/tcp.h): tcpi_rtt, the smoothed round trip in
# microseconds, is the u32 at byte 68 (after 8 one-byte fields, then tcpi_rto ... tcpi_pmtu,
# tcpi_rcv_ssthresh); 104 bytes is the struct as of Linux 2.6, which every kernel returns.
_TCP_INFO_SIZE = 104
_TCPI_RTT = struct.Struct("=I")
_TCPI_RTT_OFFSET = 68


def kernel_round_trip(sock: socket.socket) -> float:
    """The round trip to ``sock``'s peer in seconds, as the kernel measured it (``TCP_INFO``'s
    ``tcpi_rtt``, from the handshake's SYN and its answer on a new connection): unlike a
    timing of the connect, it counts neither a busy event loop nor the TLS handshake's round
    trips nor the DNS lookup (fresh-eyes review of #18, second round: a connect timed at 201 ms
    by a busy loop let a POST be sent twice). 0.0 where the kernel has no ``TCP_INFO``
    (macOS, Windows) or it fails."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return 0.0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, _TCP_INFO_SIZE)
    except OSError:
        return 0.0
    if len(info) < _TCPI_RTT_OFFSET + _TCPI_RTT.size:
        return 0.0
    return float(_TCPI_RTT.unpack_from(info, _TCPI_RTT_OFFSET)[0]) / 1e6


class Connection(asyncio.Protocol):
    """One connection to an origin, carrying one request at a time: the asyncio protocol and the
    llhttp parser's callbacks. Made and pooled by :class:`Client`."""

    # Slots: CPython 3.11 stops sharing an instance dict's keys at 30 attributes (the dict of
    # one grows from 296 B to 1,584 B), and attribute reads on the per-chunk path slow down:
    # measured 0.80 -> 0.88 us per streamed chunk when the head-size count (on_headers_complete)
    # brought this class to 30; with slots, 0.81-0.84 us, as before.
    __slots__ = (
        "_bare",
        "_closed",
        "_complete",
        "_counted",
        "_deadline",
        "_error",
        "_field_bytes",
        "_fields",
        "_head",
        "_head_bytes",
        "_head_read",
        "_head_tail",
        "_heads",
        "_in_body",
        "_interim",
        "_keep",
        "_last",
        "_loop",
        "_parser",
        "_received",
        "_resp",
        "_timer",
        "_transport",
        "_until_close",
        "client",
        "idle_since",
        "origin",
        "paused",
        "round_trip",
        "served",
    )

    def __init__(self, client: Client, origin: Origin) -> None:
        self.client = client
        self.origin = origin
        self.served = 0  # answers it has carried: more than 0 is a reused connection
        # Seconds of one round trip to the server, as the kernel measured it (0.0: unknown):
        # client.resend_reason bounds a close that crossed a request with it.
        self.round_trip = 0.0
        self.idle_since = 0.0
        self.paused = False
        self._loop = client.loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self._counted = True  # still counted in the client's open connections
        self._resp: Response | None = None
        self._head: asyncio.Future[Response] | None = None  # resolves at the answer's head
        self._fields: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0  # bytes read while in a head
        self._heads = 0  # heads (1xx) that ended in the reads since one ended inside a head
        self._head_tail = b""  # the last bytes of such a read: a head's end may straddle it
        self._head_read = b""  # the last read that began inside a head
        self._field_bytes = 0  # bytes of its fields (of the trailer's, once in the body)
        self._bare = 0  # bytes of reads in a body that brought none of it (framing, trailer)
        self._in_body = False
        self._interim = False  # a 1xx head: another head follows
        self._until_close = False  # no length: the body ends when the server closes
        self._complete = False
        self._keep = False
        self._received = False  # a byte of this request's answer has come
        self._error: InvalidResponse | None = None  # raised from a parser callback
        self._last = 0.0  # loop time of the last read
        self._deadline = 0.0  # the request's own; 0: none
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A request is written in one piece; an answer must not wait for Nagle's timer.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.round_trip = kernel_round_trip(sock)

    def data_received(self, data: bytes) -> None:
        self._last = self._loop.time()
        resp = self._resp
        if resp is None:
            # A server speaks only when asked (RFC 9112 §9.3): bytes on an idle connection (an
            # unasked 408 before closing, a stray byte) mean it is out of step.
            self.abort()
            return
        self._received = True
        in_head = not self._in_body
        if in_head:
            self._head_bytes += len(data)
            self._head_read = data  # where the head may end (on_headers_complete)
            size = -1
        else:
            size = resp._size  # body bytes waiting: on_body adds to it during feed_data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(InvalidResponse("an upgrade (101) that was not asked for"))
            return
        except httptools.HttpParserError as exc:
            if self._complete:  # bytes after a whole answer: it stands, the connection does not
                self._keep = False
                self._finish()
                return
            self._fail(self._error or parser_failure(str(exc)))
            return
        if self._complete:
            self._finish()
        elif in_head:
            if not self._in_body:  # the head goes on in the next read
                if self._head_bytes > self.client.max_head:
                    self._fail(
                        InvalidResponse(f"a response head larger than {self.client.max_head} B")
                    )
                    return
                self._heads = 0
                self._head_tail = (self._head_tail + data)[-3:]  # reads of a byte or two too
        elif resp._size != size:
            self._bare = 0
        else:
            self._bare_read(len(data))

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._gone()
        if self._resp is None:
            return
        if self._head is not None:
            if self._received:
                error = Disconnected(
                    "the server closed the connection while sending its head", answered=True
                )
            else:
                # How long after the write the close came (_last is the send's time until a
                # byte arrives) and how: the client's resend rule (client.resend_reason).
                error = Disconnected(
                    "the server closed the connection before answering",
                    answered=False,
                    after=self._loop.time() - self._last,
                    reset=isinstance(exc, ConnectionResetError),
                )
            error.__cause__ = exc
            self._fail(error)
        elif self._until_close and exc is None:
            self._complete = True  # RFC 9112 §6.3 rule 8: the close ends the body
            self._keep = False
            self._finish()
        elif isinstance(exc, ConnectionResetError):
            self._fail(exc)
        else:
            error = Disconnected(
                "the connection closed before the end of the answer", answered=True
            )
            error.__cause__ = exc
            self._fail(error)

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            raise InvalidResponse("bytes after the end of an answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        # A head that came in one read is counted here (data_received counts one that drips);
        # so is a trailer (RFC 9112 §7.1.2), bounded as a head is (aiohttp's max_field_size
        # holds for both too).
        self._field_bytes += len(name) + len(value) + 4
        if self._field_bytes > self.client.max_head:
            part = "trailer section" if self._in_body else "head"
            self._error = InvalidResponse(f"a response {part} larger than {self.client.max_head} B")
            raise self._error
        if not self._in_body:
            self._fields.append((name, value))  # a trailer's fields are not used: dropped

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # RFC 9110 §15.2: an interim answer, the final one follows
            self._interim = True
            self._heads += 1
            self._fields = []
            return
        if self._head_bytes > self.client.max_head and self._head_length() > self.client.max_head:
            # on_header counts fields as they come, not status lines: a 70 KB reason phrase,
            # or a flood of 100 Continue, in one read with the body was taken (fresh-eyes
            # review of #18)
            self._error = InvalidResponse(f"a response head larger than {self.client.max_head} B")
            raise self._error
        self._head_read = b""  # not kept: it may be a large read
        resp = self._resp
        assert resp is not None
        headers: CIMultiDict[str] = CIMultiDict(
            [
                (n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                for n, v in self._fields
            ]
        )
        self._fields = []
        self._field_bytes = 0  # the trailer's, from now on
        self._in_body = True
        resp.status = status
        resp.headers = headers
        content_type = headers.get("Content-Type")
        if content_type is not None:
            resp.content_type = content_type.partition(";")[0].strip().lower()
        length = headers.get("Content-Length")
        if length is not None:
            resp.content_length = int(length)  # llhttp has checked it is digits
        coding = headers.get("Content-Encoding")
        if coding is not None and (coding := coding.strip().lower()) in _CODINGS:
            resp._coding = "gzip" if coding == "x-gzip" else coding
        codings = headers.getall("Transfer-Encoding", None)
        if codings is None:
            self._until_close = length is None and status not in _NO_BODY
        elif codings == ["chunked"] or status in _NO_BODY:
            self._until_close = False
        else:
            self._until_close = not self._chunked(codings)
        head = self._head
        self._head = None
        if head is not None and not head.done():
            head.set_result(resp)

    def on_body(self, body: bytes) -> None:
        """A piece of the body (a chunk's, or a read's): kept for the consumer, counted with
        :data:`PIECE_OVERHEAD` toward :data:`HIGH_WATER`, so that a stream of tiny chunks from
        an odd backend (2 bytes each) pauses near the mark in memory, not in payload: it held
        28 times the mark, 162,670 pieces in 7.2 MB (fresh-eyes review of #18). The read that
        crosses the mark may bring tens of thousands more: past the mark, every
        :data:`COALESCE_AT` pieces are joined into one (nothing on the usual path, where the
        consumer keeps up)."""
        resp = self._resp
        assert resp is not None
        resp._chunks.append(body)
        resp._size += len(body) + PIECE_OVERHEAD
        resp._wake()
        if resp._size > HIGH_WATER:
            if not self.paused:
                # The consumer lags (a slow client of a fast stream): let the kernel's buffers
                # fill and TCP tell the server to wait, rather than holding the stream here.
                self.paused = True
                assert self._transport is not None
                self._transport.pause_reading()
            elif len(resp._chunks) > COALESCE_AT:  # the read that paused brings many more
                resp._coalesce()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._keep = self._parser.should_keep_alive()

    def _chunked(self, fields: list[str]) -> bool:
        """Whether a body with these ``Transfer-Encoding`` field values is chunked (else it ends
        when the server closes, RFC 9112 §6.3 rule 4): chunked if that is the last coding, as
        llhttp decides. Raises :class:`InvalidResponse` for a coding that would be left on the
        body -- any but chunked, or chunked not last (llhttp does not remove it then) -- since
        passing it on would pass coded bytes as the content (aiohttp does); they were not asked
        for either: no ``TE`` is sent (RFC 9110 §10.1.4). ``identity`` (RFC 2616 §3.6, no coding
        at all, dropped from the registry by RFC 7230) is tolerated, as aiohttp does."""
        names = [
            name
            for value in fields
            for item in value.split(",")  # RFC 9110 §5.6.1: empty list elements are allowed
            if (name := item.partition(";")[0].strip().lower())
        ]
        shown = ", ".join(fields)[:100]
        other = next((n for n in names if n not in ("chunked", "identity")), None)
        if other is not None:
            self._error = InvalidResponse(
                f"a body in the transfer coding {other!r}, which is not decoded here "
                f"(Transfer-Encoding: {shown})"
            )
            raise self._error
        if names.count("chunked") > 1 or ("chunked" in names and names[-1] != "chunked"):
            # RFC 9112 §6.1: chunked is applied once, and last; not last, its framing would
            # stay in the body read until the close.
            self._error = InvalidResponse(
                f"a body with chunked not once and last (Transfer-Encoding: {shown})"
            )
            raise self._error
        if "identity" in names:
            log.debug(
                "upstream_transfer_coding_tolerated",
                host=self.origin.host,
                transfer_encoding=shown,
                reason="identity is no coding (RFC 2616 §3.6): ignored, as aiohttp does",
            )
        return "chunked" in names

    # --- requests ---------------------------------------------------------------------------

    async def send(self, head: bytes, body: bytes | None, deadline: float) -> Response:
        """Write one request (``head`` ends with its blank line) and wait for its answer's head.
        Any failure or cancellation closes the connection: its answer is unread."""
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            raise Disconnected(
                "the server closed the connection before the request was sent",
                answered=False,
                sent=False,
            )
        loop = self._loop
        self._resp = Response(self, self.origin, loop)
        head_future: asyncio.Future[Response] = loop.create_future()
        self._head = head_future
        self._fields = []
        self._head_bytes = self._field_bytes = self._bare = self._heads = 0
        self._head_tail = b""
        self._in_body = self._complete = self._received = False
        self._error = None
        now = self._last = loop.time()
        self._deadline = deadline
        due = now + self.client.read_timeout
        self._timer = loop.call_at(deadline if deadline and deadline < due else due, self._tick)
        if body:
            if len(body) < 65536:
                transport.write(head + body)
            else:
                transport.writelines((head, body))  # no copy of a large body
        else:
            transport.write(head)
        try:
            return await head_future
        except BaseException:
            self.abort()
            raise

    def resume(self) -> None:
        """The consumer has read what was waiting: read from the socket again."""
        self.paused = False
        self._last = self._loop.time()  # the silence while paused was ours, not the server's
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    def abort(self) -> None:
        """Close now, dropping what is unsent; an answer in progress fails."""
        self._gone()
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.abort()
        self._fail(Disconnected("the connection was closed", answered=self._received))

    def close(self) -> None:
        """Close an idle connection gracefully."""
        self._gone()
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.close()

    def _gone(self) -> None:
        if self._counted:
            self._counted = False
            self.client.lost(self)

    def _tick(self) -> None:
        """The request's timer: a timeout, or moved to the next time one could happen (reads
        since it was set only note the time)."""
        self._timer = None
        if self._resp is None:
            return
        loop = self._loop
        now = loop.time()
        deadline = self._deadline
        if deadline and now >= deadline:
            self._fail(TotalTimeout("the request's timeout passed"))
            return
        idle = self.client.read_timeout
        if self.paused:  # waiting for our consumer, not for the server (aiohttp's sock_read too)
            due = now + idle
        else:
            due = self._last + idle
            if now >= due:
                self._fail(ReadTimeout(f"no data from the server for {idle:g} s"))
                return
        self._timer = loop.call_at(deadline if deadline and deadline < due else due, self._tick)

    def _head_length(self) -> int:
        """Bytes of the heads -- interim ones and the final one -- of an answer whose final head
        ends in the current read, which may bring the body's first bytes too: the earlier
        reads' and this one's up to the final head's blank line. Asked only when the reads
        passed ``max_head`` (a large first read). llhttp takes no bare LF, so every head ends
        in CRLF CRLF."""
        data = self._head_read
        earlier = self._head_bytes - len(data)
        tail = self._head_tail
        seen = tail + data[: self.client.max_head + 4] if tail else data
        end = 0
        for _ in range(self._heads + 1):  # the interim heads that ended here, then the final
            end = seen.find(b"\r\n\r\n", end) + 4
            if end == 3:
                return self._head_bytes  # not found within the limit: over it
        return earlier + end - len(tail)

    def _bare_read(self, size: int) -> None:
        """A read of ``size`` bytes in a body brought none of it: chunk framing, or the trailer
        section (RFC 9112 §7.1.2), which httptools gathers in memory, a field's pieces joined as
        they come (a 200 MB trailer took 410 MB and 56 s of CPU: fresh-eyes review of #18).
        Such reads in a row are bounded as a head is; the read where the body ended is counted
        by on_header, field by field, so a trailer holds at most ``max_head`` bytes and a
        read's worth."""
        self._bare += size
        if self._bare > self.client.max_head:
            self._fail(
                InvalidResponse(f"a response trailer section larger than {self.client.max_head} B")
            )

    def _fail(self, exc: BaseException) -> None:
        """This request ends in ``exc``: whoever waits gets it, the connection closes."""
        resp = self._resp
        if resp is None:
            return
        self._resp = None
        resp._conn = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        head = self._head
        self._head = None
        if head is not None:
            if not head.done():
                head.set_exception(exc)
        else:
            resp._fail(exc)
        self.abort()

    def _finish(self) -> None:
        """The answer has arrived whole: it keeps its body; the connection goes back to the pool
        if the server keeps it open (RFC 9112 §9.3), else it closes."""
        resp = self._resp
        assert resp is not None
        self._resp = None
        resp._conn = None
        resp._eof = True
        resp._wake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.served += 1
        if self.paused:
            resp._coalesce()  # see on_body
            self.resume()
        if self._keep and not self._closed:
            self.client.release(self)
        else:
            self.close()
