"""Conformance of the backend clients to answers framed in hostile ways (fresh-eyes review of
#18): a chunked body's trailer section of any size, transfer codings other than a lone chunked,
and bytes after the end of an answer -- in the same read, or later, on an idle connection.
Through :class:`Upstream` with both clients over scripted loopback servers (tests/scripted.py);
where they differ, each one's outcome is stated. The other framings: test_http1_conformance.py."""

from __future__ import annotations

import asyncio
import zlib

import pytest
from structlog.testing import capture_logs

from ollama_openai_bridge import http1
from ollama_openai_bridge.errors import UpstreamError, UpstreamProtocolError
from ollama_openai_bridge.upstream import Upstream
from tests.scripted import CLIENTS, JSON_BODY, Peer, answers, gzipped, ok, run, serve, upstream

LIMIT = http1.client.MAX_HEAD
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def call(up: Upstream, total: float = 5.0) -> tuple[int, bytes]:
    """One whole call: (status, body); the upstream's failures raised as mapped."""
    resp = await up.send("POST", "/chat/completions", b"{}", total=total)
    return resp.status, await up.read(resp)


def framed(body: bytes) -> bytes:
    """``body`` as one chunk and the last chunk (RFC 9112 section 7.1), no trailer."""
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


# --- trailer sections (RFC 9112 section 7.1.2) -------------------------------------------------


@pytest.mark.parametrize("drip", [False, True], ids=["one-write", "dripped"])
def test_a_trailer_section_over_the_head_limit_is_refused_as_it_comes(
    client: str, drip: bool
) -> None:
    # Was: llhttp gathered it whole (httptools joining a field's pieces as they came), a 200 MB
    # one taking 410 MB and 56 s of CPU, then a 200. It is bounded as a head is.
    start = CHUNKED_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    start += b"%x\r\n%s\r\n0\r\nX-Trailer: " % (len(JSON_BODY), JSON_BODY)
    trailer = b"a" * (4 * LIMIT)

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(start)
        step = 1024 if drip else len(trailer)
        for i in range(0, len(trailer), step):
            await peer.send(trailer[i : i + step])
            peer.seen.written += step
            if drip:
                await asyncio.sleep(0.001)
        await peer.send(b"\r\n\r\n")

    async def scenario() -> None:
        async with serve(handler) as (url, seen):
            up = upstream(url, client)
            await up.start()
            try:
                with pytest.raises(UpstreamError) as caught:
                    await call(up, total=2.0)
                if client == "aiohttp":
                    # Over its max_field_size (8,190 B): a 502 that does not say why, or, when
                    # the trailer drips, the answer stalls until the request's timeout.
                    assert caught.value.status == (504 if drip else 502)
                    return
                assert isinstance(caught.value, UpstreamProtocolError)
                assert caught.value.message == (
                    f"upstream sent a response trailer section larger than {LIMIT} B"
                )
            finally:
                await up.close()
            await seen.event("closed").wait()
            if drip and client == "http1":
                assert seen.written < 2 * LIMIT  # refused as it came, not once it was all read

    run(scenario())


def test_a_trailer_section_within_the_limit_is_read_and_dropped(client: str) -> None:
    # Seven fields of 8,000 B: under aiohttp's 8,190 B a field and, in all, under http1's limit.
    fields = b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 8_000) for i in range(7))
    raw = CHUNKED_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + framed(JSON_BODY)
    raw = raw[:-2] + fields + b"\r\n"

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(raw)

    async def scenario() -> None:
        async with serve(handler) as (url, seen):
            up = upstream(url, client)
            await up.start()
            try:
                for _ in range(2):
                    assert await call(up) == (200, JSON_BODY)
            finally:
                await up.close()
            assert seen.connections == 1  # the answer ended with its trailer: kept alive

    run(scenario())


# --- transfer codings (RFC 9112 sections 6.1, 6.3) --------------------------------------------

CODINGS = {
    # name: (Transfer-Encoding field lines, body, the server closes after it)
    "identity": (b"Transfer-Encoding: identity", JSON_BODY, True),  # rule 4: until the close
    "identity-then-chunked": (b"Transfer-Encoding: identity, chunked", framed(JSON_BODY), False),
    "upper-case": (b"Transfer-Encoding: Chunked", framed(JSON_BODY), False),
    "two-fields": (
        b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
        framed(JSON_BODY),
        False,
    ),
}


@pytest.mark.parametrize("coding", CODINGS)
def test_transfer_codings_that_leave_the_content_as_it_is(client: str, coding: str) -> None:
    fields, body, close_after = CODINGS[coding]
    raw = CHUNKED_HEAD + fields + b"\r\n\r\n" + body

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(raw)
            if close_after:
                return

    async def scenario() -> None:
        async with serve(handler) as (url, seen):
            up = upstream(url, client)
            await up.start()
            try:
                with capture_logs() as logs:
                    for _ in range(2):
                        assert await call(up) == (200, JSON_BODY)
            finally:
                await up.close()
            assert seen.connections == (2 if close_after else 1)
            if client == "http1":  # identity tolerated, and said so
                tolerated = [e for e in logs if e["event"] == "upstream_transfer_coding_tolerated"]
                assert len(tolerated) == (0 if coding == "upper-case" else 2)

    run(scenario())


UNDECODED = {
    # name: (Transfer-Encoding field lines, body, what aiohttp passes on as the content)
    "gzip-then-chunked": (
        b"Transfer-Encoding: gzip, chunked",
        framed(gzipped(JSON_BODY)),
        gzipped(JSON_BODY),
    ),
    "gzip-in-a-second-field": (
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
        framed(gzipped(JSON_BODY)),
        gzipped(JSON_BODY),
    ),
    # RFC 9112 6.3 rule 4: chunked not last, the body runs to the close -- chunk framing and all
    "chunked-not-last": (
        b"Transfer-Encoding: chunked, identity",
        framed(JSON_BODY),
        framed(JSON_BODY),
    ),
    "chunked-twice": (
        b"Transfer-Encoding: chunked, chunked",
        framed(framed(JSON_BODY)),
        framed(JSON_BODY),
    ),
}
UNDECODED_MESSAGES = {
    "gzip-then-chunked": "a body in the transfer coding 'gzip', which is not decoded here "
    "(Transfer-Encoding: gzip, chunked)",
    "gzip-in-a-second-field": "a body in the transfer coding 'gzip', which is not decoded here "
    "(Transfer-Encoding: gzip, chunked)",
    "chunked-not-last": "a body with chunked not once and last "
    "(Transfer-Encoding: chunked, identity)",
    "chunked-twice": "a body with chunked not once and last (Transfer-Encoding: chunked, chunked)",
}


@pytest.mark.parametrize("coding", UNDECODED)
def test_a_transfer_coding_left_on_the_body_is_a_protocol_error(client: str, coding: str) -> None:
    # No TE is sent, so no coding but chunked was asked for (RFC 9110 section 10.1.4). Was
    # (http1): gzip passed on as the content; chunked not last, "connection closed early".
    fields, body, aiohttp_content = UNDECODED[coding]
    raw = CHUNKED_HEAD + fields + b"\r\n\r\n" + body

    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(raw)  # then closes: the end of a body read until the close

    async def scenario() -> None:
        async with serve(handler) as (url, _):
            up = upstream(url, client)
            await up.start()
            try:
                if client == "aiohttp":  # it passes the coded bytes on as the content
                    assert await call(up) == (200, aiohttp_content)
                    return
                with pytest.raises(UpstreamProtocolError) as caught:
                    await call(up)
                assert caught.value.message == "upstream sent " + UNDECODED_MESSAGES[coding]
            finally:
                await up.close()

    run(scenario())


# --- heads RFC 9112 lets a recipient refuse (issue #18's review, L3) ---------------------------

LAX_HEADS = {
    # name: (the answer, what http1's 502 says of it after "upstream sent an HTTP/1.1 response
    # with ", llhttp's own words)
    "bare-lf": (
        b"HTTP/1.1 200 OK\nContent-Length: 4\n\nabcd",
        "a line ended by a bare LF instead of CRLF (RFC 9112 §2.2)",
        "Missing expected CR after response line",
    ),
    "obs-fold": (
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n  b\r\nContent-Length: 4\r\n\r\nabcd",
        "a header field folded onto a continuation line (obs-fold, RFC 9112 §5.2)",
        "Unexpected whitespace after header value",
    ),
    "space-before-colon": (
        b"HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\nabcd",
        "whitespace between a header field name and its colon (RFC 9112 §5.1) or a head line "
        "ended by a bare LF (§2.2)",
        "Invalid header field char",
    ),
}


@pytest.mark.parametrize("head", LAX_HEADS)
def test_heads_aiohttp_accepts_are_refused_by_http1_naming_the_form(client: str, head: str) -> None:
    # RFC 9112 §2.2: a recipient MAY take a bare LF as a line end. §5.2: a gateway that gets
    # obs-fold in a response MAY answer 502, "preferably with a representation explaining" it.
    # §5.1: whitespace before the colon is outside the field-line grammar (a server must refuse
    # it in a request, a proxy strip it from a response it forwards; this head is not
    # forwarded). llhttp refuses all three, as uvicorn runs it; aiohttp takes them.
    raw, form, llhttp = LAX_HEADS[head]

    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(raw)

    async def scenario() -> None:
        async with serve(handler) as (url, _):
            up = upstream(url, client)
            await up.start()
            try:
                if client == "aiohttp":
                    assert await call(up) == (200, b"abcd")
                    return
                with pytest.raises(UpstreamProtocolError) as caught:
                    await call(up)
                assert caught.value.status == 502
                assert caught.value.message == (
                    f"upstream sent an HTTP/1.1 response with {form}, which the http1 client "
                    f"refuses (UPSTREAM_HTTP_CLIENT=aiohttp accepts it in a head; llhttp: "
                    f"{llhttp})"
                )
            finally:
                await up.close()

    run(scenario())


def test_other_invalid_heads_keep_llhttps_reason() -> None:
    error = http1.errors.parser_failure("Invalid header token")
    assert str(error) == "an invalid HTTP/1.1 response (Invalid header token)"


# --- bytes after an answer (RFC 9112 section 9.3) ---------------------------------------------

STRAY = ok(b'{"stray": true}')
NOT_MODIFIED = (
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"  # no body, whatever it says
)
AFTER = {
    # name: (the first answer, bytes the server sends after it, sent apart after a pause)
    "content-length-shorter-than-sent": (ok(), STRAY, False),
    "a-body-on-a-304": (NOT_MODIFIED, b"HELLO", False),
    "a-second-answer-later": (ok(), STRAY, True),
    "a-body-on-a-304-later": (NOT_MODIFIED, b"HELLO", True),
}


@pytest.mark.parametrize("after", AFTER)
def test_bytes_after_an_answer_keep_the_answer_but_not_the_connection(
    client: str, after: str
) -> None:
    first, extra, later = AFTER[after]

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            if peer.index > 0 or peer.served > 1:
                await peer.send(ok())
            elif later:
                await peer.send(first)
                await asyncio.sleep(0.05)  # the connection is idle in the pool by now
                await peer.send(extra)
                peer.seen.event("extra").set()
            else:
                await peer.send(first + extra)  # in one read with the answer

    async def scenario() -> None:
        async with serve(handler) as (url, seen):
            up = upstream(url, client)
            await up.start()
            try:
                if client == "aiohttp" and after == "a-body-on-a-304":
                    # aiohttp's parser fails the 304 itself on the bytes that follow it
                    with pytest.raises(UpstreamError) as caught:
                        await call(up)
                    assert caught.value.status == 502
                    assert await call(up) == (200, JSON_BODY)
                    assert seen.connections == 2
                    return
                status, body = await call(up)
                assert (status, body) == ((304, b"") if first == NOT_MODIFIED else (200, JSON_BODY))
                if later:
                    await seen.event("extra").wait()
                    await asyncio.sleep(0.05)  # ... and has been read
                second = await call(up)
            finally:
                await up.close()
            if client == "aiohttp" and after == "a-second-answer-later":
                # aiohttp feeds what comes on an idle connection to its parser: a whole answer
                # there is taken as the next request's.
                assert (second, seen.connections) == ((200, b'{"stray": true}'), 1)
                return
            assert (second, seen.connections) == ((200, JSON_BODY), 2)

    run(scenario())


# --- content codings: several gzip members, bytes after the end (RFC 9110 8.4) ----------------


def members(body: bytes, count: int) -> bytes:
    """``body`` cut in ``count`` pieces, each a gzip member of its own (RFC 1952 section 2.2:
    a gzip file is a series of members; ``gzip -c a b`` writes one)."""
    step = -(-len(body) // count)
    return b"".join(gzipped(body[i : i + step]) for i in range(0, len(body), step))


def raw_deflate(body: bytes) -> bytes:
    coder = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return coder.compress(body) + coder.flush()


@pytest.mark.parametrize("count", [2, 35], ids=["two-members", "a-member-per-byte"])
@pytest.mark.parametrize("delivery", ["whole", "chunks-of-7-bytes"])
def test_a_gzip_body_of_several_members_is_decoded_whole(
    client: str, count: int, delivery: str
) -> None:
    """Every member is decoded, whichever read a member's end or the next one's header lands
    in: http1 returned the first member's content alone, with a 200 (fresh-eyes review of
    #18, p3_redirect_gzip.py /two)."""
    coded = members(JSON_BODY, count)
    if delivery == "whole":
        raw = ok(coded, b"Content-Encoding: gzip")
    else:
        pieces = [coded[i : i + 7] for i in range(0, len(coded), 7)]
        raw = CHUNKED_HEAD + b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        raw += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"

    async def scenario() -> None:
        async with serve(answers(raw)) as (url, _):
            up = upstream(url, client)
            await up.start()
            try:
                assert await call(up) == (200, JSON_BODY)
            finally:
                await up.close()

    run(scenario())


TRAILING = {
    # name: (Content-Encoding, the coded body with bytes after its end)
    "gzip-then-junk": (b"gzip", gzipped(JSON_BODY) + b"GARBAGE-NOT-GZIP"),
    "gzip-then-zeros": (b"gzip", gzipped(JSON_BODY) + b"\0" * 8),
    "zlib-deflate-then-junk": (b"deflate", zlib.compress(JSON_BODY) + b"JUNK"),
    "raw-deflate-then-junk": (b"deflate", raw_deflate(JSON_BODY) + b"JUNK"),
}


@pytest.mark.parametrize("trailing", TRAILING)
def test_bytes_after_a_coded_body_are_an_error_not_dropped(client: str, trailing: str) -> None:
    """Junk after the end of a coded body is a 502, as a body that does not decode is: http1
    dropped it and answered with what came before (fresh-eyes review of #18, /junk); aiohttp
    fails these too."""
    coding, coded = TRAILING[trailing]

    async def scenario() -> None:
        async with serve(answers(ok(coded, b"Content-Encoding: " + coding))) as (url, _):
            up = upstream(url, client)
            await up.start()
            try:
                with pytest.raises(UpstreamError) as caught:
                    await call(up)
                assert caught.value.status == 502
                if client == "http1":
                    assert isinstance(caught.value, UpstreamProtocolError)
                    assert caught.value.message.startswith(
                        f"upstream sent a {coding.decode()} body that does not decode ("
                    )
            finally:
                await up.close()

    run(scenario())


def test_a_second_zlib_stream_after_a_deflate_body_is_refused_by_http1() -> None:
    """RFC 9110 section 8.4.1.2: "deflate" is one zlib stream; what follows its end is not
    content. aiohttp decodes a second stream too (compression_utils, concatenated members):
    UPSTREAM_HTTP_CLIENT's differences say so."""
    stream = zlib.compress(JSON_BODY)
    raw = ok(stream * 2, b"Content-Encoding: deflate")

    async def scenario() -> None:
        async with serve(answers(raw)) as (url, _):
            up = upstream(url, "http1")
            await up.start()
            try:
                with pytest.raises(UpstreamProtocolError) as caught:
                    await call(up)
                assert caught.value.message == (
                    "upstream sent a deflate body that does not decode "
                    f"({len(stream)} B after the end of the deflate stream)"
                )
            finally:
                await up.close()

    run(scenario())
