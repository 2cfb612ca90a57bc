"""Hostile request bodies of issue #14, one test each, through the whole app in-process (httpx
ASGITransport) against the strict fake backend: amplification refused with a 400 naming the
limit, odd but legal JSON a 400 naming the field (never a 500), no request poisoning /api/ps,
and the HTTP details the OpenAPI document promises (405 with Allow, HEAD wherever GET)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from ollama_openai_bridge.app import ProxyApp, create_app
from tests.fake_upstream import FakeUpstream
from tests.servers import settings_for

pytestmark = pytest.mark.anyio

MODEL = "gpt-4o-mini"
USER = {"role": "user", "content": "hi"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def client_for(
    url: str, **overrides: Any
) -> AsyncIterator[tuple[ProxyApp, httpx.AsyncClient]]:
    app = create_app(settings_for(url, **overrides))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://proxy", timeout=20
        ) as client,
    ):
        yield app, client


def calls(upstream: FakeUpstream) -> list[Any]:
    """What reached the backend besides the model list the app loads at start."""
    return [e for e in upstream.journal if e["path"] != "/v1/models"]


TOOL = {"type": "function", "function": {"name": "f"}}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [USER], "stream": False, **fields}


# --- amplification: counts no backend accepts ---------------------------------------------


async def test_a_body_of_too_many_values_is_refused_before_it_is_parsed(
    upstream: FakeUpstream,
) -> None:
    body = b'{"model": "gpt-4o-mini", "messages": [' + b"{}," * 1000 + b"{}]}"
    async with client_for(upstream.url, request_max_values=1000) as (_, client):
        r = await client.post("/api/chat", content=body)
        assert r.status_code == 400
        assert "REQUEST_MAX_VALUES" in r.json()["error"]
        # the same on a /v1 body the proxy decodes ("stream" makes it look)
        r = await client.post("/v1/chat/completions", content=body[:-1] + b', "stream": true}')
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "invalid_request_error"
    assert not calls(upstream)


@pytest.mark.parametrize(
    ("path", "body", "field", "setting"),
    [
        ("/api/chat", chat(messages=[USER] * 6), "messages", "REQUEST_MAX_MESSAGES"),
        ("/api/chat", chat(tools=[TOOL] * 3), "tools", "REQUEST_MAX_TOOLS"),
        ("/api/chat", chat(options={"stop": ["x"] * 3}), "options.stop", "REQUEST_MAX_STOP"),
        (
            "/api/chat",
            chat(messages=[{**USER, "images": ["QUJD"] * 3}, {**USER, "images": [""] * 2}]),
            "messages.1.images",
            "REQUEST_MAX_IMAGES",
        ),
        (
            "/api/generate",
            {"model": MODEL, "prompt": "x", "images": [""] * 5},
            "images",
            "REQUEST_MAX_IMAGES",
        ),
        (
            "/api/generate",
            {"model": MODEL, "prompt": "x", "context": [1] * 6},
            "context",
            "REQUEST_MAX_CONTEXT",
        ),
        (
            "/api/embed",
            {"model": "text-embedding-3-small", "input": ["a"] * 3},
            "input",
            "EMBED_MAX_INPUTS",
        ),
    ],
)
async def test_counts_over_the_limits_are_400_naming_field_and_setting(
    upstream: FakeUpstream, path: str, body: dict[str, Any], field: str, setting: str
) -> None:
    limits = {
        "request_max_messages": 5,
        "request_max_tools": 2,
        "request_max_stop": 2,
        "request_max_images": 4,
        "request_max_context": 5,
        "embed_max_inputs": 2,
    }
    async with client_for(upstream.url, **limits) as (_, client):
        r = await client.post(path, json=body)
    assert r.status_code == 400
    assert r.json()["error"].startswith(f"too many items in '{field}': ")
    assert setting in r.json()["error"]
    assert not calls(upstream)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": MODEL, "messages": [USER] * 6}, "messages"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [USER], "tools": [{}] * 3}, "tools"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "stop": ["x"] * 3}, "stop"),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a"] * 3}, "input"),
    ],
)
async def test_v1_bodies_the_proxy_decodes_are_held_to_the_same_counts(
    upstream: FakeUpstream, path: str, body: dict[str, Any], param: str
) -> None:
    limits = {
        "request_max_messages": 5,
        "request_max_tools": 2,
        "request_max_stop": 2,
        "embed_max_inputs": 2,
    }
    async with client_for(upstream.url, **limits) as (_, client):
        r = await client.post(path, json={**body, "stream": False})
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        param,
        "array_above_max_length",  # OpenAI's code for the same refusal
    )


async def test_many_unanswered_tool_calls_are_not_as_many_log_lines(
    upstream: FakeUpstream,
) -> None:
    calls = [{"function": {"name": f"f{i}", "arguments": {}}} for i in range(200)]
    body = chat(messages=[USER, {"role": "assistant", "tool_calls": calls}, USER])
    async with client_for(upstream.url) as (_, client):
        with capture_logs() as logs:
            r = await client.post("/api/chat", json=body)
    assert r.status_code == 200
    notes = [e for e in logs if e["event"] == "translation_note"]
    assert len(notes) == 21  # twenty distinct notes, then one line for the rest
    assert notes[-1]["note"] == "... and 180 more notes like these"


# --- odd but legal JSON: a 400 naming the field, never a 500 --------------------------------


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        (
            "/api/chat",
            chat(messages=[{**USER, "images": ["é"]}]),
            "invalid image at messages.0.images.0: not valid base64 data",
        ),
        (
            "/api/generate",
            {"model": MODEL, "prompt": "x", "images": ["é"], "stream": False},
            "invalid image at images.0: not valid base64 data",
        ),
        ("/api/chat", chat(options={"num_predict": 1e308}), 'option "num_predict" is out of range'),
        ("/api/chat", chat(options={"num_predict": 2**64}), 'option "num_predict" is out of range'),
        (
            "/api/chat",
            chat(options={"num_predict": 10**100}),
            'option "num_predict" is out of range',
        ),
        ("/api/chat", chat(options={"seed": 2**70}), 'option "seed" is out of range'),
        ("/api/chat", chat(keep_alive=1e300), "invalid keep_alive: out of range"),
        ("/api/chat", chat(keep_alive="99999999999h"), 'time: invalid duration "99999999999h"'),
        ("/api/chat", chat(keep_alive=False), "invalid value for 'keep_alive'"),
        ("/api/chat", chat(top_logprobs=False), "invalid value for 'top_logprobs'"),
        ("/api/chat", chat(top_logprobs=10**30), "invalid value for 'top_logprobs'"),
        (
            "/api/embed",
            {"model": "text-embedding-3-small", "input": ["a"], "dimensions": 2**64},
            "invalid value for 'dimensions'",
        ),
        ("/api/embed", {"model": "text-embedding-3-small", "input": 0}, "invalid input type"),
        (
            "/api/embed",
            {"model": "text-embedding-3-small", "input": "a", "keep_alive": "forever"},
            'time: invalid duration "forever"',
        ),
    ],
)
async def test_odd_values_are_400_naming_the_field_before_the_backend(
    upstream: FakeUpstream, path: str, body: dict[str, Any], error: str
) -> None:
    async with client_for(upstream.url) as (_, client):
        # orjson cannot write 10**100: the body is spelled out as JSON text
        r = await client.post(path, content=_json(body))
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(error)
    assert not calls(upstream)


def _json(value: Any) -> bytes:
    if isinstance(value, dict):
        return b"{" + b",".join(orjson.dumps(k) + b":" + _json(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(_json(v) for v in value) + b"]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    return orjson.dumps(value)


async def test_integers_beyond_64_bits_in_free_form_fields_go_on_as_floats(
    upstream: FakeUpstream,
) -> None:
    """Ollama decodes tool schemas, arguments and format as Go ``any``: numbers are float64.
    They were a 500 ("Integer exceeds 64-bit range") when the backend call was encoded."""
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "integer", "maximum": 2**70}},
    }
    call = {"function": {"name": "f", "arguments": {"n": 2**80}}}
    body = chat(
        tools=[tool],
        messages=[USER, {"role": "assistant", "tool_calls": [call]}, {"role": "tool"}],
    )
    async with client_for(upstream.url) as (_, client):
        r = await client.post("/api/chat", content=_json(body))
    assert r.status_code == 200, r.text
    sent = upstream.last()["body"]
    assert sent["tools"][0]["function"]["parameters"]["maximum"] == float(2**70)
    args = sent["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert orjson.loads(args) == {"n": float(2**80)}


# --- shared state -------------------------------------------------------------------------


async def test_a_huge_keep_alive_never_gives_ps_an_invalid_date(upstream: FakeUpstream) -> None:
    async with client_for(upstream.url) as (_, client):
        for keep_alive in (9_223_372_036, "2562047h", -1e300, "-1"):
            assert (await client.post("/api/chat", json=chat(keep_alive=keep_alive))).is_success
            expires = (await client.get("/api/ps")).json()["models"][0]["expires_at"]
            when = datetime.fromisoformat(expires)  # RFC 3339, as the document says
            assert 0 < (when - datetime.now(UTC)).days <= 3653  # ten years at most


# --- what the document promises of HTTP ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/api/chat", "POST"),
        ("TRACE", "/api/ps", "GET, HEAD"),
        ("OPTIONS", "/api/tags", "GET, HEAD"),
        ("DELETE", "/v1/models/gpt-4o-mini", "GET, HEAD"),
        ("GET", "/api/blobs/sha256:0", "HEAD, POST"),
    ],
)
async def test_a_405_says_which_methods_the_path_has(
    upstream: FakeUpstream, method: str, path: str, allow: str
) -> None:
    async with client_for(upstream.url) as (_, client):
        r = await client.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allow


async def test_every_get_route_answers_head(upstream: FakeUpstream) -> None:
    async with client_for(upstream.url) as (_, client):
        doc = (await client.get("/openapi.json")).json()
        for path, item in doc["paths"].items():
            if "get" in item:
                url = path.replace("{model}", MODEL)
                got = await client.get(url)
                head = await client.head(url)
                assert (head.status_code, head.content) == (got.status_code, b""), path


async def test_openai_errors_have_the_documented_shape(upstream: FakeUpstream) -> None:
    async with client_for(upstream.url) as (_, client):
        doc = (await client.get("/openapi.json")).json()
        r = await client.get("/v1/models/a%3Fb")  # "a?b": an id the proxy refuses
    assert r.status_code == 400
    shape = doc["components"]["schemas"]["OpenAIError"]["properties"]["error"]
    assert set(r.json()["error"]) == set(shape["required"])


async def test_a_refused_body_is_scanned_not_parsed(upstream: FakeUpstream) -> None:
    """A refused 10 MB body of a million values takes one scan, not a parse."""
    body = b'{"model": "gpt-4o-mini", "messages": [' + b"{}," * 3_500_000 + b"{}]}"
    async with client_for(upstream.url, request_max_size=16 * 2**20) as (_, client):
        start = time.perf_counter()
        r = await client.post("/api/chat", content=body)
        elapsed = time.perf_counter() - start
    assert r.status_code == 400
    assert elapsed < 2  # a parse of it took 1.8 s and 1.4 GB; the scan takes milliseconds
