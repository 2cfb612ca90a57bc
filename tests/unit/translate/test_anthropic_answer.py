"""Chat completions -> Anthropic messages, whole and streamed (translate/anthropic_answer.py).

The streamed events are also run through the anthropic SDK's own accumulator
(``accumulate_event``), which is what ``client.messages.stream()`` and Claude Code build the final
message with: indices, block starts and deltas must add up to the same message as the unstreamed
answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from ollama_openai_bridge.access import AccessRecord
from ollama_openai_bridge.errors import (
    Redactor,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from ollama_openai_bridge.render import Dialect, Renderer
from ollama_openai_bridge.sse import SSEEvent
from ollama_openai_bridge.streams import UNFINISHED, _ndjson
from ollama_openai_bridge.translate.anthropic_answer import (
    AnthropicStream,
    message_response,
    stop_reason,
    usage,
)

EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def completion(
    message: dict[str, Any], finish: str | None = "stop", **choice: Any
) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 4},
    }


def whole(resp: dict[str, Any], **kw: Any) -> dict[str, Any]:
    notes: list[str] = []
    kw.setdefault("think", True)
    return message_response(resp, "claude-x", msg_id="msg_1", notes=notes, **kw)


CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
}


def test_golden_whole_message() -> None:
    out = whole(
        completion(
            {
                "role": "assistant",
                "content": "Checking.",
                "reasoning_content": "hmm",
                "tool_calls": [CALL],
            },
            "tool_calls",
        )
    )
    assert out == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",  # the client's name, not the backend's
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": ""},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 4},
    }


def test_whole_message_shapes_of_other_backends() -> None:
    # Magistral's typed parts; a call without an id gets one in Ollama's form; no usage
    out = whole(
        {
            "choices": [
                {
                    "message": {
                        "content": [
                            {"type": "thinking", "thinking": [{"type": "text", "text": "t"}]},
                            {"type": "text", "text": "A"},
                        ],
                        "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
                    },
                    "finish_reason": "stop",
                }
            ]
        },
        think=True,
    )
    assert [b["type"] for b in out["content"]] == ["thinking", "text", "tool_use"]
    assert out["content"][2]["id"].startswith("call_")
    assert out["content"][2]["input"] == {"a": 1}
    assert out["usage"] == {"input_tokens": 0, "output_tokens": 0}
    tagged = whole(completion({"content": "<think>x</think>A"}), think_tags=True)
    assert tagged["content"] == [
        {"type": "thinking", "thinking": "x", "signature": ""},
        {"type": "text", "text": "A"},
    ]
    hidden = whole(completion({"content": "A", "reasoning": "x"}), think=False)
    assert hidden["content"] == [{"type": "text", "text": "A"}]


@pytest.mark.parametrize(
    ("finish", "calls", "matched", "reason"),
    [
        ("stop", False, None, "end_turn"),
        (None, False, None, "end_turn"),
        ("end_turn", False, None, "end_turn"),
        ("length", False, None, "max_tokens"),
        ("MAX_TOKENS", False, None, "max_tokens"),
        ("tool_calls", True, None, "tool_use"),
        ("stop", True, None, "tool_use"),  # Ollama's /v1 says stop after calls
        ("content_filter", False, None, "refusal"),
        ("stop", False, "END", "stop_sequence"),
    ],
)
def test_stop_reasons(finish: str | None, calls: bool, matched: str | None, reason: str) -> None:
    assert stop_reason(finish, calls, matched) == reason


def test_an_error_finish_is_not_a_complete_answer() -> None:
    with pytest.raises(UpstreamStatusError):
        stop_reason("error", False, None)


def test_stop_sequence_named_by_the_backend() -> None:
    # vLLM names the stop string that matched in choices[].stop_reason
    out = whole(completion({"content": "A"}, stop_reason="END"), stops=("END",))
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "END")
    assert (
        whole(completion({"content": "A"}, stop_reason=128001), stops=("END",))["stop_reason"]
        == "end_turn"
    )


def test_usage_counts_cached_input_apart() -> None:
    raw = {
        "prompt_tokens": 100,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 60},
    }
    assert usage(raw) == {"input_tokens": 40, "output_tokens": 5, "cache_read_input_tokens": 60}
    assert usage(None, 7) == {"input_tokens": 7, "output_tokens": 0}
    assert usage({"prompt_tokens": True}) == {"input_tokens": 0, "output_tokens": 0}  # not a count


def test_whole_answer_of_the_wrong_shape_raises_for_the_guard() -> None:
    from ollama_openai_bridge.errors import UpstreamError

    with pytest.raises(UpstreamError, match="not a completion"):
        whole({"object": "chat.completion"})  # no choices: an error quoting the answer
    with pytest.raises(ValueError, match="no choices"):
        whole({"choices": [None]})
    with pytest.raises(TypeError):
        whole(completion({"content": "A", "tool_calls": {"x": 1}}))


# --- streams ----------------------------------------------------------------------------------


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **choice: Any
) -> dict[str, Any]:
    return {
        "id": "c",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, **choice}],
    }


USAGE = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4}}


def stream(**kw: Any) -> AnthropicStream:
    return AnthropicStream("claude-x", "msg_1", estimate=9, **kw)


def events(out: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events, each checked for its ``event:`` line matching its data's type."""
    assert out.endswith(b"\n\n")
    parsed = []
    for frame in out.decode().split("\n\n")[:-1]:
        head, data = frame.split("\n")
        assert head.startswith("event: ")
        assert data.startswith("data: ")
        name, obj = head[7:], orjson.loads(data[6:])
        assert obj["type"] == name
        parsed.append((name, obj))
    return parsed


def run(tr: AnthropicStream, chunks: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    out = b""
    for c in chunks:
        out += tr.feed(c if isinstance(c, str) else orjson.dumps(c).decode())
    return events(out + tr.finish())


def accumulated(evs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The message the anthropic SDK builds from the events (client.messages.stream())."""
    snapshot = None
    bufs: dict[int, bytes] = {}  # the SDK's partial tool inputs, by block index
    for _, data in evs:
        if data["type"] == "ping":
            continue
        snapshot = accumulate_event(
            event=EVENTS.validate_python(data), current_snapshot=snapshot, json_bufs=bufs
        )
    assert snapshot is not None
    return snapshot.model_dump(exclude_none=True)


def test_golden_text_stream() -> None:
    evs = run(
        stream(),
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk(finish="stop"),
            USAGE,
            "[DONE]",
        ],
    )
    assert evs == [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-x",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 9, "output_tokens": 0},  # the estimate, until the end
                },
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hel"},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "lo"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"input_tokens": 11, "output_tokens": 4},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_nothing_is_sent_before_content_so_an_early_failure_keeps_its_status() -> None:
    tr = stream()
    assert tr.feed(orjson.dumps(chunk({"role": "assistant", "content": ""})).decode()) == b""
    with pytest.raises(UpstreamModelNotFound):
        tr.feed('{"error": {"message": "The model does not exist", "code": 404}}')


def test_thinking_text_and_fragmented_parallel_calls() -> None:
    chunks = [
        chunk({"role": "assistant"}),
        chunk({"reasoning_content": "two "}),
        chunk({"reasoning": "cities"}),  # OpenRouter's name for it
        chunk({"content": "Checking."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                    }
                ]
            }
        ),
        chunk(finish="tool_calls"),
        USAGE,
        "[DONE]",
    ]
    evs = run(stream(), chunks)
    names = [name for name, _ in evs]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",  # 0 thinking
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 1 text
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 2 tool_use, sent when call 2 began and call 1 was whole
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 3 tool_use, at the end
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    starts = [d for n, d in evs if n == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1, 2, 3]
    assert starts[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert starts[2]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "weather",
        "input": {},
    }
    tool_deltas = [d["delta"] for n, d in evs if n == "content_block_delta" and d["index"] >= 2]
    # each call's whole input in one input_json_delta
    assert tool_deltas == [
        {"type": "input_json_delta", "partial_json": '{"city":"Paris"}'},
        {"type": "input_json_delta", "partial_json": '{"city":"Rome"}'},
    ]
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"
    # the SDK's accumulator builds the same message as the unstreamed answer
    msg = accumulated(evs)
    assert msg["content"] == [
        {"type": "thinking", "thinking": "two cities", "signature": ""},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
    ]
    assert (msg["stop_reason"], msg["usage"]["output_tokens"], msg["usage"]["input_tokens"]) == (
        "tool_use",
        4,
        11,
    )


def test_thinking_after_text_opens_a_new_block_in_order() -> None:
    evs = run(
        stream(),
        [
            chunk({"content": "A"}),
            chunk({"reasoning_content": "r"}),
            chunk({"content": "B"}),
            chunk(finish="stop"),
        ],
    )
    assert accumulated(evs)["content"] == [
        {"type": "text", "text": "A"},
        {"type": "thinking", "thinking": "r", "signature": ""},
        {"type": "text", "text": "B"},
    ]


def test_think_off_and_think_tags() -> None:
    evs = run(
        stream(think=False),
        [chunk({"reasoning_content": "r", "content": "A"}), chunk(finish="stop")],
    )
    assert accumulated(evs)["content"] == [{"type": "text", "text": "A"}]
    evs = run(
        stream(think_tags=True),
        [chunk({"content": "<thi"}), chunk({"content": "nk>r</think>A"}), chunk(finish="stop")],
    )
    assert accumulated(evs)["content"] == [
        {"type": "thinking", "thinking": "r", "signature": ""},
        {"type": "text", "text": "A"},
    ]


def test_an_empty_answer_is_still_a_whole_message() -> None:
    evs = run(stream(), [chunk(finish="length"), "[DONE]"])
    assert [n for n, _ in evs] == ["message_start", "ping", "message_delta", "message_stop"]
    assert accumulated(evs)["stop_reason"] == "max_tokens"


def test_a_backend_that_ignored_stream_true() -> None:
    tr = stream()
    out = tr.feed_completion(
        completion({"role": "assistant", "content": "A", "tool_calls": [CALL]}, "tool_calls")
    )
    msg = accumulated(events(out + tr.finish()))
    assert [b["type"] for b in msg["content"]] == ["text", "tool_use"]
    assert msg["usage"] == {"input_tokens": 11, "output_tokens": 4}


def test_stop_sequence_and_cached_usage_in_the_stream() -> None:
    evs = run(
        stream(stops=("END",)),
        [
            chunk({"content": "A"}),
            chunk(finish="stop", stop_reason="END"),
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": 1,
                    "prompt_tokens_details": {"cached_tokens": 4},
                },
            },
        ],
    )
    assert evs[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    assert evs[-2][1]["usage"] == {
        "input_tokens": 6,
        "output_tokens": 1,
        "cache_read_input_tokens": 4,
    }


# --- through the stream loop: errors as Anthropic's error event ----------------------------------


async def _reads(datas: list[str]) -> AsyncIterator[list[SSEEvent]]:
    for data in datas:
        yield [SSEEvent("message", data)]


def loop(tr: AnthropicStream, chunks: list[Any]) -> bytes:
    """What streams.ndjson_stream sends in the Anthropic dialect."""

    async def scenario() -> bytes:
        datas = [c if isinstance(c, str) else orjson.dumps(c).decode() for c in chunks]
        gen = _ndjson(_reads(datas), tr, Renderer(Redactor()), AccessRecord(), Dialect.ANTHROPIC)  # type: ignore[arg-type]
        return b"".join([piece async for piece in gen])

    return asyncio.run(scenario())


def test_an_error_mid_stream_is_one_error_event_and_nothing_after() -> None:
    out = loop(
        stream(),
        [
            chunk({"content": "A"}),
            {"error": {"message": "overloaded", "code": 503}},
            chunk({"content": "B"}),
        ],
    )
    evs = events(out)
    assert [n for n, _ in evs][-2:] == ["content_block_delta", "error"]
    assert evs[-1][1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream error (HTTP 503): overloaded"},
    }


def test_a_stream_cut_short_ends_with_an_error_event_not_message_stop() -> None:
    evs = events(loop(stream(), [chunk({"content": "A"})]))  # no finish_reason, no [DONE]
    assert "message_stop" not in [n for n, _ in evs]
    assert evs[-1][1]["error"] == {"type": "api_error", "message": UNFINISHED}


def test_a_malformed_event_before_anything_is_a_502_with_its_status() -> None:
    with pytest.raises(UpstreamProtocolError) as info:
        loop(stream(), [chunk({"content": {"a": 1}})])
    assert info.value.status == 502


def test_an_error_finish_after_text_is_an_error_event() -> None:
    evs = events(loop(stream(), [chunk({"content": "A"}), chunk(finish="error"), "[DONE]"]))
    assert evs[-1][0] == "error"
    assert "finish_reason 'error'" in evs[-1][1]["error"]["message"]
