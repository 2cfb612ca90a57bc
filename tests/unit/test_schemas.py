from __future__ import annotations

from typing import Any

import orjson
import pytest

from ollama_openai_bridge.errors import BadRequest
from ollama_openai_bridge.schemas import (
    CHAT,
    GENERATE,
    SHOW,
    check_fields,
    check_think,
    openapi_body,
    parse,
    widen,
)
from tests.conftest import contract


@pytest.mark.parametrize(
    "case", contract("chat_bad_json.json")["cases"], ids=["truncated", "invalid", "empty", "think"]
)
def test_golden_bad_bodies_are_400(case: dict[str, Any]) -> None:
    with pytest.raises(BadRequest) as info:
        req = parse(CHAT, case["request_raw"].encode())
        check_think(req.get("think"))
    assert info.value.status == case["response"]["status"]
    expected = case["response"]["body"]["error"]
    if expected in ("missing request body",) or expected.startswith("invalid think"):
        assert info.value.message == expected  # Ollama's exact words
    else:
        assert info.value.message.startswith(
            "Invalid JSON: "
        )  # the decoder's words differ from Go's


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "invalid request: the body must be a JSON object"),
        (b'{"model": 1}', "invalid value for 'model': Input should be a valid string"),
        (
            b'{"messages": [{"content": "x"}]}',
            "invalid value for 'messages.0.role': Field required",
        ),
        (b'{"messages": "hi"}', "invalid value for 'messages': Input should be a valid array"),
        (b'{"stream": "maybe"}', "invalid value for 'stream'"),
        (b'{"options": []}', "invalid value for 'options'"),
        (
            b'{"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 3}}]}]}',
            "arguments",
        ),
    ],
)
def test_wrong_types_name_the_field(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse(CHAT, body)


def test_unknown_fields_ignored_and_plain_dicts_returned() -> None:
    req = parse(
        CHAT, b'{"model": "m", "foo": 1, "messages": [{"role": "user", "content": "x", "id": 2}]}'
    )
    assert req == {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert type(req) is dict


def test_think_values() -> None:
    for ok in (True, False, None, "low", "medium", "high", "max"):
        check_think(ok)
    with pytest.raises(BadRequest, match='invalid think value: "extreme"'):
        check_think("extreme")


def test_openapi_body_is_inlined() -> None:
    schema = openapi_body(CHAT)["requestBody"]["content"]["application/json"]["schema"]
    assert "$defs" not in str(schema)
    assert "messages" in schema["properties"]
    assert (
        "name"
        in openapi_body(SHOW)["requestBody"]["content"]["application/json"]["schema"]["properties"]
    )


# --- types as Go's decoder checks them (issue #14) ------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"top_logprobs": false}', "top_logprobs"),  # was accepted as 0
        (b'{"keep_alive": false}', "keep_alive"),  # was accepted as 0 (unload)
        (b'{"stream": "true"}', "stream"),
        (b'{"stream": 1}', "stream"),
        (b'{"top_logprobs": 2.5}', "top_logprobs"),
        (b'{"top_logprobs": 9223372036854775808}', "top_logprobs"),  # 2**63
        (
            b'{"messages": [{"role": "user", "tool_calls": [{"function": {"name": "f", "index": 1e300}}]}]}',
            "messages.0.tool_calls.0.function.index",
        ),
        (b'{"tools": [{"type": "custom", "function": {"name": "f"}}]}', "tools.0.type"),
        (b'{"tools": [{"type": "function", "function": {}}]}', "tools.0.function.name"),
    ],
)
def test_types_are_strict_and_integers_64_bits(body: bytes, field: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse(CHAT, body)
    assert info.value.message.startswith(f"invalid value for '{field}'")
    assert info.value.param == field


def test_generate_context_holds_64_bit_integers() -> None:
    with pytest.raises(BadRequest, match=r"invalid value for 'context\.1'"):
        parse(GENERATE, b'{"context": [1, 18446744073709551616]}')
    assert parse(GENERATE, b'{"context": [9223372036854775807, 3.0]}')["context"] == [2**63 - 1, 3]


def test_an_integral_float_is_an_integer_as_json_schema_counts_it() -> None:
    assert parse(CHAT, b'{"top_logprobs": 18.0}')["top_logprobs"] == 18


def test_a_union_field_is_named_once_with_each_alternative() -> None:
    with pytest.raises(BadRequest) as info:
        parse(CHAT, b'{"format": 5}')
    assert info.value.message == (
        "invalid value for 'format': Input should be a valid string or an object"
    )


def test_tools_keep_their_other_keys() -> None:
    tool = {"type": "function", "function": {"name": "f", "strict": True}, "x": 1}
    assert parse(CHAT, orjson.dumps({"tools": [tool]}))["tools"] == [tool]
    untyped = {"function": {"name": "f"}}  # the translation adds the type
    assert parse(CHAT, orjson.dumps({"tools": [untyped]}))["tools"] == [untyped]


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (
            {"think": ""},
            'invalid think value: "" (must be "high", "medium", "low", "max", true, or false)',
        ),
        ({"top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
        ({"top_logprobs": -1}, "top_logprobs must be between 0 and 20"),
        ({"format": "xml"}, 'invalid format: "xml" (use "json" or a JSON schema object)'),
    ],
)
def test_fields_checked_in_ollamas_words(req: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_fields(req)  # type: ignore[arg-type]
    assert info.value.message == message
    assert info.value.param == next(iter(req))


def test_fields_that_pass() -> None:
    for req in (
        {"think": "max"},
        {"top_logprobs": 20},
        {"format": ""},
        {"format": {"type": "object"}},
    ):
        check_fields(req)  # type: ignore[arg-type]


def test_widen_turns_integers_beyond_64_bits_into_floats_in_place() -> None:
    req: dict[str, Any] = {"tools": [{"function": {"parameters": {"maximum": 2**70, "min": -5}}}]}
    widen(req)
    assert req == {"tools": [{"function": {"parameters": {"maximum": float(2**70), "min": -5}}}]}
    assert orjson.dumps(req)


def test_widen_refuses_what_not_even_a_float_holds() -> None:
    with pytest.raises(BadRequest) as info:
        widen({"format": {"enum": [1, 10**400]}})
    assert info.value.message == "invalid value for 'format.enum.1': number out of range"


def test_the_documented_keep_alive_is_the_checked_one() -> None:
    from ollama_openai_bridge.translate.keepalive import MAX_KEEP_ALIVE_S

    schema = openapi_body(CHAT)["requestBody"]["content"]["application/json"]["schema"]
    number, *_ = schema["properties"]["keep_alive"]["anyOf"]
    assert number == {"type": "number", "maximum": MAX_KEEP_ALIVE_S}
