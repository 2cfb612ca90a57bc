"""Conformance of the backend clients to answers framed in hostile ways (fresh-eyes review of
#18): a chunked body's trailer section of any size, transfer codings other than a lone chunked,
and bytes after the end of an answer -- in the same read, or later, on an idle connection.
Through :class:`Upstream` with both clients over scripted loopback servers (tests/scripted.py);
where they differ, each one's outcome is stated. The other framings: test_http1_conformance.py."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from ollama_openai_bridge import http1
from ollama_openai_bridge.errors import UpstreamError, UpstreamProtocolError
from ollama_openai_bridge.upstream import Upstream
from tests.scripted import CLIENTS, JSON_BODY, Peer, gzipped, ok, run, serve, upstream

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
