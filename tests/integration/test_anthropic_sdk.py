"""The real ``anthropic`` SDK, and Claude Code's own requests, against the real proxy's
``/v1/messages`` (issue #17), with the strict fake OpenAI backend behind it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

CLIENT = "anthropic (PyPI) on /v1/messages"
AGENTS = Path(__file__).resolve().parents[1] / "fixtures" / "agents"
HI: Any = [{"role": "user", "content": "hi"}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def client(proxy: ProxyServer) -> Iterator[anthropic.Anthropic]:
    # Claude Code's way: ANTHROPIC_AUTH_TOKEN (a Bearer token), no API key
    with anthropic.Anthropic(base_url=proxy.url, auth_token="ollama", max_retries=0) as c:
        yield c


def calls(*names_args: tuple[str, str, str]) -> list[dict[str, Any]]:
    """Streamed tool-call fragments: each call's name first, then its arguments in two."""
    chunks: list[dict[str, Any]] = []
    for i, (call_id, name, args) in enumerate(names_args):
        head = {"index": i, "id": call_id, "type": "function", "function": {"name": name}}
        chunks.append({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
        half = len(args) // 2
        for piece in (args[:half], args[half:]):
            chunks.append({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    return chunks


@pytest.mark.compat(CLIENT, "messages")
def test_create(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    m = client.messages.create(model="gpt-4o-mini", max_tokens=100, system="be terse", messages=HI)
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == "Hello!"  # type: ignore[union-attr]
    assert (m.model, m.role, m.stop_reason, m.stop_sequence) == (
        "gpt-4o-mini",
        "assistant",
        "end_turn",
        None,
    )
    assert m.id.startswith("msg_")
    assert (m.usage.input_tokens, m.usage.output_tokens) == (7, 2)
    assert upstream.last()["body"] == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "hi"},
        ],
        "stream": False,
        "max_tokens": 100,
    }
    # the proxy's own key goes to the backend, never the client's
    assert upstream.last()["headers"]["Authorization"] == "Bearer sk-test-upstream"


@pytest.mark.compat(CLIENT, "messages stream")
def test_stream_text(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(Script(chunks=[{"content": "Hel"}, {"content": "lo"}], split_at=7, delay=0.001))
    with client.messages.stream(model="gpt-4o-mini", max_tokens=100, messages=HI) as s:
        assert "".join(s.text_stream) == "Hello"
        final = s.get_final_message()
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, 2)
    assert upstream.last()["body"]["stream_options"] == {"include_usage": True}


@pytest.mark.compat(CLIENT, "tools")
def test_stream_tool_use(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    upstream.script(
        Script(
            chunks=[
                {"content": "Checking."},
                *calls(
                    ("call_1", "get_weather", '{"city": "Paris"}'),
                    ("call_2", "get_weather", '{"city": "Rome"}'),
                ),
            ],
            finish_reason="tool_calls",
        )
    )
    with client.messages.stream(
        model="gpt-4o-mini",
        max_tokens=100,
        messages=HI,
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": False},
    ) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == [
        ("call_1", "get_weather", {"city": "Paris"}),
        ("call_2", "get_weather", {"city": "Rome"}),
    ]
    sent = upstream.last()["body"]
    assert sent["tool_choice"] == "required"
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "Weather of a city",
            },
        }
    ]


@pytest.mark.compat(CLIENT, "tool round trip")
def test_tool_round_trip(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    upstream.script(
        Script(
            message={"role": "assistant", "content": None, "tool_calls": [call]},
            finish_reason="tool_calls",
        ),
        Script(chunks=[{"content": "18C in Paris."}]),
    )
    first = client.messages.create(
        model="gpt-4o-mini", max_tokens=100, messages=HI, tools=[WEATHER]
    )
    assert first.stop_reason == "tool_use"
    (use,) = first.content
    assert use.type == "tool_use"
    history: Any = [
        *HI,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C"}],
        },
    ]
    second = client.messages.create(
        model="gpt-4o-mini", max_tokens=100, messages=history, tools=[WEATHER]
    )
    assert second.content[0].text == "18C in Paris."  # type: ignore[union-attr]
    messages = upstream.last()["body"]["messages"]
    assert messages[1]["tool_calls"][0]["id"] == "call_9"  # the backend's own id came back
    assert messages[2] == {"role": "tool", "tool_call_id": "call_9", "content": "18C"}


@pytest.mark.compat(CLIENT, "count tokens")
def test_count_tokens(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(model="gpt-4o-mini", messages=HI, tools=[WEATHER])
    assert 10 < counted.input_tokens < 100  # an estimate: characters / 4
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.count_tokens(model="nope", messages=HI)
    assert info.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model 'nope' not found"},
    }


@pytest.mark.compat(CLIENT, "errors")
def test_errors_in_anthropics_shape(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    with pytest.raises(anthropic.NotFoundError) as not_found:
        client.messages.create(model="nope", max_tokens=10, messages=HI)
    assert not_found.value.type == "not_found_error"
    upstream.script(Script(status=429, error={"error": {"message": "slow down"}}))
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="gpt-4o-mini", max_tokens=10, messages=HI)
    assert limited.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    tool_role: Any = [{"role": "tool", "content": "x"}]
    with pytest.raises(anthropic.BadRequestError, match=r"invalid role 'tool' at messages\.0"):
        client.messages.create(model="gpt-4o-mini", max_tokens=10, messages=tool_role)
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        client.messages.create(
            model="gpt-4o-mini", max_tokens=10, messages=HI, extra_body={"max_tokens": "ten"}
        )


def test_unknown_sub_path_and_method_are_anthropic_404s(proxy: ProxyServer) -> None:
    r = httpx.post(proxy.url + "/v1/messages/batches", json={})
    assert r.status_code == 404
    assert r.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "404 page not found"},
    }
    r = httpx.get(proxy.url + "/v1/messages")
    assert (r.status_code, r.json()["error"]["type"]) == (405, "not_found_error")


def test_an_error_mid_stream_is_raised_by_the_sdk(
    client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    upstream.script(Script(chunks=[{"content": "a"}, {"content": "b"}], drop_after=2, delay=0.01))
    with (
        pytest.raises(anthropic.APIStatusError, match="interrupted"),
        client.messages.stream(model="gpt-4o-mini", max_tokens=10, messages=HI) as s,
    ):
        for _ in s:
            pass


def test_a_backend_that_ignores_stream_true(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    answer = {
        "id": "c",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "whole"},
                "finish_reason": "stop",
            }
        ],
    }
    upstream.script(Script(raw_body=json.dumps(answer).encode(), content_type="application/json"))
    body = {"model": "gpt-4o-mini", "max_tokens": 10, "stream": True, "messages": HI}
    r = httpx.post(proxy.url + "/v1/messages", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "event: content_block_delta" in r.text
    assert r.text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')


# --- inbound keys: x-api-key as the anthropic SDKs send ANTHROPIC_API_KEY ----------------------


def test_x_api_key_is_accepted_on_the_anthropic_routes(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, proxy_api_keys="key-one-1234")) as p:
        by_header = anthropic.Anthropic(
            base_url=p.url, default_headers={"x-api-key": "key-one-1234"}, max_retries=0
        )
        assert by_header.messages.create(model="gpt-4o-mini", max_tokens=10, messages=HI).content
        assert by_header.messages.count_tokens(model="gpt-4o-mini", messages=HI).input_tokens
        bearer = anthropic.Anthropic(base_url=p.url, auth_token="key-one-1234", max_retries=0)
        assert bearer.messages.create(model="gpt-4o-mini", max_tokens=10, messages=HI).content
        wrong = anthropic.Anthropic(
            base_url=p.url, default_headers={"x-api-key": "nope"}, max_retries=0
        )
        with pytest.raises(anthropic.AuthenticationError) as info:
            wrong.messages.create(model="gpt-4o-mini", max_tokens=10, messages=HI)
        assert info.value.body == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "unauthorized"},
        }
        # only where Anthropic's clients send it: the Ollama API keeps its Bearer key
        r = httpx.get(p.url + "/api/tags", headers={"x-api-key": "key-one-1234"})
        assert r.status_code == 401


# --- Claude Code's own requests (tests/fixtures/agents, captured from Claude Code 2.1.332) ------


def capture(name: str) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads((AGENTS / name).read_text())
    return fixture


def claude_code_headers(fixture: dict[str, Any]) -> dict[str, str]:
    skip = {"host", "content-length", "connection", "accept-encoding", "authorization"}
    headers = {k: v for k, v in fixture["headers"].items() if k not in skip}
    return {**headers, "authorization": "Bearer ollama"}


def sse(text: str) -> list[tuple[str, Any]]:
    out = []
    for frame in text.split("\n\n")[:-1]:
        head, data = frame.split("\n")
        out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_claude_codes_first_request_streams_events(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    """Accept: application/json, stream: true, ?beta=true, a long anthropic-beta list, a system
    array with cache_control, tools with $schema, thinking adaptive, metadata: answered with
    the event stream, every event with its event: line."""
    fixture = capture("claude_code_01_post_v1_messages.json")
    upstream.models.append("qwen3-coder:30b")
    upstream.script(
        Script(
            chunks=[
                {"content": "I will write the file."},
                *calls(("call_cc1", "Bash", '{"command": "printf hello > proof.txt"}')),
            ],
            finish_reason="tool_calls",
        )
    )
    r = httpx.post(
        proxy.url + "/v1/messages",
        params=fixture["query"],
        headers=claude_code_headers(fixture),
        json=fixture["body"],
        timeout=10,
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    assert events[5][1]["content_block"]["name"] == "Bash"
    assert events[8][1]["delta"]["stop_reason"] == "tool_use"
    sent = upstream.last()["body"]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "system"]
    assert all("$schema" not in t["function"]["parameters"] for t in sent["tools"])


def test_claude_codes_second_turn_and_its_unstreamed_retry(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    """The turn that carries the tool's result (a thinking block with an empty signature, a
    tool_result with cache_control), streamed, and as Claude Code asks again without
    streaming when a stream failed it: a whole JSON message."""
    first = capture("claude_code_01_post_v1_messages.json")
    body = dict(first["body"])
    body["messages"] = [
        *body["messages"],
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "The user wants a file.", "signature": ""},
                {"type": "text", "text": "I will write the file."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "Bash",
                    "input": {"command": "printf hello > proof.txt"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "tool_use_id": "toolu_01",
                    "type": "tool_result",
                    "content": "(Bash completed with no output)",
                    "is_error": False,
                    "cache_control": {"type": "ephemeral"},
                }
            ],
        },
    ]
    upstream.models.append("qwen3-coder:30b")
    upstream.script(
        Script(chunks=[{"reasoning_content": "Done."}, {"content": "PROOF-OK"}]),
        Script(chunks=[{"content": "PROOF-OK"}]),
    )
    r = httpx.post(
        proxy.url + "/v1/messages?beta=true",
        headers=claude_code_headers(first),
        json=body,
        timeout=10,
    )
    events = sse(r.text)
    kinds = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert kinds == ["thinking", "text"]
    sent = upstream.last()["body"]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == "toolu_01"
    assert sent[-1] == {
        "role": "tool",
        "tool_call_id": "toolu_01",
        "content": "(Bash completed with no output)",
    }
    whole = httpx.post(
        proxy.url + "/v1/messages?beta=true",
        headers=claude_code_headers(first),
        json={**body, "stream": False},
        timeout=10,
    )
    assert whole.headers["content-type"].startswith("application/json")
    message = whole.json()
    assert (message["type"], message["stop_reason"]) == ("message", "end_turn")
    assert message["content"] == [{"type": "text", "text": "PROOF-OK"}]
