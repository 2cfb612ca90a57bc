from __future__ import annotations

import json
from typing import Any

import pytest

from ollama_openai_bridge.errors import UpstreamProtocolError, reading, sample
from ollama_openai_bridge.translate.answer import chat_response, done_reason, generate_response
from ollama_openai_bridge.translate.durations import metrics
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


@pytest.mark.parametrize("bad", [{"choices": [None]}, {"choices": "x"}])
def test_responses_with_bad_choices_raise(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="no choices"):
        chat_response(bad, "m", now_ns=NOW, total_ns=1, think=True, notes=[])


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({}, 502, "not a completion: '{}'"),
        ({"choices": []}, 502, "not a completion"),
        # a gateway's 200 that is only an error: its words, its status
        ({"error": {"message": "Rate limit exceeded", "code": 429}}, 429, "Rate limit exceeded"),
        ({"error": {"message": "no", "code": "model_not_found"}}, 404, "model 'm' not found"),
        ({"object": "error", "message": "bad input", "code": 400}, 400, "bad input"),  # vLLM
        ({"message": "Service temporarily unavailable"}, 502, "temporarily unavailable"),
        ({"detail": "Not authenticated"}, 502, "Not authenticated"),
    ],
)
def test_an_answer_without_choices_is_an_error_in_the_backends_words(
    body: dict[str, Any], status: int, words: str
) -> None:
    from ollama_openai_bridge.errors import UpstreamError

    for translate in (chat_response, generate_response):
        with pytest.raises(UpstreamError) as info:
            if translate is chat_response:
                chat_response(body, "m", now_ns=NOW, total_ns=1, think=True, notes=[])
            else:
                generate_response(body, "m", now_ns=NOW, total_ns=1, think=True)
        assert info.value.status == status
        assert words in info.value.message


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
    # Ollama's order (api/types.go Metrics): load_duration second.
    out = metrics({"prompt_tokens": 1, "completion_tokens": 2}, 10, 3, 6, 1)
    assert list(out.items()) == [
        ("total_duration", 10),
        ("load_duration", 1),
        ("prompt_eval_count", 1),
        ("prompt_eval_duration", 3),
        ("eval_count", 2),
        ("eval_duration", 6),
    ]


@pytest.mark.parametrize("generate", [False, True])
def test_unstreamed_answers_carry_load_duration(generate: bool) -> None:
    # Ollama always sends load_duration (it is never 0 there); here it is the time from
    # arrival to the request leaving, and the backend's time is the eval time.
    resp = completion({"role": "assistant", "content": "hi"}, usage={"prompt_tokens": 2})
    if generate:
        out = generate_response(resp, "m", now_ns=NOW, total_ns=100, think=True, load_ns=7)
    else:
        out = chat_response(resp, "m", now_ns=NOW, total_ns=100, think=True, notes=[], load_ns=7)
    assert (out["total_duration"], out["load_duration"], out["eval_duration"]) == (100, 7, 93)


def test_done_reason_shared_mapping() -> None:
    assert [done_reason(r) for r in ("stop", "length", "tool_calls", None, "other")] == [
        "stop",
        "length",
        "stop",
        "stop",
        "stop",
    ]


# --- wrong shapes: refused (a 502 quoting the answer), never relayed -----------------------------


def translate(body: dict[str, Any], *, generate: bool = False) -> dict[str, Any]:
    """As routes/inference.py calls them: inside errors.reading()."""
    with reading("an answer that is not a completion", body):
        if generate:
            return generate_response(body, "m", now_ns=NOW, total_ns=1, think=True)
        return chat_response(body, "m", now_ns=NOW, total_ns=1, think=True, notes=[])


def answer(message: Any = None, finish: Any = "stop", **extra: Any) -> dict[str, Any]:
    choice = {"message": message, "finish_reason": finish} if message is not None else {}
    return {"choices": [{**choice, **extra.pop("choice", {})}], **extra}


def tool_call(**fields: Any) -> dict[str, Any]:
    return answer({"content": None, "tool_calls": [fields]}, "tool_calls")


# which translations read the field: chat_response, generate_response
BOTH, CHAT_ONLY, GENERATE_ONLY = ("chat", "generate"), ("chat",), ("generate",)

# (answer, the fragment its error must quote, the translations that read the field)
WRONG_SHAPES = {
    "content object": (answer({"content": {"a": 1}}), "'content': {'a': 1}", BOTH),
    "content list": (answer({"content": ["a"]}), "'content': ['a']", BOTH),
    "content number": (answer({"content": 5}), "'content': 5", BOTH),
    "content false": (answer({"content": False}), "'content': False", BOTH),
    "reasoning_content object": (
        answer({"content": "a", "reasoning_content": {"a": 1}}),
        "'reasoning_content': {'a': 1}",
        BOTH,
    ),
    "reasoning number": (
        answer({"content": "a", "reasoning_content": "", "reasoning": 7}),
        "'reasoning': 7",
        BOTH,
    ),
    "message not an object": (answer("text"), "'message': 'text'", BOTH),
    "completions text object": (
        answer(choice={"text": {"a": 1}}),
        "'text': {'a': 1}",
        GENERATE_ONLY,
    ),
    "completions text number": (answer(choice={"text": 3}), "'text': 3", GENERATE_ONLY),
    "finish_reason object": (answer({"content": "a"}, {"x": 1}), "'finish_reason': {'x': 1}", BOTH),
    "finish_reason list": (answer({"content": "a"}, ["stop"]), "'finish_reason': ['stop']", BOTH),
    "finish_reason number": (answer({"content": "a"}, 1), "'finish_reason': 1", BOTH),
    "usage list": (answer({"content": "a"}, usage=[11, 4]), "'usage': [11, 4]", BOTH),
    "usage string": (answer({"content": "a"}, usage="lots"), "'usage': 'lots'", BOTH),
    "tool_calls object": (
        answer({"tool_calls": {"id": "t"}}),
        "'tool_calls': {'id': 't'}",
        CHAT_ONLY,
    ),
    "tool_calls string": (answer({"tool_calls": "f"}), "'tool_calls': 'f'", CHAT_ONLY),
    "tool call not an object": (answer({"tool_calls": ["f"]}), "'tool_calls': ['f']", CHAT_ONLY),
    "tool call id number": (
        tool_call(id=5, function={"name": "f", "arguments": "{}"}),
        "'id': 5",
        CHAT_ONLY,
    ),
    "function not an object": (tool_call(id="t", function="f"), "'function': 'f'", CHAT_ONLY),
    "function.name number": (
        tool_call(id="t", function={"name": 7, "arguments": "{}"}),
        "'name': 7",
        CHAT_ONLY,
    ),
    "function.arguments list": (
        tool_call(id="t", function={"name": "f", "arguments": [1]}),
        "'arguments': [1]",
        CHAT_ONLY,
    ),
    "function.arguments number": (
        tool_call(id="t", function={"name": "f", "arguments": 5}),
        "'arguments': 5",
        CHAT_ONLY,
    ),
}


@pytest.mark.parametrize(
    ("bad", "fragment", "paths"), WRONG_SHAPES.values(), ids=list(WRONG_SHAPES)
)
def test_wrong_typed_field_is_refused_quoting_the_answer(
    bad: dict[str, Any], fragment: str, paths: tuple[str, ...]
) -> None:
    for path in paths:
        with pytest.raises(UpstreamProtocolError) as info:
            translate(bad, generate=path == "generate")
        assert info.value.status == 502
        assert (
            info.value.message == f"upstream sent an answer that is not a completion: {sample(bad)}"
        )
        assert fragment in info.value.message


def test_generate_ignores_tool_calls_it_never_relays() -> None:
    bad, _, _ = WRONG_SHAPES["tool call id number"]
    assert translate(bad, generate=True)["response"] == ""


def test_wrong_typed_reasoning_is_not_read_when_thinking_is_off() -> None:
    out = chat_response(
        answer({"content": "a", "reasoning": 7}), "m", now_ns=NOW, total_ns=1, think=False, notes=[]
    )
    assert out["message"] == {"role": "assistant", "content": "a"}


# --- valid shapes translate as before ----------------------------------------------------------


def test_arguments_as_an_object_are_the_arguments() -> None:
    # Some backends send arguments as an object. Before, the non-streaming path wrapped it as
    # {"__raw_arguments": {...}} with a note; streaming already passed it through. Now both do.
    notes: list[str] = []
    body = tool_call(id="t", type="function", function={"name": "f", "arguments": {"q": "x"}})
    out = chat_response(body, "m", now_ns=NOW, total_ns=1, think=True, notes=notes)
    assert out["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "t", "function": {"index": 0, "name": "f", "arguments": {"q": "x"}}}],
    }
    assert notes == []


def test_null_fields_and_absent_usage_still_translate() -> None:
    body = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": None,
                    "reasoning": "r",
                    "tool_calls": [
                        {"id": None, "function": {"name": "f", "arguments": None}},
                        {"id": "t2", "function": {"name": "g", "arguments": '{"a":1}'}},
                    ],
                },
                "finish_reason": None,
            }
        ],
    }
    out = translate(body)
    calls = out["message"].pop("tool_calls")
    assert out == {
        "model": "m",
        "created_at": "2026-01-01T00:00:01.2Z",
        "message": {"role": "assistant", "content": "", "thinking": "r"},
        "done": True,
        "done_reason": "stop",
        "total_duration": 1,
        "eval_duration": 1,
    }
    assert calls[0]["id"].startswith("call_")
    assert calls[0]["function"] == {"index": 0, "name": "f", "arguments": {}}
    assert calls[1] == {"id": "t2", "function": {"index": 1, "name": "g", "arguments": {"a": 1}}}


def test_empty_tool_calls_and_null_usage_and_completions_text() -> None:
    out = translate(answer({"content": "a", "tool_calls": []}, usage=None))
    assert out["message"] == {"role": "assistant", "content": "a"}
    assert "eval_count" not in out
    text = translate(answer(choice={"text": "t", "finish_reason": "length"}), generate=True)
    assert (text["response"], text["done_reason"]) == ("t", "length")
    empty = translate(answer(choice={"text": None}), generate=True)
    assert empty["response"] == ""


def test_boolean_token_counts_are_not_relayed() -> None:
    out = translate(answer({"content": "a"}, usage={"prompt_tokens": True, "completion_tokens": 3}))
    assert "prompt_eval_count" not in out
    assert out["eval_count"] == 3


MAGISTRAL = [
    {"type": "thinking", "thinking": [{"type": "text", "text": "2 plus 2..."}]},
    {"type": "text", "text": "The answer is 4."},
]


def test_magistrals_typed_content_parts_are_text_and_thinking() -> None:
    from ollama_openai_bridge.translate.answer import chat_response, generate_response

    body = {"choices": [{"message": {"content": MAGISTRAL}, "finish_reason": "stop"}]}
    out = chat_response(body, "m", now_ns=0, total_ns=1, think=True, notes=[])
    assert out["message"] == {
        "role": "assistant",
        "content": "The answer is 4.",
        "thinking": "2 plus 2...",
    }
    hidden = chat_response(body, "m", now_ns=0, total_ns=1, think=False, notes=[])
    assert hidden["message"] == {"role": "assistant", "content": "The answer is 4."}
    gen = generate_response(body, "m", now_ns=0, total_ns=1, think=True)
    assert (gen["response"], gen["thinking"]) == ("The answer is 4.", "2 plus 2...")


def test_magistrals_typed_parts_streamed() -> None:
    import orjson

    from ollama_openai_bridge.translate.stream import StreamTranslator

    tr = StreamTranslator("m", generate=False, think=True, start_ns=0)
    out = b""
    for part in MAGISTRAL:
        event = {"choices": [{"index": 0, "delta": {"content": [part]}}]}
        out += tr.feed(orjson.dumps(event).decode())
    lines = [orjson.loads(x) for x in out.splitlines()]
    assert [x["message"].get("thinking") for x in lines] == ["2 plus 2...", None]
    assert "".join(x["message"]["content"] for x in lines) == "The answer is 4."
