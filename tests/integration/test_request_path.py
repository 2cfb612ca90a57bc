"""The request path's defects of issue #13, one test each: handlers driven in-process (httpx
ASGITransport) against the strict fake backend or a small aiohttp backend of the test's own
where the fake cannot misbehave the way a test needs (a reset, a cut body)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from ollama_openai_bridge.app import ProxyApp, create_app
from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

pytestmark = pytest.mark.anyio

MSGS = [{"role": "user", "content": "hi"}]
CHAT = {"model": "gpt-4o-mini", "messages": MSGS}
KEY = "sk-test-upstream"  # the proxy's OPENAI_API_KEY in settings_for


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the app runs on asyncio (uvloop in production)


@asynccontextmanager
async def client_for(
    url: str, **overrides: Any
) -> AsyncIterator[tuple[ProxyApp, httpx.AsyncClient]]:
    app = create_app(settings_for(url, enable_metrics=True, **overrides))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://proxy", timeout=20
        ) as client,
    ):
        yield app, client


def lines(r: httpx.Response) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in r.text.splitlines()]


def metric(text: str, name: str) -> float:
    for row in text.splitlines():
        if row.startswith(name + " ") or row.startswith(name + "{"):
            return float(row.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


@asynccontextmanager
async def backend(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A one-route aiohttp backend (chat completions, plus an empty model list)."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", handler)
    # handler_cancellation: a handler sees the proxy close its connection (a CancelledError)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def reset(request: web.Request) -> None:
    """Close the connection with a TCP reset (linger 0)."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# 1 -------------------------------------------------------------------------------------------


async def test_non_streaming_v1_calls_give_their_slot_back(upstream: FakeUpstream) -> None:
    async with client_for(
        upstream.url, max_concurrent_requests=2, max_queued_requests=0, queue_timeout=1
    ) as (app, client):
        for _ in range(10):
            r = await client.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 200
            r = await client.post(
                "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "a"}
            )
            assert r.status_code == 200
        assert app.state.ctx.limiter.active == 0
        r = await client.post("/api/chat", json={**CHAT, "stream": False})
        assert r.status_code == 200
        text = (await client.get("/v1/metrics")).text
        assert metric(text, "ollama_proxy_upstream_requests_in_flight") == 0


# 2 and 8 -------------------------------------------------------------------------------------


async def test_mid_stream_error_is_redacted_logged_and_counted(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ollama_openai_bridge.access")
    async with client_for(upstream.url) as (_, client):
        upstream.script(
            Script(
                chunks=[
                    {"content": "partial"},
                    orjson.dumps(
                        {"error": {"message": f"invalid api key {KEY} for this project"}}
                    ).decode(),
                ]
            )
        )
        with capture_logs() as logs:
            r = await client.post("/api/chat", json=CHAT)
        out = lines(r)
        assert r.status_code == 200
        assert out[0]["message"]["content"] == "partial"
        assert out[-1] == {"error": "upstream error: invalid api key [redacted] for this project"}
        assert not any(x.get("done") for x in out)
        assert KEY not in r.text
        failed = [e for e in logs if e["event"] == "request_failed"]
        assert len(failed) == 1
        assert failed[0]["stage"] == "stream"
        assert failed[0]["status"] == 502
        assert KEY not in str(logs)
        access = [e for e in logs if e["event"] == "request"]
        assert access[0]["status"] == 200  # what went on the wire
        assert access[0]["error"] == "upstream error: invalid api key [redacted] for this project"
        assert access[0]["error_status"] == 502
        text = (await client.get("/v1/metrics")).text
        assert 'endpoint="/api/chat",model="gpt-4o-mini",status="502"' in text


# 3 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        '{"choices":["x"]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":{"index":0}}}]}',
        '{"choices":[{"index":0,"delta":"text"}]}',
    ],
)
async def test_malformed_event_before_first_line_is_502_with_the_fragment(
    upstream: FakeUpstream, event: str
) -> None:
    async with client_for(upstream.url) as (app, client):
        upstream.script(Script(chunks=[event]))
        r = await client.post("/api/chat", json=CHAT)
        if r.status_code == 200:  # the content line went first: then an error line
            assert "error" in lines(r)[-1]
        else:
            assert r.status_code == 502
            error = r.json()["error"]
            assert error.startswith("upstream sent a malformed stream event: ")
            assert event[:20] in error
        assert app.state.ctx.limiter.active == 0


async def test_malformed_event_after_first_line_is_an_error_line(upstream: FakeUpstream) -> None:
    async with client_for(upstream.url) as (_, client):
        upstream.script(Script(chunks=[{"content": "a"}, '{"choices":["x"]}']))
        r = await client.post("/api/chat", json=CHAT)
        out = lines(r)
        assert out[0]["message"]["content"] == "a"
        assert out[-1]["error"].startswith("upstream sent a malformed stream event: ")
        assert "done" not in out[-1]


async def test_long_fragment_is_cut_to_200_characters(upstream: FakeUpstream) -> None:
    async with client_for(upstream.url) as (_, client):
        upstream.script(Script(chunks=['{"choices":["' + "x" * 5000 + '"]}']))
        r = await client.post("/api/chat", json=CHAT)
        assert r.status_code == 502
        assert len(r.json()["error"]) < 300


# 4 -------------------------------------------------------------------------------------------


async def test_first_show_of_a_latest_id_finds_it(upstream: FakeUpstream) -> None:
    upstream.models.append("llama3.2:latest")
    async with client_for(upstream.url) as (_, client):
        r = await client.post("/api/show", json={"model": "llama3.2:latest"})
        assert r.status_code == 200
        r = await client.post("/api/chat", json={**CHAT, "model": "llama3.2:latest"})
        assert r.status_code == 200
        assert upstream.last()["body"]["model"] == "llama3.2:latest"


# 5 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_v1_routes_keep_the_timeouts(upstream: FakeUpstream, stream: bool) -> None:
    async with client_for(upstream.url, request_timeout=0.3, first_byte_timeout=0.3) as (_, c):
        upstream.script(Script(first_delay=2.0))
        started = time.monotonic()
        r = await c.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert time.monotonic() - started < 1.5
        assert r.status_code == 504
        assert r.json()["error"]["message"].endswith(
            "(FIRST_BYTE_TIMEOUT)" if stream else "(REQUEST_TIMEOUT)"
        )


async def test_v1_body_cut_short_is_a_clear_502() -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b'{"id":"x","choices":[')
        await asyncio.sleep(0.05)
        reset(request)
        return resp

    async with backend(cut) as url, client_for(url) as (app, client):
        for path in ("/v1/chat/completions", "/api/chat"):
            r = await client.post(path, json={**CHAT, "stream": False})
            assert r.status_code == 502
            body = r.json()
            message = body["error"]["message"] if path.startswith("/v1") else body["error"]
            assert message.startswith("upstream stream interrupted")
        assert app.state.ctx.limiter.active == 0


# 6 -------------------------------------------------------------------------------------------


async def test_stream_without_finish_reason_or_done_is_an_error_line(
    upstream: FakeUpstream,
) -> None:
    async with client_for(upstream.url) as (_, client):
        upstream.script(Script(finish_reason=None, done_marker=False))
        with capture_logs() as logs:
            r = await client.post("/api/chat", json=CHAT)
        out = lines(r)
        assert out[-1] == {"error": "upstream stream ended early: no finish_reason and no [DONE]"}
        assert not any(x.get("done") for x in out)
        assert [e["reason"] for e in logs if e["event"] == "request_failed"] == [
            "UpstreamProtocolError"
        ]


async def test_invalid_utf8_is_an_error_not_replacement_characters(
    upstream: FakeUpstream,
) -> None:
    first = b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n'
    bad = b'data: {"choices":[{"index":0,"delta":{"content":"\xff\xfe"}}]}\n\n'
    async with client_for(upstream.url) as (_, client):
        upstream.script(
            Script(raw_body=first + bad + b"data: [DONE]\n\n", split_at=len(first), delay=0.05)
        )
        r = await client.post("/api/chat", json=CHAT)
        out = lines(r)
        assert out[0]["message"]["content"] == "ok"
        assert out[-1]["error"].startswith("upstream sent bytes that are not UTF-8")
        assert "\ufffd" not in r.text


# 7 -------------------------------------------------------------------------------------------


async def test_reset_before_the_first_byte_is_retried() -> None:
    calls = 0

    async def flaky(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        await request.read()
        if calls == 1:
            reset(request)
            return web.Response()
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "second try"},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    async with backend(flaky) as url, client_for(url, max_retries=1) as (_, client):
        r = await client.post("/api/chat", json={**CHAT, "stream": False})
        assert r.status_code == 200
        assert r.json()["message"]["content"] == "second try"
        assert calls == 2


# a bug below a stream still ends it with an error line ---------------------------------------


async def test_a_bug_mid_stream_is_an_error_line(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ollama_openai_bridge.translate.stream import StreamTranslator

    real = StreamTranslator.finish

    def broken(self: StreamTranslator) -> bytes:
        real(self)
        raise RuntimeError("bug")

    monkeypatch.setattr(StreamTranslator, "finish", broken)
    async with client_for(upstream.url) as (app, client):
        r = await client.post("/api/chat", json=CHAT)
        out = lines(r)
        assert out[-1] == {"error": "internal proxy error; see the proxy's log"}
        assert app.state.ctx.limiter.active == 0


# found by the review of #13 ------------------------------------------------------------------


def sse_handler(
    *pieces: bytes, headers: dict[str, str] | None = None, pause: float = 0.02
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **(headers or {})})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
            await asyncio.sleep(pause)
        await resp.write_eof()
        return resp

    return handler


CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
ERROR = b'data: {"error":{"message":"invalid api key ' + KEY.encode() + b' for you"}}\n\n'
V1 = {**CHAT, "stream": True}


async def test_v1_stream_redacts_a_key_split_across_reads_and_counts_the_error() -> None:
    cut = ERROR.index(KEY.encode()) + 5  # the key arrives in two reads
    handler = sse_handler(CONTENT + ERROR[:cut], ERROR[cut:], b"data: [DONE]\n\n")
    async with backend(handler) as url, client_for(url) as (_, client):
        with capture_logs() as logs:
            r = await client.post("/v1/chat/completions", json=V1)
        assert r.status_code == 200
        assert KEY not in r.text
        assert "invalid api key [redacted] for you" in r.text
        assert [e["status"] for e in logs if e["event"] == "request_failed"] == [502]
        assert KEY not in str(logs)
        text = (await client.get("/v1/metrics")).text
        assert 'endpoint="/v1/chat/completions",model="",status="502"' in text


async def test_v1_stream_without_done_ends_with_an_error_event() -> None:
    async with backend(sse_handler(CONTENT)) as url, client_for(url) as (_, client):
        r = await client.post("/v1/chat/completions", json=V1)
        events = [e for e in r.text.split("\n\n") if e]
        assert events[0] == CONTENT.decode().strip()
        last = orjson.loads(events[-1].removeprefix("data: "))
        assert last["error"]["message"] == "upstream stream ended early: no [DONE]"


@pytest.mark.parametrize(("path", "body"), [("/api/chat", CHAT), ("/v1/chat/completions", V1)])
async def test_an_empty_stream_is_never_a_500(path: str, body: dict[str, Any]) -> None:
    async with backend(sse_handler()) as url, client_for(url) as (app, client):
        r = await client.post(path, json=body)
        assert r.status_code in (200, 502)
        assert "internal proxy error" not in r.text
        assert "ended early" in r.text
        assert app.state.ctx.limiter.active == 0


@pytest.mark.parametrize("stream", [True, False])
async def test_headers_that_are_not_latin1_are_dropped_not_a_500(stream: bool) -> None:
    if stream:
        handler = sse_handler(CONTENT, b"data: [DONE]\n\n", headers={"x-ratelimit-note": "\u20ac"})
    else:

        async def handler(request: web.Request) -> web.StreamResponse:
            await request.read()
            return web.json_response(
                {"id": "x", "choices": []}, headers={"x-ratelimit-note": "\u20ac"}
            )

    async with backend(handler) as url, client_for(url) as (app, client):
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert r.status_code == 200
        assert "x-ratelimit-note" not in r.headers
        assert app.state.ctx.limiter.active == 0
        text = (await client.get("/v1/metrics")).text
        assert metric(text, "ollama_proxy_upstream_requests_in_flight") == 0


async def test_first_byte_timeout_counts_from_the_backend_call_not_the_queue() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            await asyncio.sleep(0.8)  # holds the only slot
            return web.json_response(
                {
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}],
                }
            )
        return await sse_handler(CONTENT, b"data: [DONE]\n\n", pause=0.4)(request)

    async with (
        backend(handler) as url,
        client_for(url, max_concurrent_requests=1, queue_timeout=5, first_byte_timeout=1.0) as (
            _,
            client,
        ),
    ):
        first = asyncio.create_task(client.post("/api/chat", json={**CHAT, "stream": False}))
        await asyncio.sleep(0.1)
        second = await client.post("/api/chat", json=CHAT)  # queued 0.7 s, then 0.4 s to go
        assert second.status_code == 200
        assert lines(second)[0]["message"]["content"] == "hi"
        assert (await first).status_code == 200


async def test_a_failed_stream_is_not_listed_in_ps(upstream: FakeUpstream) -> None:
    async with client_for(upstream.url) as (_, client):
        upstream.script(Script(chunks=['{"choices":["x"]}']))
        assert (await client.post("/api/chat", json=CHAT)).status_code == 502
        assert (await client.get("/api/ps")).json() == {"models": []}
        assert (await client.post("/api/chat", json=CHAT)).status_code == 200
        assert [m["name"] for m in (await client.get("/api/ps")).json()["models"]] == [
            "gpt-4o-mini"
        ]


@pytest.mark.parametrize(
    ("path", "stream"),
    [
        ("/api/chat", True),
        ("/api/chat", False),
        ("/v1/chat/completions", True),
        ("/v1/chat/completions", False),
    ],
)
async def test_a_client_that_leaves_before_its_answer_frees_its_slot_at_once(
    path: str, stream: bool
) -> None:
    cancelled = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["model"] == "slow":
            try:
                await asyncio.sleep(30)  # no first byte for a long time
            except asyncio.CancelledError:
                cancelled.set()  # the proxy closed the backend call
                raise
        return web.json_response(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}
        )

    async with backend(handler) as url:
        settings = settings_for(
            url, max_concurrent_requests=1, max_queued_requests=0, first_byte_timeout=60
        )
        proxy = ProxyServer(settings)
        # started from a thread: the backend runs on this loop and must answer its model list
        await asyncio.to_thread(proxy.__enter__)
        try:
            body = orjson.dumps({**CHAT, "model": "slow", "stream": stream})
            _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            await asyncio.sleep(0.3)  # the request holds the only slot, waiting
            writer.close()
            await asyncio.wait_for(cancelled.wait(), 5)
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
                r = await client.post(path, json={**CHAT, "stream": False})
            assert r.status_code == 200
            assert time.monotonic() - started < 2
            assert proxy.app.state.ctx.limiter.active == 0
            text = (await asyncio.to_thread(httpx.get, proxy.url + "/v1/metrics")).text
            assert 'status="499"' in text
        finally:
            await asyncio.to_thread(proxy.__exit__, None, None, None)


# doors of #14 closed on the way ---------------------------------------------------------------


async def test_a_trailing_slash_is_404_never_an_off_host_redirect(upstream: FakeUpstream) -> None:
    async with client_for(upstream.url) as (_, client):
        r = await client.post(
            "/api/chat/", json=CHAT, headers={"Host": "evil.example"}, follow_redirects=False
        )
        assert r.status_code == 404
        assert "location" not in r.headers
        assert r.json() == {"error": "404 page not found"}


async def test_a_huge_model_name_is_not_echoed_whole(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ollama_openai_bridge.access")
    name = "m" * 1_000_000
    async with client_for(upstream.url) as (_, client):
        with capture_logs() as logs:
            r = await client.post("/api/show", json={"model": name})
            r2 = await client.post("/api/chat", json={**CHAT, "model": name, "stream": False})
        assert r.status_code == 404
        assert len(r.content) < 400
        assert r2.status_code == 404
        assert len(r2.content) < 400
        assert max(len(str(e)) for e in logs) < 2000


async def test_a_key_sent_as_request_id_never_reaches_the_log(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ollama_openai_bridge.access")
    async with client_for(upstream.url) as (_, client):
        r = await client.get("/api/version", headers={"X-Request-ID": KEY})
        assert r.headers["x-request-id"] != KEY
        assert KEY not in r.headers["x-request-id"]
        r = await client.get("/api/version", headers={"X-Request-ID": "trace-42"})
        assert r.headers["x-request-id"] == "trace-42"


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
async def test_an_endless_event_is_refused_not_buffered(path: str) -> None:
    huge = b"data: " + b"x" * (17 * 1024 * 1024)
    handler = sse_handler(CONTENT, *(huge[i : i + (1 << 20)] for i in range(0, len(huge), 1 << 20)))
    async with backend(handler) as url, client_for(url) as (app, client):
        r = await client.post(path, json=V1 if path.startswith("/v1") else CHAT)
        assert r.status_code == 200  # the first event went out
        assert "larger than 16777216 bytes" in r.text or "longer than 16777216 bytes" in r.text
        assert app.state.ctx.limiter.active == 0
