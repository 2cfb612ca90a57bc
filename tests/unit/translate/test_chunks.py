"""The one intake of chat-completion streams (translate/chunks.py), run through each dialect's
writer: the Ollama NDJSON stream, the Anthropic Messages stream and the Responses stream read a
backend's events the same way -- the same refusals, the same errors, the same completion rules --
because they share :class:`ChunkReader` (issue #13). Each case is one table row, checked in all
three dialects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from ollama_openai_bridge.errors import UpstreamProtocolError, UpstreamStatusError
from ollama_openai_bridge.translate.anthropic_answer import AnthropicStream
from ollama_openai_bridge.translate.chunks import ChunkReader, matched_stop
from ollama_openai_bridge.translate.response_items import Frame
from ollama_openai_bridge.translate.responses_stream import ResponsesStream
from ollama_openai_bridge.translate.stream import StreamTranslator

ECHO = {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True, "metadata": {}}


def _ollama(think_tags: bool = False) -> ChunkReader:
    return StreamTranslator(
        "m", generate=False, think=True, start_ns=0, clock=lambda: 1, think_tags=think_tags
    )


def _anthropic(think_tags: bool = False) -> ChunkReader:
    return AnthropicStream("m", "msg_1", stops=("END",), think_tags=think_tags)


def _responses(think_tags: bool = False) -> ChunkReader:
    return ResponsesStream(Frame("resp_1", 1767225600, "m", ECHO, {}, think_tags=think_tags))


DIALECTS: dict[str, Callable[..., ChunkReader]] = {
    "ollama": _ollama,
    "anthropic": _anthropic,
    "responses": _responses,
}


def _text(raw: bytes) -> str:
    """The answer text a dialect's bytes carry, whatever its framing."""
    out = []
    for line in raw.split(b"\n"):
        piece = line.removeprefix(b"data: ")
        if not piece.startswith(b"{"):
            continue
        obj = orjson.loads(piece)
        msg = obj.get("message")
        if isinstance(msg, dict) and msg.get("content"):
            out.append(msg["content"])  # Ollama
        delta = obj.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "text_delta":
            out.append(delta["text"])  # Anthropic
        if obj.get("type") == "response.output_text.delta":
            out.append(obj["delta"])  # Responses
    return "".join(out)


def _chunk(choice: Any = None, **extra: Any) -> str:
    body: dict[str, Any] = {"id": "c", **extra}
    if choice is not None:
        body["choices"] = [choice]
    return orjson.dumps(body).decode()


# (event data, the error class, a fragment of its message)
REFUSED = [
    ("not json", UpstreamProtocolError, "not JSON"),
    ("[1, 2]", UpstreamProtocolError, "not an object"),
    ('{"choices": ["x"]}', UpstreamProtocolError, "malformed"),
    (_chunk({"delta": {"tool_calls": {"id": "a"}}}), UpstreamProtocolError, "malformed"),
    (_chunk({"delta": {"content": 7}}), UpstreamProtocolError, "malformed"),
    (_chunk({"delta": {"content": "x"}, "finish_reason": 3}), UpstreamProtocolError, "malformed"),
    (_chunk(usage=[1]), UpstreamProtocolError, "malformed"),
    (_chunk(error={"message": "quota exceeded", "code": 429}), UpstreamStatusError, "quota"),
    # vLLM sends its error object as an event (vllm/entrypoints/openai/protocol.py ErrorResponse)
    (
        orjson.dumps({"object": "error", "message": "context too long", "code": 400}).decode(),
        UpstreamStatusError,
        "context too long",
    ),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("data", "kind", "words"), REFUSED)
def test_every_dialect_refuses_the_same_events(
    dialect: str, data: str, kind: type[Exception], words: str
) -> None:
    tr = DIALECTS[dialect]()
    with pytest.raises(kind) as caught:
        tr.feed(data)
    assert words in str(caught.value)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_reads_the_same_shapes(dialect: str) -> None:
    """A delta, typed content parts (Magistral), ``/v1/completions``' ``text`` and a whole
    ``message`` all give text; ``[DONE]`` and a finish make the stream finished; usage kept."""
    tr = DIALECTS[dialect]()
    out = tr.feed(_chunk({"index": 0, "delta": {"role": "assistant", "content": "a"}}))
    out += tr.feed(_chunk({"delta": {"content": [{"type": "text", "text": "b"}]}}))
    out += tr.feed(_chunk({"index": 0, "text": "c"}))
    out += tr.feed(_chunk({"message": {"content": "d"}}))
    ended = [tr.finished]
    out += tr.feed(_chunk({"delta": {}, "finish_reason": "stop"}))
    ended.append(tr.finished)
    out += tr.feed(_chunk(usage={"prompt_tokens": 3, "completion_tokens": 4}))
    assert tr.usage == {"prompt_tokens": 3, "completion_tokens": 4}
    said = [tr.done]
    assert tr.feed("[DONE]") == b""
    said.append(tr.done)
    assert ended == [False, True]  # a finish_reason ends the answer...
    assert said == [False, True]  # ...and [DONE] is told apart
    out += tr.finish()
    assert _text(out) == "abcd"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_assembles_tool_calls_alike(dialect: str) -> None:
    """Two parallel calls in fragments (OpenAI's indices) come out whole, once each, with their
    ids, in order; ``made`` records each one as written."""
    tr = DIALECTS[dialect]()
    frags = [
        {"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"x"'}},
        {"index": 0, "function": {"arguments": ": 1}"}},
        {"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}},
    ]
    for frag in frags:
        tr.feed(_chunk({"delta": {"tool_calls": [frag]}}))
    tr.feed(_chunk({"delta": {}, "finish_reason": "tool_calls"}))
    tr.finish()
    assert [(call.id, call.name, call.arguments) for call, _ in tr.made] == [
        ("call_a", "f", '{"x": 1}'),
        ("call_b", "g", "{}"),
    ]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_splits_think_tags_alike(dialect: str) -> None:
    """A profile with ``think_tags``: reasoning left in ``<think>`` tags never reaches the
    answer text, even with the closing tag cut across events and held to the end."""
    tr = DIALECTS[dialect](think_tags=True)
    out = tr.feed(_chunk({"delta": {"content": "<think>plan</th"}}))
    out += tr.feed(_chunk({"delta": {"content": "ink>Hi"}}))
    out += tr.feed(_chunk({"delta": {"content": " there</"}, "finish_reason": "stop"}))
    out += tr.finish()
    assert _text(out) == "Hi there</"
    assert b"plan" in out  # the reasoning, in the dialect's thinking field
    assert tr.adapted == ["reasoning split out of <think> tags in the content"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_completion_instead_of_a_stream(dialect: str) -> None:
    """A backend that ignored ``stream: true``: its one answer is read, or the error it is."""
    tr = DIALECTS[dialect]()
    whole = {"choices": [{"message": {"content": "whole"}, "finish_reason": "stop"}]}
    assert _text(tr.feed_completion(whole) + tr.finish()) == "whole"
    assert tr.done
    with pytest.raises(UpstreamStatusError, match="overloaded"):
        DIALECTS[dialect]().feed_completion({"error": {"message": "overloaded", "code": 503}})
    with pytest.raises(UpstreamProtocolError, match="not a completion"):
        DIALECTS[dialect]().feed_completion(
            {"choices": [{"message": {"content": 5}, "finish_reason": "stop"}]}
        )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_end_that_cannot_be_translated_quotes_what_was_left(
    dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing valid that ``feed`` let through should fail at the end; should a writer's end
    still raise a shape error, it is a 502 quoting the state left, never a 500."""

    def broken(_: Any) -> bytes:
        raise TypeError("a bug")

    tr = DIALECTS[dialect]()
    monkeypatch.setattr(type(tr), "_end", broken)
    tr.feed(_chunk({"delta": {"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f"}}]}}))
    tr.feed(_chunk({"delta": {}, "finish_reason": "length"}, usage={"prompt_tokens": 3}))
    with pytest.raises(UpstreamProtocolError, match="cannot be translated") as caught:
        tr.finish()
    assert "'finish_reason': 'length'" in str(caught.value)
    assert "'prompt_tokens': 3" in str(caught.value)


@pytest.mark.parametrize(
    ("choice", "stops", "expected"),
    [
        ({"stop_reason": "END"}, ("END",), "END"),  # vLLM, SGLang name it
        ({"stop_reason": 128009}, ("END",), None),  # a stop token's id
        ({"stop_reason": "END"}, (), None),  # none asked for
        ({}, ("END",), None),  # OpenAI does not say
        ({"stop_reason": "OTHER"}, ("END",), None),
    ],
)
def test_matched_stop(choice: dict[str, Any], stops: tuple[str, ...], expected: str | None) -> None:
    assert matched_stop(choice, stops) == expected


def test_the_reader_alone_has_no_dialect() -> None:
    with pytest.raises(NotImplementedError):
        ChunkReader("m", think=True).feed(_chunk({"delta": {"content": "x"}}))
    with pytest.raises(NotImplementedError):
        ChunkReader("m", think=True).finish()
