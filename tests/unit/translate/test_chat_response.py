from __future__ import annotations

import json
from typing import Any

import pytest

from ollama_openai_proxy.translate.chat import (
    chat_response,
    done_reason,
    generate_response,
    metrics,
)
from tests.conftest import contract

NOW = 1_767_225_601_200_000_000


def completion(
    message: dict[str, Any], finish: str | None = "stop", usage: Any = None
) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def test_golden_nonstream_with_thinking() -> None:
    fx = contract("mapping_chat_images_format_think.json")
    out = chat_response(
        fx["openai_response"],
        "vision-reasoner",
        now_ns=NOW,
        total_ns=1_200_000_000,
        think=True,
        notes=[],
    )
    expected = dict(fx["expected_ollama_response"])
    # Without a stream there is no first-token time: the whole request is eval time.
    expected.pop("prompt_eval_duration")
    expected["eval_duration"] = 1_200_000_000
    assert out == expected


def test_golden_nonstream_tool_calls() -> None:
    fx = contract("chat_nonstream_tool_call.json")
    expected = fx["response"]["body"]
    calls = [
        {
            "id": c["id"],
            "type": "function",
            "function": {
                "name": c["function"]["name"],
                "arguments": json.dumps(c["function"]["arguments"]),
            },
        }
        for c in expected["message"]["tool_calls"]
    ]
    out = chat_response(
        completion(
            {"role": "assistant", "content": None, "tool_calls": calls},
            "tool_calls",
            {"prompt_tokens": 169, "completion_tokens": 38},
        ),
        "llama3.2",
        now_ns=NOW,
        total_ns=5,
        think=True,
        notes=[],
    )
    assert out["message"] == expected["message"]
    assert out["done_reason"] == "stop"
    assert (out["prompt_eval_count"], out["eval_count"]) == (169, 38)


def test_think_false_hides_reasoning_and_null_content_is_empty_string() -> None:
    out = chat_response(
        completion({"role": "assistant", "content": None, "reasoning": "r"}),
        "m",
        now_ns=NOW,
        total_ns=1,
        think=False,
        notes=[],
    )
    assert out["message"] == {"role": "assistant", "content": ""}


def test_generate_response_golden() -> None:
    fx = contract("generate_nonstream.json")
    expected = fx["response"]["body"]
    out = generate_response(
        completion(
            {"role": "assistant", "content": expected["response"], "reasoning_content": "why"},
            "stop",
            {"prompt_tokens": 21, "completion_tokens": 15},
        ),
        "llama3.2",
        now_ns=NOW,
        total_ns=10,
        think=True,
    )
    assert list(out) == [
        "model",
        "created_at",
        "response",
        "thinking",
        "done",
        "done_reason",
        "total_duration",
        "prompt_eval_count",
        "eval_count",
        "eval_duration",
    ]
    assert (out["response"], out["thinking"], out["done_reason"]) == (
        expected["response"],
        "why",
        "stop",
    )


@pytest.mark.parametrize("bad", [{}, {"choices": []}, {"choices": [None]}, {"choices": "x"}])
def test_responses_without_choices_raise(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="no choices"):
        chat_response(bad, "m", now_ns=NOW, total_ns=1, think=True, notes=[])


def test_metrics_omit_zero_and_missing() -> None:
    assert metrics(None, 0) == {}
    assert metrics({"prompt_tokens": 0, "completion_tokens": "x"}, 5, 0, 0) == {"total_duration": 5}
    assert metrics({"prompt_tokens": 1, "completion_tokens": 2}, 9, 3, 6) == {
        "total_duration": 9,
        "prompt_eval_count": 1,
        "prompt_eval_duration": 3,
        "eval_count": 2,
        "eval_duration": 6,
    }


def test_done_reason_shared_mapping() -> None:
    assert [done_reason(r) for r in ("stop", "length", "tool_calls", None, "other")] == [
        "stop",
        "length",
        "stop",
        "stop",
        "stop",
    ]
