"""Conformance of the backend clients, continued (tests/scripted.py's servers): TLS with
certificate verification and SNI (a CA made here with trustme), the connect, first-byte, idle and
total timeouts, backpressure on a slow consumer, and cancellation -- through :class:`Upstream`
with both clients where they must agree, else through :class:`http1.Client`."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from ollama_openai_bridge import http1
from ollama_openai_bridge.errors import UpstreamTimeout, UpstreamUnavailable
from ollama_openai_bridge.exchange import EventStream
from ollama_openai_bridge.http1.connection import HIGH_WATER
from ollama_openai_bridge.upstream import map_failure
from tests.scripted import (
    CLIENTS,
    JSON_BODY,
    Peer,
    answers,
    get,
    new_client,
    ok,
    run,
    serve,
    upstream,
)

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def event(data: bytes) -> bytes:
    frame = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(frame), frame)


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- TLS (RFC 9112 section 9.7; SNI, RFC 6066 section 3) ---------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, host: str, names: list[str]) -> ssl.SSLContext:
    """A server context with a certificate for ``host`` that notes the SNI names it is sent."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(ctx)

    def note(sock: Any, name: str | None, _: Any) -> None:
        names.append(str(name))

    ctx.sni_callback = note
    return ctx


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def test_tls_verified_with_the_host_name_sent_as_sni(ca: trustme.CA) -> None:
    names: list[str] = []

    async def scenario() -> None:
        tls = server_tls(ca, "localhost", names)
        async with serve(answers(ok(), ok()), tls=tls) as (url, seen):
            c = new_client(ssl_context=trusting(ca))
            try:
                assert await get(c, url) == JSON_BODY
                assert await get(c, url) == JSON_BODY
            finally:
                await c.close()
            assert seen.connections == 1  # kept alive over TLS too

    run(scenario())
    assert names == ["localhost"]


def test_tls_refuses_a_certificate_for_another_host(ca: trustme.CA) -> None:
    async def scenario() -> None:
        tls = server_tls(ca, "other.example", [])
        async with serve(answers(ok()), tls=tls) as (url, _):
            c = new_client(ssl_context=trusting(ca))
            try:
                with pytest.raises(http1.ConnectFailed) as caught:
                    await get(c, url)
            finally:
                await c.close()
            assert isinstance(caught.value.os_error, ssl.SSLCertVerificationError)
            mapped = map_failure(caught.value, "localhost")
            assert isinstance(mapped, UpstreamUnavailable)
            assert mapped.message.startswith("cannot connect to upstream localhost: ")
            assert "certificate" in mapped.message

    run(scenario())


def test_tls_refuses_an_unknown_ca_unless_verification_is_off(ca: trustme.CA) -> None:
    async def scenario() -> None:
        async with serve(answers(ok()), tls=server_tls(ca, "localhost", [])) as (url, _):
            c = new_client()  # the system's CAs, which do not include the test's
            try:
                with pytest.raises(http1.ConnectFailed):
                    await get(c, url)
            finally:
                await c.close()
            c = new_client(verify=False)  # DISABLE_SSL_VERIFICATION
            try:
                assert await get(c, url) == JSON_BODY
            finally:
                await c.close()

    run(scenario())


def test_tls_through_the_upstream_with_ssl_cert_file(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenSSL's SSL_CERT_FILE, as docs/DEPLOYMENT.md tells operators of private CAs (http1 makes
    # its context at start; aiohttp made its own when it was imported)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))

    async def scenario() -> None:
        async with serve(answers(ok()), tls=server_tls(ca, "localhost", [])) as (url, _):
            up = upstream(url, "http1")
            await up.start()
            try:
                resp = await up.send("POST", "/chat/completions", b"{}", total=5.0)
                assert await up.read(resp) == JSON_BODY
            finally:
                await up.close()

    run(scenario())


# --- timeouts (RFC 9112 section 9.5) ----------------------------------------------------------


def test_the_connect_timeout_covers_the_tls_handshake(client: str) -> None:
    async def handler(peer: Peer) -> None:
        await peer.reader.read()  # accepts the TCP connection, never answers the handshake

    async def scenario() -> None:
        async with serve(handler) as (url, _):
            up = upstream(url.replace("http://127.0.0.1", "https://localhost"), client)
            up._settings = up._settings.model_copy(update={"connect_timeout": 0.3})
            await up.start()
            started = time.monotonic()
            try:
                with pytest.raises(UpstreamTimeout) as caught:
                    await up.send("POST", "/chat/completions", b"{}")
            finally:
                await up.close()
            assert 0.25 < time.monotonic() - started < 3
            assert caught.value.message.endswith("timed out")

    run(scenario())


def test_no_first_byte_within_the_read_timeout(client: str) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.reader.read()  # never answers

    async def scenario() -> None:
        async with serve(handler) as (url, _):
            up = upstream(url, client, stream_idle_timeout=0.3)
            await up.start()
            started = time.monotonic()
            try:
                with pytest.raises(UpstreamTimeout):
                    await up.send("POST", "/chat/completions", b"{}")
            finally:
                await up.close()
            assert 0.25 < time.monotonic() - started < 3

    run(scenario())


def test_a_stream_silent_for_the_read_timeout_stalls(client: str) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(SSE_HEAD + event(b"1"))
        await peer.reader.read()  # then nothing

    async def scenario() -> None:
        async with serve(handler) as (url, _):
            up = upstream(url, client, stream_idle_timeout=0.3)
            await up.start()
            try:
                resp = await up.send("POST", "/chat/completions", b"{}", settle=False)
                stream = EventStream(resp, up, parse=False, deadline=0.0)
                assert await stream.__anext__() == b"data: 1\n\n"
                with pytest.raises(UpstreamTimeout) as caught:
                    await stream.__anext__()
                assert caught.value.message.startswith("upstream stream stalled")
                await stream.aclose()
            finally:
                await up.close()

    run(scenario())


def test_the_total_timeout_covers_a_body_that_trickles(client: str) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            await peer.send(b"x")  # never silent for long: only the total time ends it
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        async with serve(handler) as (url, _):
            up = upstream(url, client, stream_idle_timeout=5.0)
            await up.start()
            started = time.monotonic()
            try:
                resp = await up.send("POST", "/chat/completions", b"{}", total=0.5)
                with pytest.raises(UpstreamTimeout):
                    await up.read(resp)
            finally:
                await up.close()
            assert 0.45 < time.monotonic() - started < 3

    run(scenario())


# --- backpressure and cancellation ------------------------------------------------------------

TOTAL = 16 * 1024 * 1024


def test_a_slow_consumer_slows_the_server_and_loses_nothing(client: str) -> None:
    piece = bytes(range(256)) * 256  # 64 KiB

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TOTAL)
        for _ in range(TOTAL // len(piece)):
            await peer.send(piece)  # drain() waits while the client does not read
            peer.seen.written += len(piece)

    async def scenario() -> None:
        async with serve(handler) as (url, seen):
            # a pause longer than the read timeout: waiting for our consumer is not a stall
            up = upstream(url, client, stream_idle_timeout=0.2)
            await up.start()
            try:
                resp = await up.send("POST", "/chat/completions", b"{}", settle=False)
                await asyncio.sleep(0.6)
                assert seen.written < TOTAL // 2  # the server is held back
                if client == "http1":
                    assert isinstance(resp, http1.Response)
                    assert resp._size <= HIGH_WATER + 256 * 1024  # one read beyond the mark
                digest = hashlib.sha256()
                while chunk := await resp.content.readany():
                    digest.update(chunk)
                resp.release()
            finally:
                await up.close()
            assert digest.digest() == hashlib.sha256(piece * (TOTAL // len(piece))).digest()

    run(scenario())


def test_closing_a_stream_closes_its_connection_at_once(client: str) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(SSE_HEAD)
        for i in range(1000):
            await peer.send(event(b"%d" % i))
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        async with serve(handler) as (url, seen):
            up = upstream(url, client)
            await up.start()
            try:
                resp = await up.send("POST", "/chat/completions", b"{}", settle=False)
                stream = EventStream(resp, up, parse=False, deadline=0.0)
                await stream.prefetch()
                started = time.monotonic()
                await stream.aclose()  # a client went away: the backend must see it
                await asyncio.wait_for(seen.event("closed").wait(), 2.0)
                assert time.monotonic() - started < 1.0
            finally:
                await up.close()

    run(scenario())


def test_a_cancelled_request_closes_its_connection(client: str) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        peer.seen.event("asked").set()
        await peer.reader.read()  # no answer; returns when the client closes

    async def scenario() -> None:
        async with serve(handler) as (url, seen):
            up = upstream(url, client)
            await up.start()
            try:
                task = asyncio.ensure_future(up.send("POST", "/chat/completions", b"{}"))
                await seen.event("asked").wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await asyncio.wait_for(seen.event("closed").wait(), 2.0)
            finally:
                await up.close()

    run(scenario())


def test_a_wake_up_for_a_free_place_is_passed_on_when_its_waiter_leaves() -> None:
    """The pool at its limit: A holds the one connection, B and C wait for a place. A's is
    freed, which wakes B, and B's caller leaves in that same instant: the wake-up goes on to C
    at once. It was lost, and C waited until its own timeout although a place was free
    (fresh-eyes review of #18, p2_lost_wakeup.py)."""

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            if b"/slow" in request[0]:
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                await asyncio.sleep(30)
                return
            await peer.send(ok())

    async def scenario() -> None:
        async with serve(handler) as (url, _):
            c = new_client(limit=1)
            try:
                a = await c.request("GET", url + "/slow")  # holds the only place
                b = asyncio.ensure_future(c.request("GET", url + "/models"))
                waiting = asyncio.ensure_future(c.request("GET", url + "/models", timeout=5.0))
                await asyncio.sleep(0.05)  # both wait for a place
                started = time.monotonic()
                a.release()  # its body unread: closed, the place freed, B woken ...
                b.cancel()  # ... and B's caller leaves in the same instant
                resp = await waiting
                assert (resp.status, await resp.read()) == (200, JSON_BODY)
                assert time.monotonic() - started < 1.0
                with pytest.raises(asyncio.CancelledError):
                    await b
            finally:
                await c.close()

    run(scenario())


def test_the_client_runs_on_asyncio_without_uvloop() -> None:
    async def scenario() -> None:
        async with serve(answers(ok(), ok())) as (url, seen):
            c = new_client()
            try:
                assert [await get(c, url), await get(c, url)] == [JSON_BODY, JSON_BODY]
            finally:
                await c.close()
            assert seen.connections == 1

    asyncio.run(scenario())
