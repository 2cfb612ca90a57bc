from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_openai_bridge.access import AccessRecord
from ollama_openai_bridge.errors import Redactor, UpstreamProtocolError, UpstreamStatusError
from ollama_openai_bridge.render import Dialect, Renderer
from ollama_openai_bridge.sse import SSEEvent
from ollama_openai_bridge.streams import _ndjson
from ollama_openai_bridge.translate import stream
from ollama_openai_bridge.translate.stream import StreamTranslator
from tests.conftest import contract

ILLUSTRATIVE = {
    "created_at",
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
}


def translator(model: str = "m", *, generate: bool = False, think: bool = True) -> StreamTranslator:
    ticks = itertools.count(1_000, 1_000)  # a clock advancing 1 µs per read
    return StreamTranslator(
        model,
        generate=generate,
        think=think,
        start_ns=0,
        clock=lambda: next(ticks),
        wall=lambda: 1_767_225_600_123_000_000,
    )


def run(tr: StreamTranslator, events: list[Any]) -> list[dict[str, Any]]:
    out = b""
    for ev in events:
        out += tr.feed(ev if isinstance(ev, str) else orjson.dumps(ev).decode())
    out += tr.finish()
    assert out.endswith(b"\n")
    assert b"\n\n" not in out  # no blank lines, ever
    return [json.loads(line) for line in out.decode().split("\n")[:-1]]


def line_calls(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every tool call of a stream, in order, checking Ollama's layout: one call per line
    (ollama/ollama#7836), ``function.index`` its position in the turn."""
    calls = []
    for line in lines:
        got = line.get("message", {}).get("tool_calls")
        if got:
            assert len(got) == 1
            assert line["done"] is False
            assert line["message"]["content"] == ""
            calls.extend(got)
    assert [c["function"]["index"] for c in calls] == list(range(len(calls)))
    return calls


def strip(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in line.items() if k not in ILLUSTRATIVE} for line in lines]


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
        **extra,
    }


USAGE = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4}}


def test_golden_fragmented_parallel_tool_calls() -> None:
    fx = contract("mapping_chat_tools_roundtrip.json")
    lines = run(translator(fx["ollama_request"]["model"]), fx["openai_stream"])
    assert strip(lines) == strip(fx["expected_ollama_lines"])
    final = lines[-1]
    assert {"total_duration", "prompt_eval_duration", "eval_duration"} <= final.keys()


def test_load_duration_is_arrival_to_the_request_leaving() -> None:
    # Ollama's final line always carries load_duration (api/types.go Metrics); here it is
    # the time before the request left for the backend, and prompt evaluation starts then.
    tr = translator()  # the clock reads 1000, 2000, ... and the request arrived at 0
    tr.sent(500)
    final = run(tr, [chunk({"content": "hi"}), chunk(finish="stop"), USAGE, "[DONE]"])[-1]
    assert final["load_duration"] == 500
    assert final["prompt_eval_duration"] == 1_000 - 500  # the first token at 1000
    assert final["total_duration"] == 2_000
    assert list(final)[5:7] == ["total_duration", "load_duration"]
    unsent = run(translator(), [chunk({"content": "hi"}), chunk(finish="stop")])[-1]
    assert "load_duration" not in unsent  # no time known: omitted, as Ollama omits a zero


def test_a_generate_stream_ends_with_the_context_of_the_whole_answer() -> None:
    # Ollama: the final generate line carries context (prompt and answer), after done_reason.
    seen: list[str] = []

    def context_of(text: str, notes: list[str]) -> list[int]:
        seen.append(text)
        notes.append("noted")
        return [7, 8, 9]

    tr = StreamTranslator(
        "m", generate=True, think=True, start_ns=0, context_of=context_of, wall=lambda: 0
    )
    events = [
        chunk({"reasoning_content": "hmm"}),  # reasoning is not part of the answer text
        chunk({"content": "Gr"}),
        chunk({"content": "een."}, finish="stop"),
        "[DONE]",
    ]
    final = run(tr, events)[-1]
    assert seen == ["Green."]
    assert list(final)[:7] == [
        "model",
        "created_at",
        "response",
        "done",
        "done_reason",
        "context",
        "total_duration",
    ]
    assert final["context"] == [7, 8, 9]
    assert tr.notes == ["noted"]
    chat = run(translator(), [chunk({"content": "x"}, finish="stop")])[-1]
    assert "context" not in chat


def test_golden_basic_stream_shape() -> None:
    fx = contract("chat_stream_basic.json")
    events: list[Any] = [chunk({"role": "assistant", "content": ""})]
    events += [
        chunk({"content": line["message"]["content"]}) for line in fx["response"]["lines"][:-1]
    ]
    events += [
        chunk(finish="stop"),
        {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4}},
        "[DONE]",
    ]
    lines = run(translator("llama3.2"), events)
    assert strip(lines) == strip(fx["response"]["lines"])
    # Metrics only on the final line (@langchain/ollama sums counts over all lines).
    assert all("eval_count" not in line for line in lines[:-1])
    assert (
        lines[-1]["total_duration"]
        == lines[-1]["prompt_eval_duration"] + lines[-1]["eval_duration"] + 1_000
    )


def test_golden_thinking_stream() -> None:
    fx = contract("chat_stream_thinking.json")
    events = [
        chunk({"role": "assistant"}),
        chunk({"reasoning_content": "17*3 = 51."}),
        chunk({"reasoning": " Double-check: 10*3+7*3=51."}),  # OpenRouter's field name
        chunk({"content": "17 × 3 = 51", "reasoning_content": ""}),
        chunk(finish="stop"),
        {"choices": [], "usage": {"prompt_tokens": 15, "completion_tokens": 38}},
    ]
    assert strip(run(translator("qwen3:8b"), events)) == strip(fx["response"]["lines"])


def test_think_false_drops_reasoning_and_never_sends_empty_thinking() -> None:
    events = [
        chunk({"reasoning_content": "hmm"}),
        chunk({"content": "A", "reasoning_content": ""}),
        chunk(finish="stop"),
    ]
    lines = run(translator(think=False), events)
    assert [line["message"] for line in lines] == [
        {"role": "assistant", "content": "A"},
        {"role": "assistant", "content": ""},
    ]


def test_golden_length_finish() -> None:
    fx = contract("chat_stream_length.json")
    events = [
        chunk({"content": "1,"}),
        chunk({"content": " 2,"}),
        chunk({"content": " 3"}),
        chunk(finish="length"),
        {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}},
    ]
    assert strip(run(translator("llama3.2"), events)) == strip(fx["response"]["lines"])


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "stop"),
        ("function_call", "stop"),
        ("content_filter", "stop"),
        (None, "stop"),
        ("weird", "stop"),
    ],
)
def test_finish_reason_mapping(finish: str | None, reason: str) -> None:
    lines = run(translator(), [chunk({"content": "x"}, finish)])
    assert lines[-1]["done_reason"] == reason
    assert [line["done"] for line in lines] == [False, True]


def test_generate_lines_have_response_and_empty_final_response() -> None:
    fx = contract("generate_stream.json")
    events = [
        chunk({"content": "Teal"}),
        chunk({"content": "."}),
        chunk(finish="stop"),
        {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2}},
    ]
    assert strip(run(translator("llama3.2", generate=True), events)) == strip(
        fx["response"]["lines"]
    )


def test_generate_thinking() -> None:
    lines = run(
        translator(generate=True), [chunk({"reasoning_content": "r"}), chunk({"content": "c"})]
    )
    assert lines[0]["thinking"] == "r"
    assert lines[0]["response"] == ""
    assert "thinking" not in lines[1]


def test_tool_call_arguments_split_mid_token_ids_only_first_interleaved() -> None:
    events = [
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "search", "arguments": ""},
                    }
                ]
            }
        ),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"i'},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q": "caf'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": 'd": 4'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'é\\u00e9"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]}),
        chunk(finish="tool_calls"),
    ]
    lines = run(translator(), events)
    assert len(lines) == 3  # one line per call, then the done line
    assert line_calls(lines) == [
        {"id": "call_a", "function": {"index": 0, "name": "search", "arguments": {"q": "caféé"}}},
        {"id": "call_b", "function": {"index": 1, "name": "lookup", "arguments": {"id": 42}}},
    ]
    assert lines[2]["done_reason"] == "stop"


def test_tool_call_without_id_gets_unique_ids_and_bad_arguments_are_kept() -> None:
    tr = translator()
    events = [
        chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{not json"}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"name": "f", "arguments": "[1]"}}]}),
        chunk({"tool_calls": [{"index": 2, "function": {"name": "g"}}]}),
    ]
    calls = line_calls(run(tr, events))
    assert calls[0]["function"]["arguments"] == {"__raw_arguments": "{not json"}
    assert calls[1]["function"]["arguments"] == {"__raw_arguments": "[1]"}
    assert calls[2]["function"]["arguments"] == {}
    ids = [c["id"] for c in calls]
    assert len(set(ids)) == 3
    assert all(i.startswith("call_") and len(i) == 13 for i in ids)
    assert len(tr.notes) == 2


def test_content_before_tool_calls_is_streamed() -> None:
    lines = run(
        translator(),
        [
            chunk({"content": "Let me check."}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "x", "function": {"name": "f", "arguments": "{}"}}
                    ]
                }
            ),
        ],
    )
    assert [line["message"].get("tool_calls") is not None for line in lines] == [False, True, False]


def test_usage_inside_last_choice_chunk() -> None:
    lines = run(
        translator(),
        [chunk({"content": "x"}, "stop", usage={"prompt_tokens": 3, "completion_tokens": 1})],
    )
    assert (lines[-1]["prompt_eval_count"], lines[-1]["eval_count"]) == (3, 1)


def test_no_usage_means_no_counts() -> None:
    lines = run(translator(), [chunk({"content": "x"})])
    assert "prompt_eval_count" not in lines[-1]
    assert "eval_count" not in lines[-1]


def test_role_only_and_empty_chunks_emit_nothing() -> None:
    tr = translator()
    assert tr.feed(orjson.dumps(chunk({"role": "assistant", "content": ""})).decode()) == b""
    assert tr.feed(orjson.dumps(chunk({"content": None})).decode()) == b""
    assert tr.feed(orjson.dumps({"choices": []}).decode()) == b""
    assert tr.feed(orjson.dumps({"choices": [{"index": 0}]}).decode()) == b""


def test_done_marker_sets_done() -> None:
    tr = translator()
    assert tr.feed("[DONE]") == b""
    assert tr.done


def test_model_name_echoed_verbatim_and_escaped() -> None:
    lines = run(translator('we"ird\u2028:latest'), [chunk({"content": "a\u2029b"})])
    assert all(line["model"] == 'we"ird\u2028:latest' for line in lines)
    assert lines[0]["message"]["content"] == "a\u2029b"


def test_text_lines_equal_generic_encoding() -> None:
    # The hand-built fast path must be byte-identical to encoding the dict.
    tr = translator("m")
    raw = tr.feed(orjson.dumps(chunk({"content": "hé\u2028", "reasoning_content": "t"})).decode())
    expected = {
        "model": "m",
        "created_at": "2026-01-01T00:00:00.123Z",
        "message": {"role": "assistant", "content": "hé\u2028", "thinking": "t"},
        "done": False,
    }
    assert raw == orjson.dumps(expected).replace("\u2028".encode(), b"\\u2028") + b"\n"


def test_invalid_json_event_is_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        translator().feed("{nope")
    with pytest.raises(UpstreamProtocolError, match="not an object"):
        translator().feed("[1, 2]")


def test_error_object_in_stream_raises_mapped_error() -> None:
    with pytest.raises(UpstreamStatusError) as info:
        translator().feed('{"error": {"message": "overloaded", "code": 503}}')
    assert info.value.status == 502
    assert "overloaded" in info.value.message
    with pytest.raises(UpstreamStatusError) as info2:
        translator().feed('{"error": {"message": "bad things"}}')
    assert info2.value.message == "upstream error: bad things"


def test_feed_completion_for_backends_that_ignore_stream() -> None:
    tr = translator()
    out = tr.feed_completion(
        {
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "all at once",
                        "tool_calls": [
                            {
                                "id": "t",
                                "type": "function",
                                "function": {"name": "f", "arguments": '{"a":1}'},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3},
        }
    )
    assert tr.done
    lines = [json.loads(x) for x in (out + tr.finish()).decode().splitlines()]
    assert lines[0]["message"]["content"] == "all at once"
    assert lines[1]["message"]["tool_calls"] == [
        {"id": "t", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}}
    ]
    assert lines[2]["eval_count"] == 3


def test_generate_drops_tool_calls_with_note() -> None:
    tr = translator(generate=True)
    lines = run(
        tr,
        [
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "x", "function": {"name": "f", "arguments": "{}"}}
                    ]
                }
            )
        ],
    )
    assert len(lines) == 1
    assert tr.notes


# --- wrong shapes: refused, never relayed nor left to fail in finish() -----------------------


def event(choice: dict[str, Any], **extra: Any) -> str:
    """One event with ``choice`` as its only choice, encoded as a backend sends it."""
    return orjson.dumps({"choices": [{"index": 0, **choice}], **extra}).decode()


def call(**fields: Any) -> dict[str, Any]:
    return {"delta": {"tool_calls": [{"index": 0, **fields}]}}


# (event, the fragment its error must quote). Every value here is the wrong type for its field.
WRONG_SHAPES = {
    "finish_reason object": (event({"delta": {}, "finish_reason": {"x": 1}}), '{"x":1}'),
    "finish_reason list": (event({"delta": {}, "finish_reason": ["stop"]}), '["stop"]'),
    "finish_reason number": (event({"delta": {}, "finish_reason": 1}), '"finish_reason":1'),
    "finish_reason empty list": (event({"delta": {}, "finish_reason": []}), '"finish_reason":[]'),
    "usage list": ('{"choices":[],"usage":[11,4]}', '"usage":[11,4]'),
    "usage string": ('{"choices":[],"usage":"lots"}', '"usage":"lots"'),
    "usage list beside a choice": (event({"delta": {}}, usage=[1]), '"usage":[1]'),
    "content object": (event({"delta": {"content": {"a": 1}}}), '"content":{"a":1}'),
    "content list": (event({"delta": {"content": ["a"]}}), '"content":["a"]'),
    "content number": (event({"delta": {"content": 5}}), '"content":5'),
    "content false": (event({"delta": {"content": False}}), '"content":false'),
    "reasoning_content object": (
        event({"delta": {"reasoning_content": {"a": 1}}}),
        '"reasoning_content":{"a":1}',
    ),
    "reasoning number": (
        event({"delta": {"reasoning_content": "", "reasoning": 7}}),
        '"reasoning":7',
    ),
    "tool_calls object": (
        event({"delta": {"tool_calls": {"index": 0}}}),
        '"tool_calls":{"index":0}',
    ),
    "tool_calls string": (event({"delta": {"tool_calls": "f"}}), '"tool_calls":"f"'),
    "tool_calls empty object": (event({"delta": {"tool_calls": {}}}), '"tool_calls":{}'),
    "tool call not an object": (event({"delta": {"tool_calls": ["f"]}}), '"tool_calls":["f"]'),
    "tool call id number": (
        event(call(id=5, function={"name": "f", "arguments": "{}"})),
        '"id":5',
    ),
    "function not an object": (event(call(id="c", function="f")), '"function":"f"'),
    "function.name number": (
        event(call(id="c", function={"name": 7, "arguments": "{}"})),
        '"name":7',
    ),
    "function.arguments list": (
        event(call(id="c", function={"name": "f", "arguments": [1]})),
        '"arguments":[1]',
    ),
    "function.arguments number": (
        event(call(function={"arguments": 5})),
        '"arguments":5',
    ),
    "delta not an object": (event({"delta": "text"}), '"delta":"text"'),
    "completions text object": (event({"text": {"a": 1}}), '"text":{"a":1}'),
}

FIRST_LINE = event({"delta": {"content": "a"}})


@pytest.mark.parametrize("after_first_line", [False, True], ids=["first", "after"])
@pytest.mark.parametrize(("bad", "fragment"), WRONG_SHAPES.values(), ids=list(WRONG_SHAPES))
def test_wrong_typed_field_is_refused_quoting_its_event(
    bad: str, fragment: str, after_first_line: bool
) -> None:
    tr = translator()
    if after_first_line:
        assert tr.feed(FIRST_LINE)
    with pytest.raises(UpstreamProtocolError) as info:
        tr.feed(bad)
    assert info.value.message == f"upstream sent a malformed stream event: {bad!r}"
    assert fragment in info.value.message
    assert info.value.status == 502


@pytest.mark.parametrize(("bad", "fragment"), WRONG_SHAPES.values(), ids=list(WRONG_SHAPES))
def test_wrong_typed_field_in_a_generate_stream_is_refused(bad: str, fragment: str) -> None:
    # A generate stream drops tool calls, but only after reading them: they are checked alike.
    with pytest.raises(UpstreamProtocolError, match="malformed stream event") as info:
        translator(generate=True).feed(bad)
    assert fragment in info.value.message


def test_a_long_wrong_event_is_quoted_cut_to_200_characters() -> None:
    bad = event({"delta": {"content": {"a": "x" * 500}}})
    with pytest.raises(UpstreamProtocolError) as info:
        translator().feed(bad)
    assert info.value.message.endswith("...")
    assert repr(bad[:200]) in info.value.message
    assert len(info.value.message) < 260


def test_wrong_typed_reasoning_is_not_read_when_thinking_is_off() -> None:
    # think=false drops reasoning unread (nothing of it is relayed), as before.
    lines = run(translator(think=False), [event({"delta": {"content": "a", "reasoning": 7}})])
    assert lines[0]["message"] == {"role": "assistant", "content": "a"}


def test_wrong_typed_finish_reason_never_reaches_finish() -> None:
    # The reviewer's case: finish_reason an object used to fail in finish() (a 500).
    tr = translator()
    tr.feed(FIRST_LINE)
    with pytest.raises(UpstreamProtocolError):
        tr.feed(event({"delta": {}, "finish_reason": {"x": 1}}))
    with pytest.raises(UpstreamProtocolError):
        tr.feed('{"choices":[],"usage":[1]}')
    assert not tr.finished
    assert tr.usage is None
    assert run(tr, [])[-1]["done_reason"] == "stop"  # the state stayed valid


def completion_with(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], **extra}


WRONG_COMPLETIONS = {
    "content object": (completion_with({"content": {"a": 1}}), "'content': {'a': 1}"),
    "reasoning object": (completion_with({"reasoning": {"a": 1}}), "'reasoning': {'a': 1}"),
    "tool call id number": (
        completion_with({"tool_calls": [{"id": 5, "function": {"name": "f"}}]}),
        "'id': 5",
    ),
    "function.name number": (
        completion_with({"tool_calls": [{"id": "t", "function": {"name": 7}}]}),
        "'name': 7",
    ),
    "tool_calls object": (completion_with({"tool_calls": {"id": "t"}}), "'tool_calls': {'id'"),
    "usage list": (completion_with({"content": "a"}, usage=[1]), "'usage': [1]"),
    "finish_reason list": (
        {"choices": [{"message": {"content": "a"}, "finish_reason": ["x"]}]},
        "'finish_reason': ['x']",
    ),
}


@pytest.mark.parametrize(
    ("bad", "fragment"), WRONG_COMPLETIONS.values(), ids=list(WRONG_COMPLETIONS)
)
def test_feed_completion_refuses_wrong_types(bad: dict[str, Any], fragment: str) -> None:
    tr = translator()
    with pytest.raises(UpstreamProtocolError, match="not a completion") as info:
        tr.feed_completion(bad)
    assert fragment in info.value.message
    assert not tr.done


def test_finish_quotes_its_state_when_it_still_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing valid left by feed() should fail here; should it, the error is a 502 quoting the
    # state (finish_reason, usage, buffered calls), never a 500.
    def broken(*_: Any) -> dict[str, int]:
        raise TypeError("a bug")

    monkeypatch.setattr(stream, "metrics", broken)
    tr = translator()
    tr.feed(event({"delta": {"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f"}}]}}))
    tr.feed(event({"delta": {}, "finish_reason": "tool_calls"}, usage={"prompt_tokens": 3}))
    with pytest.raises(UpstreamProtocolError) as info:
        tr.finish()
    message = info.value.message
    assert message.startswith("upstream sent a stream whose end cannot be translated: ")
    assert "'finish_reason': 'tool_calls'" in message
    assert "'usage': {'prompt_tokens': 3}" in message
    assert "'t', 'f'" in message  # the buffered call


# --- valid shapes translate exactly as before --------------------------------------------------


def test_arguments_as_an_object_null_content_and_null_fields_still_translate() -> None:
    events = [
        event({"delta": {"role": "assistant", "content": None}, "finish_reason": None}, usage=None),
        event(
            {
                "delta": {
                    "content": None,
                    "reasoning_content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "f", "arguments": {"q": "x", "n": 1}},
                        }
                    ],
                },
                "finish_reason": None,
            },
            usage=None,
        ),
        event(
            {
                "delta": {
                    "tool_calls": [
                        {"index": 1, "id": "call_b", "function": {"name": "g", "arguments": None}}
                    ]
                }
            }
        ),
        event({"delta": {"tool_calls": [{"index": 1, "id": None, "function": {"name": None}}]}}),
        event({"delta": {"tool_calls": []}, "finish_reason": "tool_calls"}),
        "[DONE]",
    ]
    lines = strip(run(translator(), events))
    assert lines == [
        {
            "model": "m",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "function": {"index": 0, "name": "f", "arguments": {"q": "x", "n": 1}},
                    },
                ],
            },
            "done": False,
        },
        {
            "model": "m",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call_b", "function": {"index": 1, "name": "g", "arguments": {}}},
                ],
            },
            "done": False,
        },
        {
            "model": "m",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
        },
    ]


def test_null_reasoning_content_falls_back_to_reasoning_and_empty_usage_is_none() -> None:
    tr = translator()
    lines = run(
        tr,
        [
            event({"delta": {"reasoning_content": None, "reasoning": "r"}}),
            event({"delta": {"content": "c", "reasoning_content": ""}}),
            event({"delta": {}, "finish_reason": "length"}, usage={}),
        ],
    )
    assert [line["message"] for line in lines] == [
        {"role": "assistant", "content": "", "thinking": "r"},
        {"role": "assistant", "content": "c"},
        {"role": "assistant", "content": ""},
    ]
    assert lines[-1]["done_reason"] == "length"
    assert tr.usage is None


def test_boolean_token_counts_are_not_relayed() -> None:
    lines = run(
        translator(),
        [event({"delta": {"content": "x"}}, usage={"prompt_tokens": True, "completion_tokens": 2})],
    )
    assert "prompt_eval_count" not in lines[-1]
    assert lines[-1]["eval_count"] == 2


def test_completions_stream_text_still_translates() -> None:
    lines = run(
        translator(generate=True),
        [event({"text": "a"}), event({"text": None, "finish_reason": "stop"})],
    )
    assert [line["response"] for line in lines] == ["a", ""]


# --- through the NDJSON stream: a 502 before the first line, an error line after ----------------


async def _reads(datas: list[str]) -> AsyncIterator[list[SSEEvent]]:
    for data in datas:
        yield [SSEEvent("message", data)]


def ndjson(tr: StreamTranslator, datas: list[str]) -> bytes:
    """What streams.ndjson_stream sends: raises a 502's ProxyError before the first line."""

    async def scenario() -> bytes:
        gen = _ndjson(
            _reads(datas),  # type: ignore[arg-type]
            tr,
            Renderer(Redactor()),
            AccessRecord(),
            Dialect.OLLAMA,
        )
        return b"".join([piece async for piece in gen])

    return asyncio.run(scenario())


NDJSON_BAD = [
    event({"delta": {}, "finish_reason": {"x": 1}}),
    '{"choices":[],"usage":[1]}',
    event({"delta": {"content": {"a": 1}}}),
]


@pytest.mark.parametrize("bad", NDJSON_BAD, ids=["finish_reason", "usage", "content"])
def test_ndjson_stream_wrong_shape_is_a_502_before_the_first_line(bad: str) -> None:
    with pytest.raises(UpstreamProtocolError) as info:
        ndjson(translator(), [event({"delta": {"role": "assistant"}}), bad, "[DONE]"])
    assert info.value.status == 502
    assert repr(bad) in info.value.message


@pytest.mark.parametrize("bad", NDJSON_BAD, ids=["finish_reason", "usage", "content"])
def test_ndjson_stream_wrong_shape_is_an_error_line_after_the_first(bad: str) -> None:
    out = [json.loads(x) for x in ndjson(translator(), [FIRST_LINE, bad, "[DONE]"]).splitlines()]
    assert out[0]["message"]["content"] == "a"
    assert out[-1] == {"error": f"upstream sent a malformed stream event: {bad!r}"}
    assert not any(x.get("done") for x in out)


@pytest.mark.parametrize("first_line", [False, True])
def test_ndjson_stream_failing_finish_is_a_502_not_a_500(
    monkeypatch: pytest.MonkeyPatch, first_line: bool
) -> None:
    def broken(_: Any) -> str:
        raise AttributeError("a bug")

    monkeypatch.setattr(stream, "done_reason", broken)
    datas = [event({"delta": {}, "finish_reason": "stop"}), "[DONE]"]
    if not first_line:
        with pytest.raises(UpstreamProtocolError, match="end cannot be translated"):
            ndjson(translator(), datas)
        return
    out = [json.loads(x) for x in ndjson(translator(), [FIRST_LINE, *datas]).splitlines()]
    assert out[-1]["error"].startswith("upstream sent a stream whose end cannot be translated: ")


# --- parallel tool calls without a usable index (issue #16) --------------------------------

PARIS = ("get_weather", {"city": "Paris"})
TZ = ("get_time", {"tz": "Europe/Paris"})


def calls_of(lines: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(c["function"]["name"], c["function"]["arguments"]) for c in line_calls(lines)]


def whole(call_id: str, call: tuple[str, dict[str, Any]], index: int | None) -> dict[str, Any]:
    frag: dict[str, Any] = {
        "id": call_id,
        "type": "function",
        "function": {"name": call[0], "arguments": json.dumps(call[1])},
    }
    if index is not None:
        frag["index"] = index
    return frag


@pytest.mark.parametrize(
    "index",
    [
        None,  # Gemini's OpenAI endpoint: whole calls, one per chunk, no index
        0,  # Ollama's own /v1: every call index 0
    ],
)
def test_calls_with_their_own_ids_stay_apart_whatever_their_index(index: int | None) -> None:
    events = [
        chunk({"tool_calls": [whole("call_a", PARIS, index)]}),
        chunk({"tool_calls": [whole("call_b", TZ, index)]}),
        chunk(finish="tool_calls"),
    ]
    assert calls_of(run(translator(), events)) == [PARIS, TZ]


def test_a_name_after_a_complete_call_starts_another_when_nothing_else_tells() -> None:
    frag = {"function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    other = {"function": {"name": "get_time", "arguments": '{"tz": '}}
    rest = {"function": {"arguments": '"Europe/Paris"}'}}
    events = [
        chunk({"tool_calls": [frag]}),
        chunk({"tool_calls": [other]}),
        chunk({"tool_calls": [rest]}),
        chunk(finish="tool_calls"),
    ]
    assert calls_of(run(translator(), events)) == [PARIS, TZ]


@settings(max_examples=200, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=6),
    style=st.sampled_from(
        [
            "openai",
            "no-index",
            "index-zero",
            "id-every-fragment",
            "openai-no-ids",
            "no-index-no-ids",
            "index-zero-no-ids",
            "same-id",
            "id-changes",
        ]
    ),
)
def test_any_fragmentation_gives_the_calls_whole_and_in_order(cuts: list[int], style: str) -> None:
    """Three calls streamed in pieces: with indices (OpenAI), without (Gemini), all index 0
    (Ollama's /v1), the id repeated on every fragment; each of the first three without ids;
    one id for all calls (DeepSeek, GLM: HKUDS/nanobot#3943); a new id on every fragment
    (Poolside: poolsideai/pool#9). The calls come out whole, in order, each once."""
    wanted = [PARIS, TZ, ("search", {"q": "a, b", "n": 3})]
    events = []
    for n, (name, args) in enumerate(wanted):
        text = json.dumps(args)
        pieces, start = [], 0
        for cut in cuts:
            if start >= len(text):
                break
            pieces.append(text[start : start + cut])
            start += cut
        if start < len(text):
            pieces.append(text[start:])
        for p, piece in enumerate(pieces):
            frag: dict[str, Any] = {"function": {"arguments": piece}}
            if "no-ids" in style:
                pass
            elif style == "same-id":
                frag["id"] = "call_0"
            elif style == "id-changes":
                frag["id"] = f"call_{n}_{p}"
            elif p == 0 or style == "id-every-fragment":
                frag["id"] = f"call_{n}"
            if p == 0:
                frag["function"]["name"] = name
                frag["type"] = "function"
            if style.startswith("openai") or style in (
                "id-every-fragment",
                "same-id",
                "id-changes",
            ):
                frag["index"] = n
            elif style.startswith("index-zero"):
                frag["index"] = 0
            events.append(chunk({"tool_calls": [frag]}))
    events.append(chunk(finish="tool_calls"))
    assert calls_of(run(translator(), events)) == wanted


@pytest.mark.parametrize(
    ("finish", "done"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("max_tokens", "length"),  # Anthropic's OpenAI compatibility
        ("MAX_TOKENS", "length"),  # Gemini
        ("model_length", "length"),  # older vLLM
        ("tool_calls", "stop"),
        ("content_filter", "stop"),
        ("eos_token", "stop"),  # TGI
        ("end_turn", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons_in_the_wild(finish: str | None, done: str) -> None:
    from ollama_openai_bridge.translate.answer import done_reason

    assert done_reason(finish) == done


@pytest.mark.parametrize(
    "finish",
    [
        "error",  # OpenRouter
        "abort",  # vLLM, SGLang
        "MALFORMED_FUNCTION_CALL",  # Gemini
    ],
)
def test_an_error_finish_is_not_a_complete_answer(finish: str) -> None:
    from ollama_openai_bridge.translate.answer import chat_response

    tr = translator()
    out = tr.feed(orjson.dumps(chunk({"content": "Half"})).decode())
    out += tr.feed(orjson.dumps(chunk(finish=finish)).decode())
    with pytest.raises(UpstreamStatusError, match=f"finish_reason '{finish}'"):
        tr.finish()
    assert b"Half" in out
    body = {"choices": [{"message": {"content": "Half"}, "finish_reason": finish}]}
    with pytest.raises(UpstreamStatusError, match=f"finish_reason '{finish}'"):
        chat_response(body, "m", now_ns=0, total_ns=1, think=True, notes=[])


# --- each call on its own line as soon as it is complete (ollama/ollama#7836) ------------------


def frag(
    index: int | None, *, id: str | None = None, name: str | None = None, args: str = ""
) -> Any:
    f: dict[str, Any] = {"function": {"arguments": args}}
    if index is not None:
        f["index"] = index
    if id:
        f["id"] = id
    if name:
        f["function"]["name"] = name
    return orjson.dumps(chunk({"tool_calls": [f]})).decode()


def fed(tr: StreamTranslator, data: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in tr.feed(data).splitlines()]


def test_a_call_is_sent_when_the_next_one_begins_not_at_the_end() -> None:
    tr = translator()
    assert fed(tr, frag(0, id="call_a", name="get_weather", args='{"city": ')) == []
    assert fed(tr, frag(0, args='"Paris"}')) == []  # whole, but the backend may add a call
    first = fed(tr, frag(1, id="call_b", name="get_time", args='{"tz"'))
    assert [c["function"] for c in first[0]["message"]["tool_calls"]] == [
        {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    ]
    assert first[0]["message"]["tool_calls"][0]["id"] == "call_a"
    assert fed(tr, frag(1, args=': "UTC"}')) == []
    end = [json.loads(x) for x in tr.finish().splitlines()]
    assert end[0]["message"]["tool_calls"] == [
        {"id": "call_b", "function": {"index": 1, "name": "get_time", "arguments": {"tz": "UTC"}}}
    ]
    assert end[1]["done"] is True


def test_interleaved_calls_keep_their_order_and_wait_until_whole() -> None:
    tr = translator()
    out = []
    for data in [
        frag(0, id="call_a", name="a", args='{"x": '),
        frag(1, id="call_b", name="b", args='{"y": 2}'),  # b is whole, but a is not yet
        frag(0, args="1}"),
        frag(2, id="call_c", name="c", args="{}"),  # a and b are both whole now
    ]:
        out.append(fed(tr, data))
    assert out[:3] == [[], [], []]
    assert [x["message"]["tool_calls"][0]["function"]["name"] for x in out[3]] == ["a", "b"]
    rest = [json.loads(x) for x in tr.finish().splitlines()]
    assert calls_of(out[3] + rest) == [("a", {"x": 1}), ("b", {"y": 2}), ("c", {})]


def test_arguments_for_a_call_already_sent_are_ignored_with_a_note() -> None:
    tr = translator()
    fed(tr, frag(0, id="call_a", name="a", args="{}"))
    sent = fed(tr, frag(1, id="call_b", name="b", args="{}"))
    assert len(sent) == 1
    assert fed(tr, frag(0, args='"late"')) == []
    lines = sent + [json.loads(x) for x in tr.finish().splitlines()]
    assert calls_of(lines) == [("a", {}), ("b", {})]
    assert any("after the call was complete" in n for n in tr.notes)


def test_a_call_without_arguments_yet_is_not_sent_early() -> None:
    # A backend may open several calls before streaming any arguments: an empty argument text
    # is not a whole call yet.
    tr = translator()
    fed(tr, frag(0, id="call_a", name="a"))
    assert fed(tr, frag(1, id="call_b", name="b")) == []
    fed(tr, frag(0, args='{"q": 1}'))
    fed(tr, frag(1, args="{}"))
    lines = [json.loads(x) for x in tr.finish().splitlines()]
    assert calls_of(lines) == [("a", {"q": 1}), ("b", {})]


def test_provider_data_of_a_call_is_kept_for_the_next_turn() -> None:
    # Gemini 3 attaches its thought signature to the call (ai.google.dev thought-signatures):
    # never sent to the Ollama client, kept with the call for tool_call_store.
    tr = translator()
    extra = {"google": {"thought_signature": "c2ln"}}
    data = chunk(
        {
            "tool_calls": [
                {
                    "id": "g1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a": 1}'},
                    "extra_content": extra,
                }
            ]
        }
    )
    lines = run(tr, [data, frag(None, id="g2", name="f", args='{"a": 2}')])
    assert b"thought_signature" not in json.dumps(lines).encode()
    assert [(call.id, call.extra, ollama["function"]["arguments"]) for call, ollama in tr.made] == [
        ("g1", extra, {"a": 1}),
        ("g2", None, {"a": 2}),
    ]


@pytest.mark.parametrize(
    ("fragments", "wanted"),
    [
        pytest.param(  # DeepSeek/GLM: one id for parallel calls, told apart by index
            [
                {"index": 0, "id": "call_0", "function": {"name": "a", "arguments": '{"x": '}},
                {"index": 0, "function": {"arguments": "1}"}},
                {"index": 1, "id": "call_0", "function": {"name": "b", "arguments": '{"y": '}},
                {"index": 1, "function": {"arguments": "2}"}},
            ],
            [("a", {"x": 1}), ("b", {"y": 2})],
            id="same-id-two-indices",
        ),
        pytest.param(  # Poolside: another id on a later fragment of the same call
            [
                {"index": 0, "id": "call_A", "function": {"name": "a", "arguments": ""}},
                {"index": 0, "id": "call_B", "function": {"arguments": '{"x": '}},
                {"index": 0, "id": "call_B", "function": {"arguments": "1}"}},
            ],
            [("a", {"x": 1})],
            id="id-changes-mid-call",
        ),
        pytest.param(  # no ids, index 0 reused: a named call after a whole one is another
            [
                {"index": 0, "function": {"name": "a", "arguments": '{"x": 1}'}},
                {"index": 0, "function": {"name": "b", "arguments": '{"y": '}},
                {"index": 0, "function": {"arguments": "2}"}},
            ],
            [("a", {"x": 1}), ("b", {"y": 2})],
            id="index-reused-without-ids",
        ),
        pytest.param(  # a name on every fragment is not a new call each time
            [
                {"index": 0, "function": {"name": "a", "arguments": '{"x": '}},
                {"index": 0, "function": {"name": "a", "arguments": "1}"}},
                {"index": 0, "function": {"name": "a", "arguments": ""}},
            ],
            [("a", {"x": 1})],
            id="name-on-every-fragment",
        ),
    ],
)
def test_calls_of_backends_that_bend_the_format(
    fragments: list[dict[str, Any]], wanted: list[tuple[str, dict[str, Any]]]
) -> None:
    events = [chunk({"tool_calls": [f]}) for f in fragments] + [chunk(finish="tool_calls")]
    assert calls_of(run(translator(), events)) == wanted


def test_a_named_call_on_the_index_of_one_already_sent_is_not_dropped() -> None:
    tr = translator()
    sent = fed(tr, frag(0, id="call_a", name="a", args="{}"))
    sent += fed(tr, frag(1, id="call_b", name="b", args="{}"))  # a is sent here
    sent += fed(tr, frag(0, name="c", args='{"z": 3}'))  # index 0 again, a new call
    lines = sent + [json.loads(x) for x in tr.finish().splitlines()]
    assert calls_of(lines) == [("a", {}), ("b", {}), ("c", {"z": 3})]


def test_many_calls_cost_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of calls in one answer: each is looked up and checked a bounded number of
    times (the count is the measure here, not the clock)."""
    from ollama_openai_bridge.translate import normalise

    checks = 0
    real = normalise._complete

    def counted(text: str) -> bool:
        nonlocal checks
        checks += 1
        return real(text)

    monkeypatch.setattr(normalise, "_complete", counted)
    assembler = normalise.ToolCallAssembler()
    for n in range(2000):
        assembler.add([{"index": n, "id": f"c{n}", "function": {"name": "f", "arguments": "{}"}}])
    assert len(assembler.drain()) == 1
    assert checks <= 2 * 2000


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "not a completion"),
        ({"message": "Service temporarily unavailable"}, "temporarily unavailable"),
        ({"detail": "Not authenticated"}, "Not authenticated"),
        ({"object": "error", "message": "bad input", "code": 400}, "bad input"),  # vLLM
        ([{"error": {"code": 429, "message": "Resource exhausted"}}], "Resource exhausted"),
    ],
)
def test_a_json_answer_instead_of_a_stream_without_choices_is_an_error(
    body: Any, words: str
) -> None:
    """A stream the backend answered with one JSON body that is no completion: an error in its
    words, never an empty answer that looks complete (issue #16)."""
    from ollama_openai_bridge.errors import UpstreamError

    tr = translator()
    with pytest.raises(UpstreamError) as info:
        tr.feed_completion(body)
    assert words in info.value.message
    assert not tr.done


def test_an_error_object_event_ends_the_stream_as_an_error() -> None:
    from ollama_openai_bridge.errors import UpstreamError

    tr = translator()
    tr.feed(orjson.dumps(chunk({"content": "The answer"})).decode())
    with pytest.raises(UpstreamError, match="engine died"):
        tr.feed(orjson.dumps({"object": "error", "message": "engine died", "code": 500}).decode())


def test_one_id_for_several_calls_is_given_once() -> None:
    """DeepSeek and GLM give parallel calls one id (HKUDS/nanobot#3943): the second is made
    another, streamed or not (a client answering both with one id has the next turn refused)."""
    from ollama_openai_bridge.translate.normalise import tool_calls_of

    same = [
        {"index": i, "id": "call_1", "function": {"name": "f", "arguments": "{}"}} for i in (0, 1)
    ]
    assert [c.id for c in tool_calls_of(same)] == ["call_1", None]
    events = [chunk({"tool_calls": [f]}) for f in same] + [chunk(finish="tool_calls")]
    ids = [c["id"] for c in line_calls(run(translator(), events))]
    assert ids[0] == "call_1"
    assert ids[1] != "call_1"
