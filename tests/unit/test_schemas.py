from __future__ import annotations

from typing import Any

import pytest

from ollama_openai_proxy.errors import BadRequest
from ollama_openai_proxy.schemas import CHAT, SHOW, check_think, openapi_body, parse
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
