"""Tools, thinking, structured output, images, embeddings and generate extras, driven by the
official ``ollama`` SDK with its own types, against a fake upstream that validates like OpenAI."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

import httpx
import ollama
import pytest
from pydantic import BaseModel

from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

MODEL = "gpt-4o-mini"

CLIENT = "ollama-python 0.6 (PyPI)"
HI = [{"role": "user", "content": "Hello"}]


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The city name
    """
    return json.dumps({"city": city, "temp": {"Paris": 17, "Rome": 24}.get(city, 0)})


def weather_call_fragments(calls: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """OpenAI streams each call as: id+name first, then arguments in pieces, calls interleaved."""
    frags: list[dict[str, Any]] = []
    for i, (call_id, _city) in enumerate(calls):
        frags.append(
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        )
    for i, (_, city) in enumerate(calls):
        args = json.dumps({"city": city})
        frags.append({"tool_calls": [{"index": i, "function": {"arguments": args[:7]}}]})
    for i, (_, city) in enumerate(calls):
        args = json.dumps({"city": city})
        frags.append({"tool_calls": [{"index": i, "function": {"arguments": args[7:]}}]})
    return frags


def tool_message(calls: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": cid,
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
            }
            for cid, city in calls
        ],
    }


@pytest.mark.compat(CLIENT, "tools")
@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip_with_sdk_objects(
    client: ollama.Client, upstream: FakeUpstream, stream: bool
) -> None:
    first = [("call_p", "Paris"), ("call_r", "Rome")]
    second = [("call_x", "Oslo")]
    upstream.script(
        Script(
            chunks=weather_call_fragments(first),
            finish_reason="tool_calls",
            message=tool_message(first),
        ),
        Script(
            chunks=weather_call_fragments(second),
            finish_reason="tool_calls",
            message=tool_message(second),
        ),
        Script(chunks=[{"content": "Paris 17, Rome 24, Oslo 0."}]),
    )
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris, Rome, then Oslo?"}]
    for round_ in range(3):
        if stream:
            parts = list(
                client.chat(model=MODEL, messages=messages, tools=[get_weather], stream=True)
            )
            assert [p.done for p in parts].count(True) == 1
            calls = [c for p in parts for c in (p.message.tool_calls or [])]
            lines_with_calls = [p for p in parts if p.message.tool_calls]
            # Ollama's layout: each call on its own line (ollama/ollama#7836)
            assert all(len(p.message.tool_calls or []) == 1 for p in lines_with_calls)
            content = "".join(p.message.content or "" for p in parts)
            message = ollama.Message(role="assistant", content=content, tool_calls=calls or None)
        else:
            response = client.chat(model=MODEL, messages=messages, tools=[get_weather])
            message = response.message
            calls = list(message.tool_calls or [])
        if round_ < 2:
            expected = first if round_ == 0 else second
            assert [(c.function.name, c.function.arguments) for c in calls] == [
                ("get_weather", {"city": city}) for _, city in expected
            ]
            messages.append(message)  # the SDK's own Message object: ids are dropped by it
            for call in calls:
                messages.append(
                    {
                        "role": "tool",
                        "content": get_weather(**call.function.arguments),
                        "tool_name": call.function.name,
                    }
                )
        else:
            assert calls == []
            assert message.content == "Paris 17, Rome 24, Oslo 0."
    # What the backend saw on the last turn: a valid OpenAI history (the fake rejects anything else).
    sent = upstream.last()["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "assistant", "tool"]
    assert [tc["function"]["arguments"] for tc in sent[1]["tool_calls"]] == [
        '{"city":"Paris"}',
        '{"city":"Rome"}',
    ]
    assert [m["tool_call_id"] for m in sent[2:4]] == [tc["id"] for tc in sent[1]["tool_calls"]]
    assert sent[5]["tool_call_id"] == sent[4]["tool_calls"][0]["id"]
    assert json.loads(sent[3]["content"]) == {"city": "Rome", "temp": 24}
    assert upstream.last()["body"]["tools"][0]["function"]["name"] == "get_weather"


def test_tool_results_without_names_pair_by_position(
    client: ollama.Client, upstream: FakeUpstream
) -> None:
    # @langchain/ollama sends neither tool_call_id nor tool_name.
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "a", "arguments": {}}},
                {"function": {"name": "b", "arguments": {"x": 1}}},
            ],
        },
        {"role": "tool", "content": "A"},
        {"role": "tool", "content": "B"},
    ]
    assert client.chat(model=MODEL, messages=history).message.content == "Hello!"
    sent = upstream.last()["body"]["messages"]
    assert [(m["tool_call_id"], m["content"]) for m in sent[2:]] == [
        (tc["id"], c) for tc, c in zip(sent[1]["tool_calls"], "AB", strict=True)
    ]


@pytest.mark.compat(CLIENT, "thinking")
@pytest.mark.parametrize("stream", [False, True])
def test_think_true_returns_thinking(
    client: ollama.Client, upstream: FakeUpstream, stream: bool
) -> None:
    chunks = [{"reasoning_content": "17*3"}, {"reasoning_content": " = 51"}, {"content": "51"}]
    upstream.script(
        Script(
            chunks=chunks,
            message={"role": "assistant", "reasoning_content": "17*3 = 51", "content": "51"},
        )
    )
    if stream:
        parts = list(
            client.chat(
                model="qwen3:8b",
                messages=[{"role": "user", "content": "17*3?"}],
                think=True,
                stream=True,
            )
        )
        thinking = "".join(p.message.thinking or "" for p in parts)
        content = "".join(p.message.content or "" for p in parts)
    else:
        r = client.chat(
            model="qwen3:8b", messages=[{"role": "user", "content": "17*3?"}], think=True
        )
        thinking, content = r.message.thinking or "", r.message.content or ""
    assert (thinking, content) == ("17*3 = 51", "51")
    assert upstream.last()["body"]["reasoning_effort"] == "medium"


def test_think_false_and_levels(client: ollama.Client, upstream: FakeUpstream) -> None:
    upstream.script(Script(chunks=[{"reasoning_content": "hidden"}, {"content": "x"}]), Script())
    parts = list(
        client.chat(
            model="qwen3:8b", messages=[{"role": "user", "content": "q"}], think=False, stream=True
        )
    )
    assert all(p.message.thinking is None for p in parts)
    assert "reasoning_effort" not in upstream.last()["body"]
    client.chat(model="qwen3:8b", messages=[{"role": "user", "content": "q"}], think="high")
    assert upstream.last()["body"]["reasoning_effort"] == "high"


def test_think_on_a_model_that_does_not_think_is_not_sent(
    client: ollama.Client, upstream: FakeUpstream
) -> None:
    # OpenAI answers 400 to reasoning_effort on gpt-4o-mini; n8n sends think: true by default.
    assert (
        client.chat(
            model=MODEL, messages=[{"role": "user", "content": "q"}], think=True
        ).message.content
        == "Hello!"
    )
    assert "reasoning_effort" not in upstream.last()["body"]


def test_generate_think(client: ollama.Client, upstream: FakeUpstream) -> None:
    upstream.script(Script(chunks=[{"reasoning_content": "hmm"}, {"content": "ok"}]))
    parts = list(client.generate(model="qwen3:8b", prompt="q", think=True, stream=True))
    assert "".join(p.thinking or "" for p in parts) == "hmm"
    assert "".join(p.response or "" for p in parts) == "ok"


class Person(BaseModel):
    name: str
    age: int


@pytest.mark.compat(CLIENT, "structured output")
@pytest.mark.parametrize("stream", [False, True])
def test_format_pydantic_schema(
    client: ollama.Client, upstream: FakeUpstream, stream: bool
) -> None:
    answer = '{"name": "Ada", "age": 36}'
    upstream.script(Script(chunks=[{"content": answer[:10]}, {"content": answer[10:]}]))
    schema = Person.model_json_schema()
    if stream:
        text = "".join(
            p.message.content or ""
            for p in client.chat(
                model=MODEL,
                messages=[{"role": "user", "content": "Ada?"}],
                format=schema,
                stream=True,
            )
        )
    else:
        text = (
            client.chat(
                model=MODEL, messages=[{"role": "user", "content": "Ada?"}], format=schema
            ).message.content
            or ""
        )
    assert Person.model_validate_json(text) == Person(name="Ada", age=36)
    assert upstream.last()["body"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }


def test_format_json(client: ollama.Client, upstream: FakeUpstream) -> None:
    client.generate(model=MODEL, prompt="json please", format="json")
    assert upstream.last()["body"]["response_format"] == {"type": "json_object"}


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


JPEG = (
    bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffdb004300")
    + bytes(64)
    + bytes.fromhex("ffd9")
)


@pytest.mark.compat(CLIENT, "images")
def test_images_from_real_png_and_jpeg_bytes(client: ollama.Client, upstream: FakeUpstream) -> None:
    client.chat(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": "What is in these?",
                "images": [ollama.Image(value=png_bytes()), ollama.Image(value=JPEG)],
            }
        ],
    )
    parts = upstream.last()["body"]["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "What is in these?"}
    assert (
        parts[1]["image_url"]["url"]
        == "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    )
    assert (
        parts[2]["image_url"]["url"] == "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()
    )
    client.generate(model=MODEL, prompt="and this?", images=[png_bytes()])
    assert upstream.last()["body"]["messages"][0]["content"][1]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )


def test_invalid_image_is_400(proxy: ProxyServer) -> None:
    # The SDK refuses bad images itself; other clients (n8n, curl) send them.
    r = httpx.post(
        proxy.url + "/api/chat",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "x", "images": ["not base64!"]}],
        },
    )
    assert r.status_code == 400
    assert r.json()["error"].startswith("invalid image at messages.0.images.0: not valid base64")


@pytest.mark.compat(CLIENT, "embeddings")
def test_embed_batch_and_single(client: ollama.Client, upstream: FakeUpstream) -> None:
    r = client.embed(model="text-embedding-3-small", input=["alpha", "beta"], dimensions=3)
    assert list(r.embeddings) == [
        pytest.approx([0.6, 0.8, 0.0]),
        pytest.approx([3 / 34**0.5, 5 / 34**0.5, 0.0]),
    ]
    assert r.prompt_eval_count == 6
    assert upstream.last("/v1/embeddings")["body"] == {
        "model": "text-embedding-3-small",
        "input": ["alpha", "beta"],
        "encoding_format": "float",
        "dimensions": 3,
    }
    single = client.embed(model="text-embedding-3-small", input="alpha")
    assert len(single.embeddings) == 1
    assert client.embed(model="text-embedding-3-small", input=[]).embeddings == []


@pytest.mark.compat(CLIENT, "embeddings")
def test_embeddings_legacy_not_normalised(client: ollama.Client) -> None:
    assert client.embeddings(model="text-embedding-3-small", prompt="alpha").embedding == [
        3.0,
        4.0,
        0.0,
    ]
    assert client.embeddings(model="text-embedding-3-small", prompt="").embedding == []


def test_embed_errors(client: ollama.Client, upstream: FakeUpstream) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(model="nope", input="x")
    assert (info.value.status_code, info.value.error) == (
        404,
        'model "nope" not found, try pulling it first',
    )
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(model="text-embedding-3-small", input=["ok", ""])
    assert (info.value.status_code, info.value.error) == (
        400,
        "input 1 is an empty string; it cannot be embedded",
    )
    upstream.script(Script(status=500, error="down"))
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(model="text-embedding-3-small", input="x")
    assert info.value.status_code == 502


@pytest.mark.parametrize("stream", [False, True])
def test_generate_suffix_uses_completions(
    client: ollama.Client, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.script(Script(chunks=[{"content": "a + "}, {"content": "b"}]))
    if stream:
        text = "".join(
            p.response or ""
            for p in client.generate(
                model=MODEL, prompt="def add(a, b):\n    return ", suffix="\n", stream=True
            )
        )
    else:
        text = (
            client.generate(model=MODEL, prompt="def add(a, b):\n    return ", suffix="\n").response
            or ""
        )
    assert text == "a + b"
    sent = upstream.last("/v1/completions")["body"]
    assert (sent["prompt"], sent["suffix"], sent["max_tokens"]) == (
        "def add(a, b):\n    return ",
        "\n",
        2048,
    )


def test_generate_raw_falls_back_to_chat_without_completions(
    client: ollama.Client, upstream: FakeUpstream
) -> None:
    assert client.generate(model=MODEL, prompt="<|user|>hi", raw=True).response == "Hello!"
    assert upstream.last("/v1/completions")["body"]["prompt"] == "<|user|>hi"
    upstream.completions_supported = False
    assert client.generate(model=MODEL, prompt="<|user|>hi", raw=True).response == "Hello!"
    assert upstream.last()["body"]["messages"] == [{"role": "user", "content": "<|user|>hi"}]
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model=MODEL, prompt="x", suffix="y")
    assert info.value.status_code == 400
    assert info.value.error == (
        "suffix (fill-in-the-middle) needs the backend's /v1/completions, which it does not offer "
        "for this model: This is a chat model and not supported in the v1/completions endpoint. "
        "Did you mean to use v1/chat/completions?"
    )


def test_raw_with_system_is_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model=MODEL, prompt="x", raw=True, system="s")
    assert (info.value.status_code, info.value.error) == (
        400,
        "raw mode does not support template, system, or context",
    )


# --- generate's context (issue #17) ----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_generate_context_continues_the_conversation(
    client: ollama.Client, upstream: FakeUpstream, stream: bool
) -> None:
    # Ollama returns context on the final answer (not raw); sent back, the conversation goes
    # on (routes.go GenerateHandler). Here it is restored as chat history, with no state kept.
    def ask(prompt: str, context: list[int] | None = None, **kw: Any) -> Any:
        if stream:
            parts = client.generate(model=MODEL, prompt=prompt, context=context, stream=True, **kw)
            return list(parts)[-1]
        return client.generate(model=MODEL, prompt=prompt, context=context, **kw)

    upstream.script(
        Script(chunks=[{"content": "Blue."}]),
        Script(chunks=[{"content": "Red at sunset."}]),
        Script(chunks=[{"content": "Yes."}]),
    )
    first = ask("Sky colour?", system="One line.")
    assert first.context
    assert all(isinstance(v, int) and 0 <= v < 2**24 for v in first.context)
    second = ask("And at dusk?", list(first.context))
    assert upstream.last()["body"]["messages"] == [
        {"role": "system", "content": "One line."},
        {"role": "user", "content": "Sky colour?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And at dusk?"},
    ]
    ask("Sure?", list(second.context))
    assert [m["content"] for m in upstream.last()["body"]["messages"]] == [
        "One line.",
        "Sky colour?",
        "Blue.",
        "And at dusk?",
        "Red at sunset.",
        "Sure?",
    ]


def test_a_context_the_proxy_did_not_issue_is_a_400(
    client: ollama.Client, upstream: FakeUpstream
) -> None:
    context = list(client.generate(model=MODEL, prompt="hi").context or [])
    for bad in ([*context[:-1], context[-1] ^ 1], [128000, 882, 271], [-5], [2**40]):
        with pytest.raises(ollama.ResponseError) as info:
            client.generate(model=MODEL, prompt="again", context=bad)
        assert info.value.status_code == 400
        assert info.value.error.startswith("invalid context: this proxy did not issue it")
        assert "send the request again without it" in info.value.error
    assert len([e for e in upstream.journal if e["path"] == "/v1/chat/completions"]) == 1


def test_no_context_in_raw_mode_and_none_sent_to_fill_in_the_middle(
    client: ollama.Client, upstream: FakeUpstream
) -> None:
    assert client.generate(model=MODEL, prompt="<|user|>hi", raw=True).context is None
    context = list(client.generate(model=MODEL, prompt="hi").context or [])
    fim = client.generate(model=MODEL, prompt="def f(", suffix=")", context=context)
    assert upstream.last("/v1/completions")["body"]["prompt"] == "def f("  # history not in it
    assert fim.context  # the exchange is recorded, as Ollama returns context for suffix too
    assert (
        client.chat(model=MODEL, messages=[{"role": "user", "content": "x"}]).get("context") is None
    )


def test_contexts_need_the_same_key_across_instances(upstream: FakeUpstream) -> None:
    # Unset CONTEXT_SIGNING_KEY: a key per start, so another instance (or a restart) refuses
    # the context with a 400 telling the client what to do; a shared key keeps it valid.
    key = "0123456789abcdef" * 4

    def generate(server: ProxyServer, **kw: Any) -> Any:
        with ollama.Client(host=server.url) as c:
            return c.generate(model=MODEL, **kw)

    with ProxyServer(settings_for(upstream.url)) as a, ProxyServer(settings_for(upstream.url)) as b:
        context = generate(a, prompt="hi").context
        with pytest.raises(ollama.ResponseError) as info:
            generate(b, prompt="again", context=context)
        assert "before the proxy restarted or by another instance" in info.value.error
    with (
        ProxyServer(settings_for(upstream.url, context_signing_key=key)) as a,
        ProxyServer(settings_for(upstream.url, context_signing_key=key)) as b,
    ):
        context = generate(a, prompt="hi").context
        assert generate(b, prompt="again", context=context).done
        assert upstream.last()["body"]["messages"][0] == {"role": "user", "content": "hi"}


def _lp_chunk(text: str, logprob: float, alt: str) -> str:
    # An OpenAI chunk with its tokens' log probabilities (openai-python ChoiceLogprobs)
    entry = {
        "token": text,
        "logprob": logprob,
        "bytes": list(text.encode()),
        "top_logprobs": [
            {"token": text, "logprob": logprob, "bytes": None},
            {"token": alt, "logprob": logprob - 2, "bytes": None},
        ],
    }
    choice = {"index": 0, "delta": {"content": text}, "logprobs": {"content": [entry]}}
    return json.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [choice]})


@pytest.mark.compat(CLIENT, "logprobs")
@pytest.mark.parametrize("stream", [True, False])
def test_logprobs_reach_the_sdk(
    client: ollama.Client, upstream: FakeUpstream, stream: bool
) -> None:
    """ollama-python 0.6 reads ``logprobs`` (Ollama 0.12.11): the backend's log probabilities,
    per streamed line and whole, with the alternatives asked for."""
    if stream:
        upstream.script(Script(chunks=[_lp_chunk("Hel", -0.25, "He"), _lp_chunk("lo", -0.5, "l")]))
        parts = list(
            client.chat(model=MODEL, messages=HI, logprobs=True, top_logprobs=2, stream=True)
        )
        got = [lp for p in parts for lp in (p.logprobs or [])]
    else:
        entry = json.loads(_lp_chunk("Hello", -0.25, "Hi"))["choices"][0]["logprobs"]
        body = {
            "id": "c",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello"},
                    "finish_reason": "stop",
                    "logprobs": entry,
                }
            ],
        }
        upstream.script(Script(json_body=body))
        got = list(
            client.chat(model=MODEL, messages=HI, logprobs=True, top_logprobs=2).logprobs or []
        )
    assert [(lp.token, lp.logprob) for lp in got] == (
        [("Hel", -0.25), ("lo", -0.5)] if stream else [("Hello", -0.25)]
    )
    assert [len(lp.top_logprobs or []) for lp in got] == [2] * len(got)
    sent = upstream.last()["body"]
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
