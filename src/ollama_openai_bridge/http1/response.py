"""An answer of :mod:`ollama_openai_bridge.http1`: its head, and its body as it is read (decoded
from gzip/deflate in bounded pieces, RFC 9110 §8.4)."""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, NamedTuple

from multidict import CIMultiDict

from ollama_openai_bridge.http1.errors import InvalidResponse

if TYPE_CHECKING:
    from ollama_openai_bridge.http1.connection import Connection

DECODED_PIECE = 256 * 1024  # bytes of decoded body one read returns at most
# Bytes of heap a piece of body waiting for the consumer costs beyond its content: a bytes
# object's header (33 B, sys.getsizeof(b"")), its list slot (8 B), pymalloc's rounding;
# measured 44 B per 2-byte piece with tracemalloc (fresh-eyes review of #18).
PIECE_OVERHEAD = 48
# Coded bytes fed at once to a gzip member after the first, doubling up to the most: zlib
# copies what follows a member's end (unused_data), so feeding it all the rest at each of many
# small members would be quadratic (aiohttp's compression_utils feeds members the same way).
MEMBER_WINDOW = (64, 64 * 1024)


class Origin(NamedTuple):
    """Where a connection goes (RFC 9110 §4.3.1). ``host`` as in the URL, without brackets; also
    what ``Response.url.host`` gives, as aiohttp's ``URL.host``."""

    scheme: str
    host: str
    port: int


class Response:
    """One answer, from its head on. The subset of ``aiohttp.ClientResponse`` the proxy uses:
    ``status``, ``headers`` (case-insensitive, str), ``content_type`` (lower-case, without
    parameters, ``application/octet-stream`` when absent), ``content_length`` (the field, or
    None), ``url.host``, ``content.readany()`` (itself), :meth:`read`, :meth:`release`,
    :meth:`close`. The body is decoded (gzip/deflate) as it is read."""

    __slots__ = (
        "_chunks",
        "_coding",
        "_conn",
        "_decoder",
        "_eof",
        "_exc",
        "_loop",
        "_members",
        "_size",
        "_tail",
        "_waiter",
        "_window",
        "content_length",
        "content_type",
        "headers",
        "status",
        "url",
    )

    def __init__(self, conn: Connection, url: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self._conn: Connection | None = conn  # None once the body has all arrived, or closed
        self._loop = loop
        self._chunks: list[bytes] = []  # body bytes received, not yet read
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._coding = ""  # "gzip"/"deflate" until its decoder is made from the first bytes
        self._decoder: zlib._Decompress | None = None
        # coded bytes the decoder has not taken yet (a read's output is bounded; a member's end)
        self._tail: bytes | memoryview = b""
        self._members = 0  # gzip members begun (RFC 1952 §2.2: a body may hold several)
        self._window = 0  # coded bytes fed next to a member after the first
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.content_type = "application/octet-stream"
        self.content_length: int | None = None
        self.url = url

    @property
    def content(self) -> Response:
        """aiohttp's ``resp.content`` (its StreamReader): here, the response itself."""
        return self

    async def readany(self) -> bytes:
        """What has arrived of the body since the last read (decoded), waiting for something if
        nothing has; ``b""`` at its end. Raises the connection's failure (:class:`Disconnected`,
        ``ConnectionResetError``, a timeout, :class:`InvalidResponse`)."""
        while True:
            if self._tail:
                out = self._decode(self._tail)
                if out:
                    return out
                continue
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._size = 0
                conn = self._conn
                if conn is not None and conn.paused:
                    conn.resume()
                if not self._coding:
                    return data
                out = self._decode(data)
                if out:
                    return out
                continue
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return self._flush() if self._decoder is not None else b""
            waiter = self._waiter = self._loop.create_future()
            await waiter

    async def read(self) -> bytes:
        """The whole body (decoded), waiting for its end."""
        if self._eof and not self._coding and self._exc is None:
            chunks = self._chunks  # the usual case: a small answer that came with its head
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            return data
        parts = []
        while data := await self.readany():
            parts.append(data)
        return b"".join(parts)

    def release(self) -> None:
        """Done with this answer. Its connection went back to the pool when the body arrived
        whole; if it has not, the connection is closed: the rest would have to be read before it
        could carry another request (RFC 9112 §9.3), and how much there is is not known."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.abort()

    def close(self) -> None:
        """Close the connection now unless the answer had arrived whole (the backend sees a
        cancelled stream at once); what was not read is dropped."""
        self.release()
        self._chunks.clear()
        self._tail = b""
        self._eof = True

    # --- from the connection ----------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _coalesce(self) -> None:
        """Reading has paused (the consumer lags): keep what waits as one piece."""
        chunks = self._chunks
        if len(chunks) > 1:
            data = b"".join(chunks)
            chunks.clear()
            chunks.append(data)
            self._size = len(data) + PIECE_OVERHEAD

    def _fail(self, exc: BaseException) -> None:
        if self._exc is None and not self._eof:
            self._exc = exc
            self._wake()

    def _decode(self, data: bytes | memoryview) -> bytes:
        """Decode coded bytes ``data``: at most :data:`DECODED_PIECE` bytes out, what was not
        taken kept in ``_tail``. A gzip body may be several members (RFC 1952 §2.2), each
        decoded in turn, as aiohttp does; bytes after the end that are no member -- or any
        after a deflate stream's end -- raise :class:`InvalidResponse`: passing the part
        before them would be a short or altered answer (fresh-eyes review of #18)."""
        decoder = self._decoder
        if decoder is None or decoder.eof:
            decoder = self._begin(data)
        if self._members == 1:
            fed = data
        else:  # see MEMBER_WINDOW
            data = data if isinstance(data, memoryview) else memoryview(data)
            fed = data[: self._window]
            self._window = min(self._window * 2, MEMBER_WINDOW[1])
        try:
            out = decoder.decompress(fed, DECODED_PIECE)
        except zlib.error as exc:
            after = ", after the end of its first member" if self._members > 1 else ""
            raise self._undecodable(f"{exc}{after}") from None
        # What it did not take: after the member's end, or beyond the output's bound.
        left = decoder.unused_data if decoder.eof else decoder.unconsumed_tail
        if fed is data:
            self._tail = left
        else:
            self._tail = data[len(fed) - len(left) :]
        return out

    def _begin(self, data: bytes | memoryview) -> zlib._Decompress:
        """A decoder for the body's first coded bytes, or for bytes after a gzip member's end
        (the next member's); raises for bytes after a deflate stream's end."""
        if self._decoder is None:
            # RFC 9110 §8.4.1.2 "deflate" is the zlib format, but servers also send raw deflate
            # (aiohttp's decoder accepts both): a zlib stream starts with method 8 in its
            # first byte's low bits.
            if self._coding == "deflate":
                wbits = zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS
            else:
                wbits = 16 + zlib.MAX_WBITS
        elif self._coding == "deflate":
            raise self._undecodable(f"{len(data)} B after the end of the deflate stream")
        else:
            wbits = 16 + zlib.MAX_WBITS
            self._window = MEMBER_WINDOW[0]
        self._members += 1
        decoder = self._decoder = zlib.decompressobj(wbits)
        return decoder

    def _flush(self) -> bytes:
        decoder = self._decoder
        assert decoder is not None
        try:
            out = decoder.flush()
        except zlib.error as exc:
            raise self._undecodable(str(exc)) from None
        if not decoder.eof:
            # The coded stream stopped before its end marker (and gzip's checksum): a body cut
            # short is an error, never a short answer (fresh-eyes review of #18).
            raise self._undecodable("it ends before its end marker")
        self._decoder = None
        self._coding = ""
        return out

    def _undecodable(self, why: str) -> InvalidResponse:
        self._exc = InvalidResponse(f"a {self._coding} body that does not decode ({why})")
        self._chunks.clear()
        self._tail = b""
        return self._exc
