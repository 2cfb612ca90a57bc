"""Standing answers of the fake upstream for whole-program clients (JS SDKs, n8n) that make many
requests in one run: each request is answered by what it asks, not by a queue."""

from __future__ import annotations

from typing import Any

from tests.fake_upstream import FakeUpstream, Script

CALL = {
    "id": "call_w1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
TOOL_CALL = Script(
    chunks=[
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
    ],
    message={"role": "assistant", "content": None, "tool_calls": [CALL]},
    finish_reason="tool_calls",
)
# Two calls in one turn, streamed as OpenAI streams them (the first call's arguments in two
# fragments): clients that count one call per NDJSON line (Haystack) need each call on a line.
PARALLEL_CALLS = Script(
    chunks=[
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_p",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": '},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_r",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                }
            ]
        },
    ],
    finish_reason="tool_calls",
)
AFTER_TOOL = Script(chunks=[{"content": "It is 17C "}, {"content": "in Paris."}])
THINKING = Script(
    chunks=[{"reasoning_content": "17*3 "}, {"reasoning_content": "= 51"}, {"content": "51"}],
    message={"role": "assistant", "reasoning_content": "17*3 = 51", "content": "51"},
)
HELLO = "Hello!"


def _last(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or [{}]
    last: dict[str, Any] = messages[-1]
    return last


def _text(body: dict[str, Any]) -> str:
    content = _last(body).get("content")
    return content if isinstance(content, str) else ""


def install(upstream: FakeUpstream) -> None:
    upstream.rules[:] = [
        (lambda b: _last(b).get("role") == "tool", AFTER_TOOL),
        (lambda b: "weather in Paris" in _text(b), TOOL_CALL),
        (lambda b: "think about" in _text(b), THINKING),
    ]
