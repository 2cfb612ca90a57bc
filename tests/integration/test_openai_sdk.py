"""The ``openai`` SDK against the proxy's ``/v1`` passthrough (how Copilot and OpenAI apps use it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer

CLIENT = "openai (PyPI) on /v1"


@pytest.fixture
def oai(proxy: ProxyServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="anything", max_retries=0) as c:
        yield c


@pytest.mark.compat(CLIENT, "chat")
def test_chat_non_streaming(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    r = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert r.choices[0].message.content == "Hello!"
    # forwarded as sent, with the proxy's upstream key instead of the client's
    assert upstream.last()["body"] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert upstream.last()["headers"]["Authorization"] == "Bearer sk-test-upstream"


@pytest.mark.compat(CLIENT, "chat stream")
def test_chat_streaming_bytes_forwarded(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(Script(chunks=[{"content": "a"}, {"content": "b"}], split_at=9, delay=0.001))
    stream = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ab"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2


@pytest.mark.compat(CLIENT, "errors")
def test_upstream_status_and_body_kept(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    with pytest.raises(
        openai.BadRequestError, match="Unrecognized request argument supplied: top_k"
    ):
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"top_k": 3},
        )


@pytest.mark.compat(CLIENT, "list models")
def test_models_embeddings_completions(oai: openai.OpenAI) -> None:
    assert [m.id for m in oai.models.list()] == [
        "gpt-4o-mini",
        "qwen3:8b",
        "text-embedding-3-small",
    ]
    assert oai.models.retrieve("qwen3:8b").id == "qwen3:8b"
    emb = oai.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [d.embedding for d in emb.data] == [[3.0, 4.0, 0.0], [3.0, 5.0, 0.0]]
    comp = oai.completions.create(model="gpt-4o-mini", prompt="x")
    assert comp.choices[0].text == "Hello!"


def test_rate_limit_headers_forwarded(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(
        Script(
            status=429,
            error={"error": {"message": "slow"}},
            headers={"Retry-After": "7", "x-ratelimit-remaining-requests": "0"},
        )
    )
    r = httpx.post(
        proxy.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 429
    assert (r.headers["retry-after"], r.headers["x-ratelimit-remaining-requests"]) == ("7", "0")


def test_errors_before_upstream_use_openai_shape(proxy: ProxyServer) -> None:
    r = httpx.post(proxy.url + "/v1/chat/completions", content=b"x" * 10)
    # No model map: bytes are forwarded and the backend's own error comes back.
    assert r.status_code == 400
    assert r.json()["error"]["message"]


def test_stream_interrupted_gives_sse_error_event(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    upstream.script(Script(chunks=[{"content": "a"}, {"content": "b"}], drop_after=2, delay=0.01))
    r = httpx.post(
        proxy.url + "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    last = r.text.rstrip().rsplit("\n\n", 1)[-1]
    assert last.startswith("data: ")
    # the renderer's OpenAI error object, which the openai SDK raises as APIError
    assert json.loads(last[6:]) == {
        "error": {
            "message": "upstream stream interrupted: connection closed early",
            "type": "api_error",
            "param": None,
            "code": None,
        }
    }


@pytest.mark.compat(CLIENT, "tools")
def test_chat_stream_with_tools(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    frags = [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]},
    ]
    upstream.script(Script(chunks=frags, finish_reason="tool_calls"))
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    stream = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,
        stream=True,
    )
    args = ""
    names = []
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if tc.function and tc.function.name:
                names.append(tc.function.name)
            if tc.function and tc.function.arguments:
                args += tc.function.arguments
    assert names == ["get_weather"]
    assert json.loads(args) == {"city": "Paris"}
    assert upstream.last()["body"]["tools"] == tools


@pytest.mark.compat(CLIENT, "embeddings")
def test_embeddings(oai: openai.OpenAI) -> None:
    emb = oai.embeddings.create(model="text-embedding-3-small", input="a")
    assert emb.data[0].embedding == [3.0, 4.0, 0.0]
