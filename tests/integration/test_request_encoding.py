"""Compressed request bodies over the real app (codings.py, issue #17): Codex's zstd on
``/v1/responses`` (its captured request, compressed as Codex compresses: zstd level 3), zstd and
gzip on every other POST route; a bomb is 413, a corrupt body 400 and an unknown coding 415, each
in the route's own error shape."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import zstandard

from tests.conftest import agent_request
from tests.fake_upstream import FakeUpstream
from tests.servers import ProxyServer, settings_for

MODEL = "gpt-4o-mini"
HI = [{"role": "user", "content": "hi"}]
LIMIT = 1 << 20


def zstd(body: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(body)


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "zstd": zstd,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
}


@pytest.fixture(scope="module")
def app(upstream: FakeUpstream) -> Iterator[httpx.Client]:
    with (
        ProxyServer(settings_for(upstream.url, request_max_size=LIMIT)) as p,
        httpx.Client(base_url=p.url, timeout=30) as client,
    ):
        yield client


def post(client: httpx.Client, path: str, body: bytes, coding: str) -> httpx.Response:
    headers = {"Content-Type": "application/json", "Content-Encoding": coding}
    return client.post(path, content=body, headers=headers)


ROUTES: dict[str, dict[str, Any]] = {
    "/api/chat": {"model": MODEL, "messages": HI, "stream": False},
    "/api/generate": {"model": MODEL, "prompt": "hi", "stream": False},
    "/v1/messages": {"model": MODEL, "max_tokens": 64, "messages": HI},
    "/v1/responses": {"model": MODEL, "input": "hi"},
    "/v1/chat/completions": {"model": MODEL, "messages": HI},
    "/api/show": {"model": MODEL},
}


@pytest.mark.parametrize("coding", sorted(ENCODERS))
@pytest.mark.parametrize("path", sorted(ROUTES))
def test_every_post_route_takes_a_compressed_body(
    app: httpx.Client, upstream: FakeUpstream, path: str, coding: str
) -> None:
    r = post(app, path, ENCODERS[coding](orjson.dumps(ROUTES[path])), coding)
    assert r.status_code == 200, r.text
    if path != "/api/show":
        sent = upstream.last()["body"]  # the backend gets plain JSON
        assert sent["model"] == MODEL


def test_codexs_zstd_request_as_captured(app: httpx.Client, upstream: FakeUpstream) -> None:
    body = {**agent_request("codex_04_post_v1_responses.json"), "model": MODEL, "stream": False}
    plain = orjson.dumps(body)
    r = post(app, "/v1/responses", zstd(plain), "zstd")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    sent = upstream.last()["body"]
    asked = body["input"][-1]["content"][0]["text"]
    assert sent["messages"][-1] == {"role": "user", "content": asked}  # arrived whole
    assert len(zstd(plain)) < len(plain) // 2  # what went over the wire was compressed


def test_the_relay_sends_the_backend_plain_json(app: httpx.Client, upstream: FakeUpstream) -> None:
    body = orjson.dumps({"model": MODEL, "messages": HI, "max_tokens": 7})
    r = post(app, "/v1/chat/completions", zstd(body), "zstd")
    assert r.status_code == 200, r.text
    entry = upstream.last()
    assert entry["body"]["max_tokens"] == 7
    assert "Content-Encoding" not in entry["headers"]


BOMB = zstandard.ZstdCompressor(level=3).compress(bytes(256 << 20))  # 256 MiB of zeros, ~8 KB


@pytest.mark.parametrize(
    ("path", "status", "shape"),
    [
        ("/api/chat", 413, "ollama"),
        ("/v1/messages", 413, "anthropic"),
        ("/v1/responses", 413, "openai"),
        ("/v1/chat/completions", 413, "openai"),
    ],
)
def test_a_bomb_is_413_in_the_routes_dialect(
    app: httpx.Client, path: str, status: int, shape: str
) -> None:
    assert len(BOMB) < 64 << 10
    r = post(app, path, BOMB, "zstd")
    assert r.status_code == status
    assert error_text(r, shape, "request_too_large").startswith(
        f"request body too large once decompressed (zstd): the limit is {LIMIT} bytes"
    )


@pytest.mark.parametrize(
    ("body", "coding", "status", "fragment"),
    [
        (b"\x28\xb5\x2f\xfd garbage", "zstd", 400, "invalid zstd request body"),
        (b"not gzip at all", "gzip", 400, "invalid gzip request body"),
        (gzip.compress(b'{"model": "m"}')[:-4], "gzip", 400, "ends before its end marker"),
        (b"{}", "br", 415, "unsupported Content-Encoding 'br'"),
        (b"{}", "gzip, zstd", 415, "unsupported Content-Encoding"),
    ],
)
@pytest.mark.parametrize(
    ("path", "shape"),
    [("/api/chat", "ollama"), ("/v1/messages", "anthropic"), ("/v1/responses", "openai")],
)
def test_what_does_not_decode_is_refused_in_the_routes_dialect(
    app: httpx.Client,
    path: str,
    shape: str,
    body: bytes,
    coding: str,
    status: int,
    fragment: str,
) -> None:
    r = post(app, path, body, coding)
    assert r.status_code == status
    assert fragment in error_text(r, shape, "invalid_request_error")


def error_text(r: httpx.Response, shape: str, anthropic_type: str) -> str:
    body = r.json()
    if shape == "ollama":  # Ollama's {"error": "..."}
        assert isinstance(body["error"], str)
        return str(body["error"])
    if shape == "anthropic":
        assert body["type"] == "error"
        assert body["error"]["type"] == anthropic_type
        return str(body["error"]["message"])
    assert body["error"]["type"] == "invalid_request_error"  # OpenAI's shape
    return str(body["error"]["message"])
