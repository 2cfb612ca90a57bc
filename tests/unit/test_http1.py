"""http1 without sockets: the request bytes written, responses fed to a connection in any
cut, bounded decoding, which URLs it takes, the setting that chooses it, and how its failures
map. Over real loopback servers: tests/integration/test_http1_*.py."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import sys
import time
from collections.abc import Coroutine
from typing import Any

import pytest
from pydantic import ValidationError

from ollama_openai_bridge import http1
from ollama_openai_bridge.config import ConfigError, Settings, load_settings
from ollama_openai_bridge.errors import (
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ollama_openai_bridge.http1.client import default_context
from ollama_openai_bridge.http1.connection import HIGH_WATER, Connection
from ollama_openai_bridge.http1.response import DECODED_PIECE, PIECE_OVERHEAD, Origin
from ollama_openai_bridge.topology import UpstreamSpec
from ollama_openai_bridge.upstream import Upstream, client_for, map_failure

BODY = b'{"id": "chatcmpl-1", "choices": []}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"X-Request-Id: abc\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


class Transport:
    """What a Connection asks of its transport; it keeps what was written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, data: Any) -> None:
        self.written.extend(data)

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True

    close = abort

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str) -> Any:
        return None


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def client(**overrides: Any) -> http1.Client:
    options: dict[str, Any] = {
        "headers": {"User-Agent": "test", "Authorization": "Bearer k"},
        "limit": 4,
        "connect_timeout": 1.0,
        "read_timeout": 5.0,
    }
    options.update(overrides)
    return http1.Client(**options)


async def connected(c: http1.Client, origin: Origin) -> tuple[Connection, Transport]:
    """A connection of ``c`` on a fake transport, idle in its pool."""
    conn = Connection(c, origin)
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    c._open += 1
    c.release(conn)
    return conn, transport


ORIGIN = Origin("http", "backend.test", 8000)
URL = "http://backend.test:8000/v1/chat/completions"


def test_the_request_is_written_as_one_head_then_the_body() -> None:
    async def scenario() -> list[bytes]:
        c = client()
        conn, transport = await connected(c, ORIGIN)
        task = asyncio.ensure_future(c.request("POST", URL, data=b"{}"))
        await asyncio.sleep(0)
        conn.data_received(ANSWER)
        resp = await task
        assert await resp.read() == BODY
        await c.close()
        return transport.written

    assert run(scenario()) == [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: backend.test:8000\r\n"
        b"Accept-Encoding: gzip, deflate\r\nUser-Agent: test\r\nAuthorization: Bearer k\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    ]


@pytest.mark.parametrize(
    ("url", "target", "host"),
    [
        ("http://backend.test/v1/models", b"GET /v1/models", b"backend.test"),
        (
            "https://backend.test:443/v1/models?api-version=1",
            b"GET /v1/models?api-version=1",
            b"backend.test",
        ),
        ("http://[::1]:8080/models", b"GET /models", b"[::1]:8080"),
    ],
)
def test_target_and_host_of_a_get(url: str, target: bytes, host: bytes) -> None:
    async def scenario() -> bytes:
        c = client()
        origin, rest = c._target(url)
        await c.close()
        assert origin.host in url
        return b"GET " + rest

    head = run(scenario())
    assert head.startswith(target + b" HTTP/1.1\r\nHost: " + host + b"\r\n")


def test_an_answer_fed_one_byte_at_a_time_reads_as_one_fed_whole() -> None:
    async def scenario(step: int) -> tuple[int, str, int | None, str, bytes]:
        c = client()
        conn, _ = await connected(c, ORIGIN)
        task = asyncio.ensure_future(c.request("GET", URL))
        await asyncio.sleep(0)
        for i in range(0, len(ANSWER), step):
            conn.data_received(ANSWER[i : i + step])
        resp = await task
        out = (
            resp.status,
            resp.content_type,
            resp.content_length,
            resp.headers["x-request-id"],
            await resp.read(),
        )
        assert c._idle[ORIGIN] == [conn]  # whole: back in the pool
        await c.close()
        return out

    whole = run(scenario(len(ANSWER)))
    assert whole == (200, "application/json", len(BODY), "abc", BODY)
    assert run(scenario(1)) == whole


def test_a_head_that_drips_past_the_limit_is_refused_as_it_comes() -> None:
    async def scenario() -> None:
        c = client(max_head=1024)
        conn, transport = await connected(c, ORIGIN)
        task = asyncio.ensure_future(c.request("GET", URL))
        await asyncio.sleep(0)
        conn.data_received(b"HTTP/1.1 200 OK\r\nX-Long: ")
        for _ in range(100):
            if transport.closed:
                break
            conn.data_received(b"a" * 64)
        with pytest.raises(http1.InvalidResponse, match="larger than 1024"):
            await task
        assert transport.closed
        assert not c._idle.get(ORIGIN)
        await c.close()

    run(scenario())


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def ok_with(body: bytes, *fields: bytes) -> bytes:
    extra = b"".join(field + b"\r\n" for field in fields)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


PADDED = ok_with(b"y\r\n\r\n" * 20000, b"X-Pad: " + b"p" * 900)  # a head of ~950 B
CUT = PADDED.index(b"\r\n\r\n") + 3  # the head's blank line cut: "\r\n\r" | "\n"
HEADS_WITH_A_BODY = {
    # name: (the reads, whether the heads are within max_head=1024)
    "a-long-reason-phrase": (
        [b"HTTP/1.1 200 " + b"O" * 2000 + b"\r\nContent-Length: 4\r\n\r\nabcd"],
        False,
    ),
    "a-flood-of-100-continue": ([b"HTTP/1.1 100 Continue\r\n\r\n" * 60 + ok_with(b"abcd")], False),
    "a-small-head-and-a-large-body": ([ok_with(b"x\r\n\r\n" * 20000)], True),
    "a-head-whose-end-straddles-two-reads": ([PADDED[:CUT], PADDED[CUT:]], True),
    "a-head-whose-end-straddles-reads-of-a-byte": (
        [PADDED[: CUT - 2], PADDED[CUT - 2 : CUT - 1], PADDED[CUT - 1 : CUT], PADDED[CUT:]],
        True,
    ),
    "an-interim-head-then-the-final-head-and-the-body-in-the-next-read": (
        [b"HTTP/1.1 100 Continue\r\n\r\n", PADDED],
        True,
    ),
}


@pytest.mark.parametrize("case", HEADS_WITH_A_BODY)
def test_heads_that_end_in_a_read_with_the_body_are_counted_whole(case: str) -> None:
    """Status lines count toward max_head too, when the head ends in one read with the body's
    first bytes (on_header counts fields alone): a 70 KB reason phrase was taken (fresh-eyes
    review of #18). A large body after a small head is no large head, wherever the reads cut."""
    reads, within = HEADS_WITH_A_BODY[case]

    async def scenario() -> None:
        c = client(max_head=1024)
        conn, _ = await connected(c, ORIGIN)
        task = asyncio.ensure_future(c.request("GET", URL))
        await asyncio.sleep(0)
        for data in reads:
            conn.data_received(data)
        if within:
            resp = await task
            assert resp.status == 200
            assert len(await resp.read()) == resp.content_length
        else:
            with pytest.raises(http1.InvalidResponse, match="head larger than 1024 B"):
                await task
        await c.close()

    run(scenario())


def test_chunk_sizes_in_reads_of_their_own_are_not_a_trailer() -> None:
    # A server that writes each chunk-size line apart from its data: reads without body bytes,
    # 4 KiB of them in all, far over the limit, but never more than a few in a row.
    async def scenario() -> None:
        c = client(max_head=1024)
        conn, transport = await connected(c, ORIGIN)
        task = asyncio.ensure_future(c.request("GET", URL))
        await asyncio.sleep(0)
        conn.data_received(CHUNKED_HEAD)
        resp = await task
        for _ in range(1024):
            conn.data_received(b"2\r\n")
            conn.data_received(b"ab\r\n")
        conn.data_received(b"0\r\nX-Checksum: 1\r\n\r\n")
        assert await resp.read() == b"ab" * 1024
        assert not transport.closed
        assert c._idle[ORIGIN] == [conn]
        await c.close()

    run(scenario())


@pytest.mark.parametrize("step", [64, 4096], ids=["dripped", "fields-whole"])
def test_a_trailer_past_the_limit_is_refused_as_it_comes(step: int) -> None:
    trailer = b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 40) for i in range(200))

    async def scenario() -> None:
        c = client(max_head=1024)
        conn, transport = await connected(c, ORIGIN)
        task = asyncio.ensure_future(c.request("GET", URL))
        await asyncio.sleep(0)
        conn.data_received(CHUNKED_HEAD + b"2\r\nab\r\n0\r\n")
        resp = await task
        fed = 0
        while not transport.closed and fed < len(trailer):
            conn.data_received(trailer[fed : fed + step])
            fed += step
        with pytest.raises(http1.InvalidResponse, match="trailer section larger than 1024 B"):
            await resp.read()
        assert transport.closed
        assert fed <= 1024 + step
        assert not c._idle.get(ORIGIN)
        await c.close()

    run(scenario())


def test_reading_pauses_above_the_high_water_mark_and_resumes_when_read() -> None:
    async def scenario() -> None:
        c = client()
        conn, transport = await connected(c, ORIGIN)
        task = asyncio.ensure_future(c.request("GET", URL))
        await asyncio.sleep(0)
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
        resp = await task
        piece = b"x" * 65536
        reads = 0
        while transport.is_reading():
            conn.data_received(piece)
            reads += 1
        assert resp._size > HIGH_WATER
        # each piece counts its content and PIECE_OVERHEAD: over the mark at the 4th
        assert reads == HIGH_WATER // (len(piece) + PIECE_OVERHEAD) + 1 == 4
        assert len(await resp.content.readany()) == reads * len(piece)
        assert transport.is_reading()
        resp.close()
        assert transport.closed  # not read to its end: never reused
        await c.close()

    run(scenario())


@pytest.mark.parametrize("per_read", [1, 8192], ids=["a-chunk-a-read", "8192-chunks-a-read"])
def test_a_paused_stream_of_tiny_chunks_holds_about_the_mark_in_memory(per_read: int) -> None:
    """2-byte chunks, the consumer reading nothing: reading pauses before the pieces' heap
    passes HIGH_WATER, and the read that paused it, 8,192 more pieces, is joined as it comes.
    It paused at 256 KiB of content, held as 131,072 bytes objects, about 5.8 MB (fresh-eyes
    review of #18, p6_tiny_chunks.py)."""

    async def scenario() -> None:
        c = client()
        conn, transport = await connected(c, ORIGIN)
        task = asyncio.ensure_future(c.request("GET", URL))
        await asyncio.sleep(0)
        conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        resp = await task
        read = b"2\r\nab\r\n" * per_read
        reads = 0
        while transport.is_reading():
            conn.data_received(read)
            reads += 1
        chunks = resp._chunks
        held = sum(map(sys.getsizeof, chunks)) + sys.getsizeof(chunks)
        assert held < HIGH_WATER
        assert reads * per_read <= HIGH_WATER // (2 + PIECE_OVERHEAD) + per_read
        assert await resp.content.readany() == b"ab" * per_read * reads
        assert transport.is_reading()
        resp.close()
        await c.close()

    run(scenario())


@pytest.mark.parametrize("coding", ["gzip", "x-gzip"])
def test_a_coded_body_is_decoded_in_bounded_pieces(coding: str) -> None:
    plain = bytes(range(256)) * (4 * DECODED_PIECE // 256 + 7)
    coded = gzip.compress(plain)

    async def scenario() -> list[bytes]:
        c = client()
        conn, _ = await connected(c, ORIGIN)
        task = asyncio.ensure_future(c.request("GET", URL))
        await asyncio.sleep(0)
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
        conn.data_received(head % (coding.encode(), len(coded)) + coded)
        resp = await task
        pieces = []
        while piece := await resp.content.readany():
            pieces.append(piece)
        await c.close()
        return pieces

    pieces = run(scenario())
    assert b"".join(pieces) == plain
    assert max(map(len, pieces)) <= DECODED_PIECE
    assert len(pieces) >= 4


async def decoded(coded: bytes, step: int) -> list[bytes]:
    """A gzip answer of ``coded`` fed to a connection ``step`` bytes a read, read as it
    comes: the decoded pieces."""
    c = client()
    conn, _ = await connected(c, ORIGIN)
    task = asyncio.ensure_future(c.request("GET", URL))
    await asyncio.sleep(0)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n")
    conn.data_received(b"Content-Length: %d\r\n\r\n" % len(coded))
    resp = await task

    async def read() -> list[bytes]:
        pieces = []
        while piece := await resp.content.readany():
            pieces.append(piece)
        return [*pieces, piece]

    reader = asyncio.ensure_future(read())
    for i in range(0, len(coded), step):
        conn.data_received(coded[i : i + step])
        await asyncio.sleep(0)  # the reader takes what came
    pieces = await reader
    await c.close()
    return pieces


@pytest.mark.parametrize("step", [1, 5000, 1 << 30], ids=["a-byte-a-read", "5000", "whole"])
def test_every_gzip_member_is_decoded_in_bounded_pieces(step: int) -> None:
    """RFC 1952 section 2.2: several members, here of 2.5 DECODED_PIECE each, cut anywhere
    by the reads: all decoded, no read returning more than DECODED_PIECE."""
    plain = [bytes([n]) * (DECODED_PIECE * 5 // 2) for n in range(3)]
    pieces = run(decoded(b"".join(gzip.compress(p) for p in plain), step))
    assert b"".join(pieces) == b"".join(plain)
    assert max(map(len, pieces)) <= DECODED_PIECE
    assert pieces[-1] == b""


def test_many_small_gzip_members_decode_in_linear_time() -> None:
    """zlib copies what follows a member's end: handing each new member all the rest took
    time quadratic in their number (50,000 empty members, 1 MB: ~25 GB copied); fed in
    growing windows (MEMBER_WINDOW), about 0.15 s."""
    coded = gzip.compress(b"", mtime=0) * 50_000 + gzip.compress(b"end")
    started = time.process_time()
    assert b"".join(run(decoded(coded, 1 << 30))) == b"end"
    assert time.process_time() - started < 3.0


def test_junk_after_a_gzip_stream_fails_the_read_after_the_content() -> None:
    """A stream read as it comes has relayed what came before the junk; the read that meets it
    fails (the stream's error line), it is never dropped as the end."""

    async def scenario() -> None:
        c = client()
        conn, _ = await connected(c, ORIGIN)
        task = asyncio.ensure_future(c.request("GET", URL))
        await asyncio.sleep(0)
        conn.data_received(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        resp = await task
        member = gzip.compress(BODY)
        conn.data_received(b"%x\r\n%s\r\n" % (len(member), member))
        assert await resp.content.readany() == BODY
        conn.data_received(b"4\r\nJUNK\r\n0\r\n\r\n")
        with pytest.raises(http1.InvalidResponse) as caught:
            await resp.content.readany()
        assert str(caught.value) == (
            "a gzip body that does not decode (Error -3 while decompressing data: incorrect "
            "header check, after the end of its first member)"
        )
        await c.close()

    run(scenario())


def test_a_coding_it_does_not_know_passes_through() -> None:
    async def scenario() -> bytes:
        c = client()
        conn, _ = await connected(c, ORIGIN)
        task = asyncio.ensure_future(c.request("GET", URL))
        await asyncio.sleep(0)
        conn.data_received(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc"
        )
        resp = await task
        data = await resp.read()
        await c.close()
        return data

    assert run(scenario()) == b"abc"  # as aiohttp without brotli: not decoded


def test_header_values_are_checked_once_at_start() -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError, match="printable ASCII"):
            client(headers={"Authorization": "Bearer k\r\nX-Injected: 1"})

    run(scenario())


def test_verification_off_checks_neither_the_ca_nor_the_name() -> None:
    off, on = default_context(False), default_context(True)
    assert (off.verify_mode, off.check_hostname) == (ssl.CERT_NONE, False)
    assert (on.verify_mode, on.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert default_context(True) is on  # made once per process


# --- which URLs, which client -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:8000/v1", None),
        ("https://api.openai.com/v1", None),
        ("https://x.openai.azure.com/openai/deployments/d?api-version=2024-10-21", None),
        ("http://[::1]:8000/v1", None),
        ("https://user:secret@proxy.example/v1", "credentials in the URL (user:password@)"),
        ("https://bücher.example/v1", "a host name that is not ASCII (IDNA)"),
        ("ftp://files.example/v1", "the scheme 'ftp' (http and https only)"),
    ],
)
def test_the_urls_http1_takes(url: str, reason: str | None) -> None:
    assert http1.unsupported(url) == reason
    chosen = client_for("auto", url)[0]
    assert chosen == ("http1" if reason is None else "aiohttp")
    assert client_for("aiohttp", url)[0] == "aiohttp"


def test_the_setting_is_validated() -> None:
    values: dict[str, Any] = {"_env_file": None, "upstream_http_client": " HTTP1 "}
    assert Settings(**values).upstream_http_client == "http1"
    with pytest.raises(ValidationError):
        Settings(**{**values, "upstream_http_client": "httpx"})


def test_http1_required_for_a_url_it_cannot_call_stops_the_start() -> None:
    with pytest.raises(ConfigError, match="UPSTREAM_HTTP_CLIENT=http1 cannot call upstream"):
        load_settings(
            _env_file=None,
            upstream_http_client="http1",
            openai_api_base_url="https://user:pw@gateway.example/v1",
        )
    auto = load_settings(_env_file=None, openai_api_base_url="https://user:pw@gateway.example/v1")
    up = Upstream(auto, UpstreamSpec("default", "https://user:pw@gateway.example/v1"))
    assert up.client == "aiohttp"


# --- failures, mapped -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "reading", "kind", "message"),
    [
        (
            http1.ConnectFailed("h", ConnectionRefusedError(111, "Connection refused")),
            False,
            UpstreamUnavailable,
            "cannot connect to upstream h:1: Connection refused",
        ),
        (
            http1.Disconnected("x", answered=False),
            False,
            UpstreamUnavailable,
            "upstream h:1 closed the connection",
        ),
        (
            http1.Disconnected("x", answered=True),
            True,
            UpstreamUnavailable,
            "upstream stream interrupted: connection closed early",
        ),
        (
            ConnectionResetError(104, "reset"),
            True,
            UpstreamUnavailable,
            "upstream stream interrupted: connection reset",
        ),
        (http1.ConnectTimeout("x"), False, UpstreamTimeout, "upstream h:1 timed out"),
        (
            http1.ReadTimeout("x"),
            True,
            UpstreamTimeout,
            "upstream stream stalled: no data within the timeout",
        ),
        (
            http1.InvalidResponse("an invalid HTTP/1.1 response (Invalid constant string)"),
            False,
            UpstreamProtocolError,
            "upstream sent an invalid HTTP/1.1 response (Invalid constant string)",
        ),
    ],
)
def test_failures_are_mapped(exc: BaseException, reading: bool, kind: type, message: str) -> None:
    mapped = map_failure(exc, "h:1", reading=reading)
    assert type(mapped) is kind
    assert mapped.message == message
