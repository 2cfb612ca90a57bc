"""Backends' answer shapes, read through the proxy by the real ollama SDK (issue #16).

Each test makes a fake answer the way its backend documents or was observed to (the source is
named), and checks what an Ollama client gets: streamed and not, parallel tool calls, reasoning,
errors. The cross-turn tests run the ollama SDK's own tool example, whose Message objects drop
each call's id."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import ollama
import pytest

from tests.backends import FakeBackend
from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

HI = [{"role": "user", "content": "What is 2 + 2?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def sdk(proxy: ProxyServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=proxy.url) as client:
        yield client


# --- Mistral: typed content parts and 9-character tool-call ids -------------------------------

# docs.mistral.ai (reasoning, Magistral): content is a list of typed parts, the thinking part
# itself a list of text chunks.
PARTS = [
    {"type": "thinking", "thinking": [{"type": "text", "text": "Two plus two."}]},
    {"type": "text", "text": "The answer is 4."},
]


def test_magistral_typed_parts_not_streamed(upstream: FakeUpstream, sdk: ollama.Client) -> None:
    body = {
        "id": "x",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": PARTS},
                "finish_reason": "stop",
            }
        ],
    }
    upstream.script(Script(json_body=body))
    out = sdk.chat(model="gpt-4o-mini", messages=HI, think=True)  # would not validate: a list
    assert out.message.content == "The answer is 4."
    assert out.message.thinking == "Two plus two."


def test_magistral_typed_parts_streamed(upstream: FakeUpstream, sdk: ollama.Client) -> None:
    upstream.script(Script(chunks=[{"content": [PARTS[0]]}, {"content": [PARTS[1]]}]))
    parts = list(sdk.chat(model="gpt-4o-mini", messages=HI, think=True, stream=True))
    assert "".join(p.message.content or "" for p in parts) == "The answer is 4."
    assert "".join(p.message.thinking or "" for p in parts) == "Two plus two."


@pytest.fixture
def mistral_proxy(fake: Callable[[str], FakeBackend]) -> Iterator[tuple[FakeBackend, str]]:
    backend = fake("mistral")
    with ProxyServer(settings_for(backend.url, backend_profile="mistral")) as server:
        yield backend, server.url


def mistral_calls() -> Script:
    # Mistral's own ids are 9 letters and digits (docs.mistral.ai function calling).
    return Script(
        chunks=[
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": f'{{"city": "{c}"}}'},
                    }
                    for i, (call_id, c) in enumerate(
                        [("D681PevKs", "Paris"), ("x7Yq2Lm9Q", "Rome")]
                    )
                ]
            }
        ],
        finish_reason="tool_calls",
    )


@pytest.mark.parametrize("stream", [True, False])
def test_mistral_tool_round_trip_gets_its_own_ids_back(
    mistral_proxy: tuple[FakeBackend, str], stream: bool
) -> None:
    """The ollama SDK's tool example against Mistral, which refuses any other id than 9 letters
    and digits ("Tool call id was call_1_0 but must be ..."): its own ids come back."""
    backend, url = mistral_proxy
    backend.script(mistral_calls(), Script(chunks=[{"content": "Both 18 C."}]))
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    with ollama.Client(host=url) as client:
        if stream:
            parts = list(
                client.chat(
                    model="mistral-small-latest", messages=messages, tools=[WEATHER], stream=True
                )
            )
            calls = [c for p in parts for c in (p.message.tool_calls or [])]
            messages.append(ollama.Message(role="assistant", content="", tool_calls=calls))
        else:
            msg = client.chat(model="mistral-small-latest", messages=messages, tools=[WEATHER])
            calls = list(msg.message.tool_calls or [])
            messages.append(msg.message)
        for call in calls:
            messages.append({"role": "tool", "content": "18 C", "tool_name": call.function.name})
        out = client.chat(model="mistral-small-latest", messages=messages, tools=[WEATHER])
    assert out.message.content == "Both 18 C."
    sent = backend.last()["body"]["messages"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == ["D681PevKs", "x7Yq2Lm9Q"]
    assert [m["tool_call_id"] for m in sent[2:4]] == ["D681PevKs", "x7Yq2Lm9Q"]
    assert not [e for e in backend.journal if e.get("refused")]


def test_mistral_history_without_ids_gets_ids_it_accepts(
    mistral_proxy: tuple[FakeBackend, str],
) -> None:
    """A history the proxy never saw (another proxy made the calls, or a restart): made-up ids,
    of the only form Mistral takes."""
    backend, url = mistral_proxy
    backend.script(Script(chunks=[{"content": "18 C."}]))
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "18 C", "tool_name": "get_weather"},
    ]
    with ollama.Client(host=url) as client:
        out = client.chat(model="mistral-small-latest", messages=history, tools=[WEATHER])
    assert out.message.content == "18 C."
    assert not [e for e in backend.journal if e.get("refused")]


# --- errors in the backend's own shapes -------------------------------------------------------


def error_of(call: Callable[[], Any]) -> ollama.ResponseError:
    with pytest.raises(ollama.ResponseError) as info:
        call()
    return info.value


@pytest.mark.parametrize("stream", [True, False])
def test_geminis_list_wrapped_unknown_model_is_a_404(
    fake: Callable[[str], FakeBackend], stream: bool
) -> None:
    backend = fake("gemini")
    # Observed: the OpenAI-compatible endpoint answers a JSON array of Google errors
    # (discuss.ai.google.dev/t/117875).
    backend.script(
        Script(
            status=404,
            error=[
                {
                    "error": {
                        "code": 404,
                        "message": "models/gemini-9 is not found for API version v1main",
                        "status": "NOT_FOUND",
                    }
                }
            ],
        )
    )
    with (
        ProxyServer(settings_for(backend.url, backend_profile="gemini")) as server,
        ollama.Client(host=server.url) as client,
    ):
        err = error_of(lambda: list(client.chat(model="gemini-9", messages=HI, stream=stream)))
    assert err.status_code == 404
    assert "not found" in err.error


def test_a_cdns_html_error_page_becomes_its_title(
    upstream: FakeUpstream, sdk: ollama.Client
) -> None:
    page = (
        b"<!DOCTYPE html><html><head><title>502 Bad Gateway | cloudflare</title>"
        + b"<style>"
        + b"x" * 1000
        + b"</style></head><body>...</body></html>"
    )
    # every attempt (a 502 is retried) gets the page
    upstream.faults.append(
        (lambda path, _: path.endswith("/chat/completions"), Script(status=502, error=page))
    )
    err = error_of(lambda: sdk.chat(model="gpt-4o-mini", messages=HI))
    assert err.status_code == 502
    assert "502 Bad Gateway | cloudflare" in err.error
    assert "<style>" not in err.error
    assert len(err.error) < 300


def test_model_not_found_by_code_under_another_status_is_a_404(
    upstream: FakeUpstream, sdk: ollama.Client
) -> None:
    # Gateways (OpenRouter, LiteLLM) say it with a 400 and the code.
    upstream.script(
        Script(
            status=400,
            error={"error": {"message": "No such model: nope", "code": "model_not_found"}},
        )
    )
    err = error_of(lambda: sdk.chat(model="gpt-4o-mini", messages=HI))
    assert err.status_code == 404


@pytest.mark.parametrize("stream", [True, False])
def test_an_error_finish_is_an_error_not_a_complete_answer(
    upstream: FakeUpstream, sdk: ollama.Client, stream: bool
) -> None:
    # OpenRouter ends an answer a provider failed with finish_reason "error".
    upstream.script(Script(chunks=[{"content": "The answer is"}], finish_reason="error"))
    if stream:
        parts: list[Any] = []
        with pytest.raises(ollama.ResponseError, match="finish_reason 'error'"):
            parts.extend(sdk.chat(model="gpt-4o-mini", messages=HI, stream=True))
        assert not [p for p in parts if p.done]  # never a done line
    else:
        err = error_of(lambda: sdk.chat(model="gpt-4o-mini", messages=HI))
        assert err.status_code == 502


def test_a_200_answer_that_is_only_an_error(upstream: FakeUpstream, sdk: ollama.Client) -> None:
    upstream.script(Script(json_body={"error": {"message": "provider overloaded", "code": 503}}))
    err = error_of(lambda: sdk.chat(model="gpt-4o-mini", messages=HI))
    assert "provider overloaded" in err.error
    assert err.status_code >= 500


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(lambda ids: [{"id": i} for i in ids], id="bare-array"),
        pytest.param(lambda ids: {"models": [{"id": i} for i in ids]}, id="models-key"),
    ],
)
def test_model_lists_in_other_shapes_are_listed(
    upstream: FakeUpstream, body: Callable[[list[str]], Any]
) -> None:
    upstream.faults.append(
        (lambda path, _: path.endswith("/models"), Script(json_body=body(["m-one", "m-two"])))
    )
    with ProxyServer(settings_for(upstream.url)) as server, ollama.Client(host=server.url) as c:
        names = [m.model for m in c.list().models]
    assert {"m-one", "m-two"} <= {n.removesuffix(":latest") for n in names if n}


def test_reasoning_and_parallel_calls_in_one_stream(
    upstream: FakeUpstream, sdk: ollama.Client
) -> None:
    """vLLM/DeepSeek reasoning_content, then two calls in OpenAI's fragments: thinking, then
    each call on its own line, in order, with ids and positions."""
    upstream.script(
        Script(
            chunks=[
                {"reasoning_content": "Two cities: two calls."},
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":'},
                        }
                    ]
                },
                {"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]},
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                        }
                    ]
                },
            ],
            finish_reason="tool_calls",
        )
    )
    parts = list(
        sdk.chat(model="gpt-4o-mini", messages=HI, tools=[WEATHER], think=True, stream=True)
    )
    assert "".join(p.message.thinking or "" for p in parts) == "Two cities: two calls."
    with_calls = [p for p in parts if p.message.tool_calls]
    assert [len(p.message.tool_calls or []) for p in with_calls] == [1, 1]
    assert [c.function.arguments for p in with_calls for c in p.message.tool_calls or []] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    assert parts[-1].done
    assert parts[-1].done_reason == "stop"
