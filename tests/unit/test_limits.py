"""Request limits (limits.py): what each refuses, in which words, and what it lets through."""

from __future__ import annotations

from typing import Any

import pytest

from ollama_openai_bridge.config import Settings
from ollama_openai_bridge.errors import BadRequest, TooMany
from ollama_openai_bridge.limits import (
    Limits,
    check_chat,
    check_generate,
    check_openai,
    check_values,
)

SMALL = Limits(values=1000, messages=3, images=4, tools=2, stop=2, context=5, embed_inputs=2)
USER = {"role": "user", "content": "x"}


def test_defaults_are_the_settings_defaults() -> None:
    assert Settings(_env_file=None).limits() == Limits()  # type: ignore[call-arg]


def test_values_over_the_limit_are_refused_before_parsing() -> None:
    body = b"[" + b"0," * 1000 + b"0]"  # 1,001 values, 1,000 commas
    check_values(body, 1000)
    with pytest.raises(BadRequest) as info:
        check_values(b"[" + b"0," * 1001 + b"0]", 1000)
    assert info.value.status == 400
    assert "more than 1000 commas" in info.value.message
    assert "REQUEST_MAX_VALUES" in info.value.message


def test_commas_in_text_count_too() -> None:
    with pytest.raises(BadRequest):
        check_values(b'{"prompt": "' + b"," * 1001 + b'"}', 1000)


def test_a_body_no_longer_than_the_limit_is_not_even_scanned() -> None:
    class Unscannable(bytes):
        def count(self, *_: Any) -> int:
            raise AssertionError("scanned")

    check_values(Unscannable(b"," * 1000), 1000)


def _too_many(check: Any, req: dict[str, Any]) -> TooMany:
    with pytest.raises(TooMany) as info:
        check(req, SMALL)
    assert info.value.status == 400
    assert info.value.code == "array_above_max_length"
    return info.value


@pytest.mark.parametrize(
    ("req", "message", "param"),
    [
        (
            {"messages": [USER] * 4},
            "too many items in 'messages': 4 (at most 3, REQUEST_MAX_MESSAGES)",
            "messages",
        ),
        (
            {"messages": [USER], "tools": [{}] * 3},
            "too many items in 'tools': 3 (at most 2, REQUEST_MAX_TOOLS)",
            "tools",
        ),
        (
            {"messages": [USER], "options": {"stop": ["a", "b", "c"]}},
            "too many items in 'options.stop': 3 (at most 2, REQUEST_MAX_STOP)",
            "stop",
        ),
        (
            # the limit is for all messages together: the one that crosses it is named
            {"messages": [{**USER, "images": ["QUJD"] * 3}, {**USER, "images": ["QUJD"] * 2}]},
            "too many items in 'messages.1.images': 5 (at most 4, REQUEST_MAX_IMAGES)",
            "messages",
        ),
        (
            {"messages": [USER, {"role": "assistant", "tool_calls": [{}] * 3}]},
            "too many items in 'messages.1.tool_calls': 3 (at most 2, REQUEST_MAX_TOOLS)",
            "messages[1].tool_calls",
        ),
    ],
)
def test_chat_limits(req: dict[str, Any], message: str, param: str) -> None:
    error = _too_many(check_chat, req)
    assert (error.message, error.param) == (message, param)


def test_chat_within_the_limits_passes() -> None:
    check_chat(
        {
            "messages": [
                {**USER, "images": ["QUJD"] * 2},
                {"role": "assistant", "tool_calls": [{}] * 2},
                {**USER, "images": ["QUJD"] * 2},
            ],
            "tools": [{}] * 2,
            "options": {"stop": "a bare string is one sequence"},
        },
        SMALL,
    )
    check_chat({"messages": None, "tools": None, "options": None}, SMALL)
    check_chat({}, SMALL)


@pytest.mark.parametrize(
    ("req", "field"),
    [
        ({"images": ["QUJD"] * 5}, "images"),
        ({"context": list(range(6))}, "context"),
        ({"options": {"stop": ["a"] * 3}}, "options.stop"),
    ],
)
def test_generate_limits(req: dict[str, Any], field: str) -> None:
    assert f"'{field}'" in _too_many(check_generate, req).message


def test_generate_within_the_limits_passes() -> None:
    check_generate({"images": ["QUJD"] * 4, "context": [1] * 5, "options": {}}, SMALL)


@pytest.mark.parametrize(
    ("req", "param"),
    [
        ({"messages": [USER] * 4}, "messages"),
        ({"tools": [{}] * 3}, "tools"),
        ({"stop": ["a"] * 3}, "stop"),
        ({"input": ["a"] * 3}, "input"),
    ],
)
def test_openai_limits_name_the_param(req: dict[str, Any], param: str) -> None:
    assert _too_many(check_openai, req).param == param


def test_openai_bodies_of_other_types_are_the_backends_to_judge() -> None:
    check_openai({"messages": "x", "tools": 3, "stop": "x", "input": "x"}, SMALL)


def test_many_values_are_counted_before_the_validator_builds_its_tree() -> None:
    import time

    import orjson

    from ollama_openai_bridge.errors import TooMany
    from ollama_openai_bridge.limits import Limits, check_chat, precheck

    body = orjson.dumps({"model": "m", "messages": [{}] * 499_990})
    started = time.perf_counter()
    with pytest.raises(TooMany, match="REQUEST_MAX_MESSAGES"):
        precheck(body, check_chat, Limits(messages=100_000))
    assert time.perf_counter() - started < 1.0  # the validator took 5 s over this body
    # Not JSON, or the wrong types: left for the validator to name.
    precheck(b"{" + b"," * 20_000, check_chat, Limits())
    precheck(orjson.dumps({"messages": "x" * 20_000 + "," * 20_000}), check_chat, Limits())
    precheck(orjson.dumps({"messages": [1] * 20_000}), check_chat, Limits())
