"""Chat completions -> Response objects (translate/response_items.py): golden pairs, statuses,
usage, and the shapes of backends normalise.py reads."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response

from ollama_openai_bridge.errors import UpstreamStatusError
from ollama_openai_bridge.translate.response_items import Frame, response_object, usage_of
from ollama_openai_bridge.translate.response_tools import Named

ECHO = {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True, "metadata": {}}
FRAME = Frame(
    "resp_ab12",
    1767225600,
    "qwen3:8b",
    ECHO,
    {"kb__lookup": Named("lookup", "kb"), "patch": Named("patch", None, custom=True)},
)


def completion(
    message: dict[str, Any], finish: str | None = "stop", usage: Any = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def answer(resp: dict[str, Any], frame: Frame = FRAME) -> dict[str, Any]:
    kept: list[Any] = []
    out = response_object(resp, frame, adapted=[], kept=kept)
    Response.model_validate(out)  # the openai SDK's own model of it, validated strictly
    return out


def test_golden_reasoning_text_and_calls() -> None:
    out = answer(
        completion(
            {
                "role": "assistant",
                "reasoning_content": "Look it up.",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "kb__lookup", "arguments": '{"q":"x"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "patch", "arguments": '{"input":"*** p"}'},
                    },
                    {"type": "function", "function": {"name": "other", "arguments": ""}},
                ],
            },
            "tool_calls",
            {
                "prompt_tokens": 20,
                "completion_tokens": 7,
                "total_tokens": 27,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 3},
            },
        )
    )
    assert out == {
        "id": "resp_ab12",
        "object": "response",
        "created_at": 1767225600,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": "qwen3:8b",
        "output": [
            {
                "id": "rs_ab12_0",
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "Look it up."}],
            },
            {
                "id": "msg_ab12_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}
                ],
            },
            {
                "id": "fc_ab12_2",
                "type": "function_call",
                "status": "completed",
                "call_id": "call_1",
                "name": "lookup",
                "arguments": '{"q":"x"}',
                "namespace": "kb",
            },
            {
                "id": "ctc_ab12_3",
                "type": "custom_tool_call",
                "status": "completed",
                "call_id": "call_2",
                "name": "patch",
                "input": "*** p",
            },
            {
                "id": "fc_ab12_4",
                "type": "function_call",
                "status": "completed",
                "call_id": "call_ab12_4",
                "name": "other",
                "arguments": "{}",
            },
        ],
        "usage": {
            "input_tokens": 20,
            "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
            "output_tokens": 7,
            "output_tokens_details": {"reasoning_tokens": 3},
            "total_tokens": 27,
        },
        **ECHO,
    }


def test_calls_alone_have_no_message_and_nothing_at_all_has_an_empty_one() -> None:
    calls = answer(
        completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}],
            },
            "tool_calls",
        )
    )
    assert [i["type"] for i in calls["output"]] == ["function_call"]
    assert calls["output"][0]["arguments"] == '{"a":1}'  # an object some backends send: as text
    empty = answer(completion({"role": "assistant", "content": ""}))
    assert [(i["type"], i["content"][0]["text"]) for i in empty["output"]] == [("message", "")]
    assert empty["usage"] is None


@pytest.mark.parametrize(
    ("finish", "status", "reason"),
    [
        ("stop", "completed", None),
        ("length", "incomplete", "max_output_tokens"),
        ("MAX_TOKENS", "incomplete", "max_output_tokens"),
        ("content_filter", "incomplete", "content_filter"),
        ("end_turn", "completed", None),
        (None, "completed", None),
    ],
)
def test_status_from_the_finish_reason(finish: str | None, status: str, reason: str | None) -> None:
    out = answer(completion({"role": "assistant", "content": "x"}, finish))
    assert out["status"] == status
    assert out["output"][0]["status"] == status
    assert out["incomplete_details"] == (reason and {"reason": reason})


def test_an_error_finish_is_an_error_not_an_answer() -> None:
    with pytest.raises(UpstreamStatusError):
        answer(completion({"role": "assistant", "content": "partial"}, "error"))


def test_reasoning_shapes_of_other_backends() -> None:
    # OpenRouter's `reasoning`, Magistral's typed parts, and <think> tags (a profile's)
    for message, frame in (
        ({"role": "assistant", "reasoning": "hmm", "content": "A"}, FRAME),
        (
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                    {"type": "text", "text": "A"},
                ],
            },
            FRAME,
        ),
        (
            {"role": "assistant", "content": "<think>hmm</think>A"},
            Frame("resp_ab12", 1, "m", ECHO, think_tags=True),
        ),
    ):
        out = answer(completion(message), frame)
        assert [i["type"] for i in out["output"]] == ["reasoning", "message"]
        assert out["output"][0]["summary"][0]["text"] == "hmm"
        assert out["output"][1]["content"][0]["text"] == "A"


def test_reasoning_left_out_when_the_client_switched_it_off() -> None:
    frame = Frame("resp_ab12", 1, "m", ECHO, reasoning=False)
    out = answer(
        completion({"role": "assistant", "reasoning_content": "hmm", "content": "A"}), frame
    )
    assert [i["type"] for i in out["output"]] == ["message"]


def test_usage_counts_are_integers_whatever_the_backend_sends() -> None:
    assert usage_of({"prompt_tokens": 3, "completion_tokens": 2}) == {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 5,
    }
    assert usage_of({"prompt_tokens": True, "completion_tokens": None}) == {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
    assert usage_of(None) is None


@pytest.mark.parametrize(
    "resp",
    [
        {"choices": [None]},
        {"choices": [{"message": {"content": 5}}]},
        {"choices": [{"message": {"tool_calls": {"a": 1}}}]},
        {"choices": [{"message": {"content": "x"}, "finish_reason": 3}]},
    ],
)
def test_a_malformed_answer_raises_a_shape_error(resp: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        response_object(resp, FRAME, adapted=[])


def test_an_answer_without_choices_is_the_error_it_carries() -> None:
    from ollama_openai_bridge.errors import UpstreamError

    with pytest.raises(UpstreamError, match="not a completion"):
        response_object({"choices": []}, FRAME, adapted=[])
    with pytest.raises(UpstreamError, match="Rate limit") as info:
        response_object({"error": {"message": "Rate limit", "code": 429}}, FRAME, adapted=[])
    assert info.value.status == 429
