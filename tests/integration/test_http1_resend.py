"""The round trip that bounds a POST's resend is the kernel's, not a timing of the connect
(http1.client.resend_reason; fresh-eyes review of #18, second round: a connect timed at 201 ms
by a busy event loop made a 206 ms window, and a backend that read a POST and worked 150 ms ran
it twice with MAX_RETRIES=0)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from structlog.testing import capture_logs

from ollama_openai_bridge.errors import UpstreamUnavailable
from ollama_openai_bridge.http1.connection import kernel_round_trip
from tests.scripted import Peer, ok, run, serve, upstream

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_INFO"), reason="the kernel's round trip is read on Linux only"
)


def test_the_round_trip_is_the_kernels_on_loopback() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as sock:
        rtt = kernel_round_trip(sock)
    assert 0.0 < rtt < 0.05  # loopback: microseconds, never the 1 s of a lost SYN


def test_a_socket_without_tcp_info_has_no_round_trip() -> None:
    one, two = socket.socketpair()  # AF_UNIX: getsockopt(TCP_INFO) fails
    with one, two:
        assert kernel_round_trip(one) == 0.0


def test_a_busy_loop_at_connect_does_not_widen_the_window() -> None:
    ran: list[float] = []

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            if len(peer.seen.requests) == 1:  # the first request of all, on any connection
                await peer.send(ok())
                continue
            ran.append(time.monotonic())
            await asyncio.sleep(0.15)  # the backend read the POST and works on it
            return  # then dies without a byte of answer

    async def scenario() -> None:
        async with serve(handler) as (url, _):
            up = upstream(url, "http1", max_retries=0)
            await up.start()
            try:
                # The loop is busy (other streams, a large body) while the connection opens.
                async def busy() -> None:
                    while True:
                        time.sleep(0.2)  # noqa: ASYNC251 -- blocking on purpose: a busy loop
                        await asyncio.sleep(0)

                hog = asyncio.create_task(busy())
                await asyncio.sleep(0)
                resp = await up.send("POST", "/chat/completions", b'{"model":"m"}')
                await resp.read()
                resp.release()
                hog.cancel()
                with capture_logs() as logs, pytest.raises(UpstreamUnavailable):
                    await up.send("POST", "/chat/completions", b'{"model":"m","messages":[]}')
            finally:
                await up.close()
            kept = [e for e in logs if e["event"] == "upstream_request_not_resent"]
            assert len(kept) == 1
            assert "the server may have read and acted on the POST" in kept[0]["reason"]

    run(scenario())
    assert len(ran) == 1  # the backend ran the POST once
