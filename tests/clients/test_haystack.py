"""Haystack (PyPI ``haystack-ai`` with ``ollama-haystack``): ``OllamaChatGenerator``, unmodified,
against the proxy (issue #17).

Its streaming accumulator (``OllamaChatGenerator._handle_streaming_response``) gives every NDJSON
line that carries tool calls one new index, and keeps one call per index: two calls on one line
would come out as one. The proxy sends each call on its own line, as Ollama does, so parallel
calls arrive whole -- the last test is that case."""

from __future__ import annotations

import os
from typing import Any

import pytest

# Haystack reports usage to PostHog unless told not to; the tests reach nothing but loopback.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

from haystack.dataclasses import ChatMessage, StreamingChunk
from haystack.tools import Tool  # type: ignore[attr-defined]  # lazily exported
from haystack_integrations.components.generators.ollama import OllamaChatGenerator

from tests.clients.standing import PARALLEL_CALLS
from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer

CLIENT = "Haystack, ollama-haystack (PyPI)"
MODEL = "gpt-4o-mini"


def weather(city: str) -> str:
    return f"17 C in {city}"


WEATHER = Tool(
    name="get_weather",
    description="The weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    function=weather,
)


def generator(proxy: ProxyServer, **kwargs: Any) -> OllamaChatGenerator:
    return OllamaChatGenerator(model=MODEL, url=proxy.url, timeout=30, **kwargs)


@pytest.mark.compat(CLIENT, "chat")
def test_chat(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(
        Script(
            chunks=[{"content": "Hello "}, {"content": "there"}],
            usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        )
    )
    out = generator(proxy).run(
        messages=[ChatMessage.from_system("Be brief."), ChatMessage.from_user("hi")]
    )
    reply = out["replies"][0]
    assert reply.text == "Hello there"
    assert reply.meta["finish_reason"] == "stop"
    assert reply.meta["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    sent = upstream.last()["body"]
    assert sent["stream"] is False
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


@pytest.mark.compat(CLIENT, "chat stream")
def test_streamed_answer(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Script(chunks=[{"content": "a"}, {"content": "b"}, {"content": "c"}]))
    seen: list[StreamingChunk] = []
    out = generator(proxy, streaming_callback=seen.append).run(
        messages=[ChatMessage.from_user("hi")]
    )
    assert "".join(c.content for c in seen) == "abc"
    assert out["replies"][0].text == "abc"
    assert seen[-1].finish_reason == "stop"
    assert upstream.last()["body"]["stream"] is True


@pytest.mark.compat(CLIENT, "tools")
def test_two_parallel_tool_calls_streamed(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(PARALLEL_CALLS, Script(chunks=[{"content": "Both 17 C."}]))
    seen: list[StreamingChunk] = []
    gen = generator(proxy, streaming_callback=seen.append, tools=[WEATHER])
    ask = [ChatMessage.from_user("Weather in Paris and Rome?")]
    reply = gen.run(messages=ask)["replies"][0]
    calls = [(c.tool_name, c.arguments) for c in reply.tool_calls]
    assert calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    # no ids: ollama-python, which Haystack drives, has no place for a call's id; the proxy pairs
    # the results by name and position (translate/chat.py), as below
    assert [c.id for c in reply.tool_calls] == [None, None]
    assert sum(1 for c in seen if c.tool_calls) == 2  # one line per call
    sent = upstream.last()["body"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"

    # The round trip: Haystack's own tool results go back, paired with their calls.
    results = [
        ChatMessage.from_tool(weather(**call.arguments), origin=call) for call in reply.tool_calls
    ]
    final = gen.run(messages=[*ask, reply, *results])["replies"][0]
    assert final.text == "Both 17 C."
    history = upstream.last()["body"]["messages"]
    assistant = history[1]
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["get_weather"] * 2
    answered = {m["tool_call_id"]: m["content"] for m in history[2:]}
    assert answered == {
        assistant["tool_calls"][0]["id"]: "17 C in Paris",
        assistant["tool_calls"][1]["id"]: "17 C in Rome",
    }
