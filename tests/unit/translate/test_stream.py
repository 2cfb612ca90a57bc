from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
import pytest

from ollama_openai_proxy.errors import UpstreamProtocolError, UpstreamStatusError
from ollama_openai_proxy.translate.stream import StreamTranslator
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
    assert len(lines) == 2
    assert lines[0]["message"]["tool_calls"] == [
        {"id": "call_a", "function": {"index": 0, "name": "search", "arguments": {"q": "caféé"}}},
        {"id": "call_b", "function": {"index": 1, "name": "lookup", "arguments": {"id": 42}}},
    ]
    assert lines[0]["message"]["content"] == ""
    assert lines[0]["done"] is False
    assert lines[1]["done_reason"] == "stop"


def test_tool_call_without_id_gets_unique_ids_and_bad_arguments_are_kept() -> None:
    tr = translator()
    events = [
        chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{not json"}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"name": "f", "arguments": "[1]"}}]}),
        chunk({"tool_calls": [{"index": 2, "function": {"name": "g"}}]}),
    ]
    calls = run(tr, events)[0]["message"]["tool_calls"]
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
