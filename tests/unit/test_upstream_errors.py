from __future__ import annotations

from typing import Any

import orjson
import pytest

from ollama_openai_proxy.upstream_errors import (
    MAX_MESSAGE,
    error_message,
    stream_error,
    upstream_status_error,
)
from tests.conftest import contract

CASES = [
    c
    for c in contract("mapping_error_openai_to_ollama.json")["cases"]
    if c["when"] == "before streaming"
]


@pytest.mark.parametrize("case", CASES, ids=[str(c["openai_status"]) for c in CASES])
def test_golden_error_mapping(case: dict[str, Any]) -> None:
    body = (
        orjson.dumps(case["openai_body"])
        if "openai_body" in case
        else case["openai_body_text"].encode()
    )
    err = upstream_status_error(
        case["openai_status"],
        body,
        client_model=case.get("client_model", "m"),
        endpoint="/chat/completions",
    )
    expected = case["expected_body"]["error"]
    if case["openai_status"] >= 500:
        # Issue #2: 5xx -> 502, and the message says it came from the backend.
        assert (err.status, err.message) == (
            502,
            f"upstream error (HTTP {case['openai_status']}): {expected}",
        )
    else:
        assert (err.status, err.message) == (case["expected_status"], expected)


@pytest.mark.parametrize(
    ("status", "mapped"),
    [
        (400, 400),
        (422, 400),
        (401, 401),
        (403, 403),
        (408, 504),
        (409, 409),
        (413, 413),
        (429, 429),
        (500, 502),
        (503, 502),
        (504, 504),
    ],
)
def test_status_mapping(status: int, mapped: int) -> None:
    err = upstream_status_error(
        status, b'{"error": {"message": "x"}}', client_model="m", endpoint="/e"
    )
    assert err.status == mapped
    assert err.upstream_status == status


def test_404_not_about_a_model_points_at_base_url() -> None:
    err = upstream_status_error(
        404, b"404 page not found", client_model="m", endpoint="/chat/completions"
    )
    assert err.status == 502
    assert "OPENAI_API_BASE_URL" in err.message


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (b'{"error": {"message": "m1", "code": "c1"}}', "m1", "c1"),
        (b'{"error": {"message": "m2", "type": "t2"}}', "m2", "t2"),
        (b'{"error": "plain"}', "plain", None),
        (b'{"detail": "vllm says"}', "vllm says", None),
        (b'{"detail": [{"loc": ["body"], "msg": "bad"}]}', '[{"loc":["body"],"msg":"bad"}]', None),
        (b'{"message": "m3"}', "m3", None),
        (b"Bad Gateway", "Bad Gateway", None),
        (b"", "upstream returned HTTP 500", None),
        (b"{}", "upstream returned HTTP 500", None),
        ({"error": {"detail": "d"}}, "d", None),
    ],
)
def test_error_message_extraction(body: Any, message: str, code: str | None) -> None:
    assert error_message(body, 500) == (message, code)


def test_long_messages_are_truncated() -> None:
    text, _ = error_message(b"x" * 5000, 500)
    assert len(text) == MAX_MESSAGE + 3


def test_stream_error_codes() -> None:
    assert (
        stream_error(
            {"message": "slow down", "code": "429"}, client_model="m", endpoint="/e"
        ).status
        == 429
    )
    assert (
        stream_error({"message": "no", "code": 400}, client_model="m", endpoint="/e").status == 400
    )
    err = stream_error("just text", client_model="m", endpoint="/e")
    assert (err.status, err.message) == (502, "upstream error: just text")
