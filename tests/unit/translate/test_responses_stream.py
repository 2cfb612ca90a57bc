"""Chat-completion streams -> Responses events (translate/responses_stream.py): the event
sequence, text, tool calls, reasoning, a length stop, a failure mid-stream and a stream cut
short. Every event is validated against the openai SDK's own models, and the SDK's stream
accumulator (what ``client.responses.stream`` runs) is fed the events to the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from openai import omit
from openai._models import construct_type
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from ollama_openai_bridge.access import AccessRecord
from ollama_openai_bridge.errors import Redactor, UpstreamProtocolError
from ollama_openai_bridge.render import Dialect, Renderer
from ollama_openai_bridge.sse import SSEEvent
from ollama_openai_bridge.streams import UNFINISHED, _ndjson
from ollama_openai_bridge.translate.response_items import Frame, response_object
from ollama_openai_bridge.translate.response_tools import Named
from ollama_openai_bridge.translate.responses_stream import ResponsesStream

ECHO = {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True, "metadata": {}}
FRAME = Frame("resp_ab12", 1767225600, "qwen3:8b", ECHO, {"kb__lookup": Named("lookup", "kb")})
EVENT = TypeAdapter(ResponseStreamEvent)
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> str:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return orjson.dumps({"id": "c", "choices": [choice], **extra}).decode()


def parse(raw: bytes) -> list[dict[str, Any]]:
    """The events of a Responses stream, each checked: ``event:`` names its data's type."""
    assert raw.endswith(b"\n\n")
    events = []
    for block in raw.decode().split("\n\n")[:-1]:
        name, data = block.split("\n")
        assert name.startswith("event: ")
        assert data.startswith("data: ")
        event = orjson.loads(data[6:])
        assert event["type"] == name[7:]
        events.append(event)
    return events


def accumulate(events: list[dict[str, Any]]) -> Any:
    """Every event valid for the SDK's models, in sequence, then run through the SDK's stream
    accumulator: the final response it builds."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for n, event in enumerate(events):
        assert event["sequence_number"] == n
        EVENT.validate_python(event)  # strict: every required field there, of its type
        state.handle_event(construct_type(type_=ResponseStreamEvent, value=event))  # type: ignore[arg-type]
    return state._completed_response


def run(datas: list[str], frame: Frame = FRAME) -> list[dict[str, Any]]:
    tr = ResponsesStream(frame)
    out = b"".join(tr.feed(d) for d in datas) + tr.finish()
    return parse(out)


def test_text_events_in_order() -> None:
    events = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk(finish="stop"),
            orjson.dumps({"choices": [], "usage": USAGE}).decode(),
            "[DONE]",
        ]
    )
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = accumulate(events)
    assert final.output_text == "Hello"
    assert final.id == "resp_ab12"
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["usage"]["total_tokens"] == 13
    assert done["output"] == [events[-2]["item"]]
    assert events[0]["response"]["status"] == "in_progress"


def test_tool_calls_each_sent_whole_as_soon_as_complete() -> None:
    events = run(
        [
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "function": {"name": "kb__lookup", "arguments": '{"q":'},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "call_2", "function": {"name": "f", "arguments": "{}"}}
                    ]
                }
            ),
            chunk(finish="tool_calls"),
            "[DONE]",
        ]
    )
    names = [e["type"] for e in events]
    assert names == [
        "response.created",
        "response.in_progress",
        *[
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
        ]
        * 2,
        "response.completed",
    ]
    first, second = events[5]["item"], events[9]["item"]
    assert first == {
        "id": "fc_ab12_0",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_1",
        "name": "lookup",
        "arguments": '{"q":"x"}',
        "namespace": "kb",
    }
    assert events[3]["delta"] == '{"q":"x"}'
    assert (second["call_id"], second["name"], second["arguments"]) == ("call_2", "f", "{}")
    final = accumulate(events)
    assert [o.call_id for o in final.output] == ["call_1", "call_2"]
    assert events[-1]["response"]["usage"] is None  # the backend sent none


def test_first_call_goes_out_when_the_second_begins() -> None:
    tr = ResponsesStream(FRAME)
    tr.feed(
        chunk(
            {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}]}
        )
    )
    out = parse(
        tr.feed(
            chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "b", "function": {"name": "g", "arguments": ""}}
                    ]
                }
            )
        )
    )
    assert [e["type"] for e in out][-1] == "response.output_item.done"
    assert out[-1]["item"]["call_id"] == "a"


def test_reasoning_then_text_then_a_call_and_the_same_as_unstreamed() -> None:
    datas = [
        chunk({"reasoning_content": "Think"}),
        chunk({"reasoning_content": "ing."}),
        chunk({"content": "Calling."}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a":1}'}}
                ]
            }
        ),
        chunk(finish="tool_calls"),
        orjson.dumps({"choices": [], "usage": USAGE}).decode(),
        "[DONE]",
    ]
    events = run(datas)
    types = [e["type"] for e in events]
    assert types[2:6] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
    ]
    assert "response.reasoning_summary_part.done" in types
    final = accumulate(events)
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call"]
    # one mapping: the stream ends with what the unstreamed answer to the same turn would be
    whole = response_object(
        {
            "choices": [
                {
                    "message": {
                        "reasoning_content": "Thinking.",
                        "content": "Calling.",
                        "tool_calls": [
                            {"id": "c1", "function": {"name": "f", "arguments": '{"a":1}'}}
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": USAGE,
        },
        FRAME,
        adapted=[],
    )
    assert events[-1]["response"] == whole


def test_think_tags_split_across_chunks() -> None:
    frame = Frame("resp_ab12", 1, "m", ECHO, think_tags=True)
    events = run(
        [chunk({"content": "<thi"}), chunk({"content": "nk>hm</think>A"}), chunk(finish="stop")],
        frame,
    )
    final = accumulate(events)
    assert [o.type for o in final.output] == ["reasoning", "message"]
    assert final.output_text == "A"


def test_a_length_stop_is_response_incomplete() -> None:
    events = run([chunk({"content": "cut"}), chunk(finish="length"), "[DONE]"])
    assert events[-1]["type"] == "response.incomplete"
    body = events[-1]["response"]
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    for event in events:
        EVENT.validate_python(event)


def test_an_empty_answer_still_has_a_message() -> None:
    events = run([chunk({"role": "assistant"}), chunk(finish="stop"), "[DONE]"])
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""
    assert accumulate(events).output_text == ""


def test_a_backend_that_ignored_stream_true() -> None:
    tr = ResponsesStream(FRAME)
    whole = {"choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}], "usage": USAGE}
    events = parse(tr.feed_completion(whole) + tr.finish())
    assert accumulate(events).output_text == "Hi"
    assert tr.finished
    assert tr.usage == USAGE


# --- through streams._ndjson: a 502 before the first event, error events after ------------------


async def _reads(datas: list[str]) -> AsyncIterator[list[SSEEvent]]:
    for data in datas:
        yield [SSEEvent("message", data)]


def stream(datas: list[str]) -> bytes:
    tr = ResponsesStream(FRAME)

    async def scenario() -> bytes:
        gen = _ndjson(
            _reads(datas),  # type: ignore[arg-type]
            tr,
            Renderer(Redactor(["sk-secret-key"])),
            AccessRecord(),
            Dialect.RESPONSES,
            tr.snapshot,
        )
        return b"".join([piece async for piece in gen])

    return asyncio.run(scenario())


def check_failure(events: list[dict[str, Any]], message: str) -> None:
    error, failed = events[-2:]
    assert error["type"] == "error"
    assert failed["type"] == "response.failed"
    assert message in error["message"]
    assert error["error"]["message"] == error["message"]
    assert failed["response"]["id"] == events[0]["response"]["id"]
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["message"] == error["message"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        EVENT.validate_python(event)


def test_an_error_event_mid_stream_ends_it_with_error_and_response_failed() -> None:
    raw = stream(
        [
            chunk({"content": "partial"}),
            orjson.dumps({"error": {"message": "overloaded sk-secret-key", "code": 529}}).decode(),
        ]
    )
    assert b"sk-secret-key" not in raw  # redacted, as every error
    events = parse(raw)
    check_failure(events, "overloaded [redacted]")
    # the text already sent: done items only in the failed response (none finished here)
    assert events[-1]["response"]["output"] == []


def test_a_stream_cut_short_fails_rather_than_looking_complete() -> None:
    events = parse(stream([chunk({"content": "half"})]))
    check_failure(events, UNFINISHED)
    assert events[-1]["response"]["error"]["code"] == "server_error"


def test_a_rate_limit_mid_stream_says_so_for_codex() -> None:
    events = parse(
        stream(
            [
                chunk({"content": "a"}),
                orjson.dumps(
                    {
                        "error": {
                            "message": "slow down",
                            "type": "rate_limit",
                            "code": "rate_limit_exceeded",
                        }
                    }
                ).decode(),
            ]
        )
    )
    check_failure(events, "slow down")
    assert events[-1]["response"]["error"]["code"] == events[-2]["code"]


def test_a_failure_before_the_first_event_is_raised_for_its_status() -> None:
    with pytest.raises(UpstreamProtocolError):
        stream(['{"choices": "nope"}'])
