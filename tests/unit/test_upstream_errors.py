from __future__ import annotations

from typing import Any

import orjson
import pytest

from ollama_openai_bridge.errors import UpstreamRefusedParameter
from ollama_openai_bridge.upstream_errors import (
    MAX_MESSAGE,
    error_message,
    refused_parameter,
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


# --- a refused parameter, in each backend's words ------------------------------------------------

REFUSALS = [
    # OpenAI reasoning models (platform.openai.com; microsoft/vscode-copilot-release#8065)
    (
        {
            "error": {
                "message": "Unsupported parameter: 'max_tokens' is not supported with this "
                "model. Use 'max_completion_tokens' instead.",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "unsupported_parameter",
            }
        },
        ("max_tokens", "max_completion_tokens"),
    ),
    (
        {
            "error": {
                "message": "Unsupported value: 'temperature' does not support 0.2 with this "
                "model. Only the default (1) value is supported.",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "unsupported_value",
            }
        },
        ("temperature", None),
    ),
    (
        {"error": {"message": "Unknown parameter: 'stream_options.include_usage'.", "param": None}},
        ("stream_options", None),
    ),
    # Mistral: pydantic's extra_forbidden under "message"
    (
        {
            "object": "error",
            "message": {
                "detail": [
                    {
                        "type": "extra_forbidden",
                        "loc": ["body", "stream_options"],
                        "msg": "Extra inputs are not permitted",
                        "input": {"include_usage": True},
                    }
                ]
            },
            "type": "invalid_request_message_error",
        },
        ("stream_options", None),
    ),
    # Azure / older OpenAI deployments
    (
        {"error": {"message": "Unrecognized request argument supplied: random_seed"}},
        ("random_seed", None),
    ),
    # vLLM with a strict request model: pydantic's errors printed into the message
    (
        {
            "object": "error",
            "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'top_k'), 'msg': 'Extra "
            "inputs are not permitted', 'input': 5}]",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
        ("top_k", None),
    ),
    # LiteLLM
    (
        {
            "error": {
                "message": "litellm.UnsupportedParamsError: openai does not support parameters: "
                "['reasoning_effort'], for model=gpt-4o. To drop these, set "
                "`litellm.drop_params=True`"
            }
        },
        ("reasoning_effort", None),
    ),
    # OpenAI's ada embeddings, vLLM without a matryoshka model: no name given, only one meant
    (
        {"error": {"message": "This model does not support specifying dimensions.", "param": None}},
        ("dimensions", None),
    ),
    (
        {"object": "error", "message": 'Model "bge" does not support matryoshka representation'},
        ("dimensions", None),
    ),
    # Gemini's OpenAI endpoint: the error object inside a list
    (
        [
            {
                "error": {
                    "code": 400,
                    "message": 'Invalid JSON payload received. Unknown name "seed": Cannot find '
                    "field.",
                    "status": "INVALID_ARGUMENT",
                }
            }
        ],
        ("seed", None),
    ),
    # Gateways' backtick form
    (
        {"error": {"message": "`parallel_tool_calls` is not supported"}},
        ("parallel_tool_calls", None),
    ),
]


@pytest.mark.parametrize(("body", "refused"), REFUSALS)
def test_a_refused_parameter_is_named_in_each_backends_words(
    body: Any, refused: tuple[str, str | None]
) -> None:
    error = upstream_status_error(
        400, orjson.dumps(body), client_model="m", endpoint="/chat/completions"
    )
    assert isinstance(error, UpstreamRefusedParameter)
    assert (error.parameter, error.replacement) == refused
    assert error.status == 400  # still the client's 400 if it cannot be adapted


@pytest.mark.parametrize(
    "body",
    [
        # A wrong value of a field the backend takes is not a refusal of the field.
        {
            "error": {
                "message": "Invalid value for 'temperature'",
                "param": "temperature",
                "code": "invalid_value",
            }
        },
        {"error": {"message": "messages: field required"}},
        {"detail": [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}]},
        "plain text",
        # Inside a field the request needs: leaving out the whole field would change it.
        {
            "detail": [
                {
                    "type": "extra_forbidden",
                    "loc": ["body", "tools", 0, "function", "strict"],
                    "msg": "Extra inputs are not permitted",
                }
            ]
        },
        {"error": {"message": "Unknown parameter: 'messages[0].name'."}},
        # Not a refusal of the field, though the words come close.
        {"error": {"message": "Sorry, the value in 'stop' is not supported: too long"}},
    ],
)
def test_other_400s_are_not_refusals(body: Any) -> None:
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    error = upstream_status_error(400, raw, client_model="m", endpoint="/chat/completions")
    assert not isinstance(error, UpstreamRefusedParameter)
    assert refused_parameter(body, error.message) is None


def test_an_html_error_page_reads_as_its_title() -> None:
    page = (
        b"<!DOCTYPE html><html><head><title>502 Bad Gateway | example.com | Cloudflare</title>"
        + b"<style>"
        + b"x" * 2000
        + b"</style></head><body>...</body></html>"
    )
    error = upstream_status_error(502, page, client_model="m", endpoint="/chat/completions")
    assert error.message == (
        "upstream error (HTTP 502): an HTML page: 502 Bad Gateway | example.com | Cloudflare "
        "(not an API answer)"
    )
    assert error_message(b"<html><body>oops</body></html>", 500)[0] == (
        "an HTML page (not an API answer)"
    )


def test_a_model_not_found_code_is_a_404_whatever_the_status() -> None:
    from ollama_openai_bridge.errors import UpstreamModelNotFound

    body = {"error": {"message": "No such model", "code": "model_not_found"}}
    error = upstream_status_error(
        400, orjson.dumps(body), client_model="qwen3:8b", endpoint="/chat/completions"
    )
    assert isinstance(error, UpstreamModelNotFound)
    assert (error.status, error.message) == (404, "model 'qwen3:8b' not found")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        # Cloudflare's API envelope (Workers AI)
        ({"success": False, "errors": [{"message": "No such model m or task"}]}, "No such model"),
        ({"title": "Forbidden", "status": 403}, "Forbidden"),  # RFC 7807 without detail
        ({"title": "Bad Request", "detail": "max_tokens too large"}, "max_tokens too large"),
        ({"error": [{"message": "bad thing"}]}, "bad thing"),
        ({"error_message": "quota exhausted"}, "quota exhausted"),
        ({"error": {"error_description": "token expired"}}, "token expired"),
        ({"weird": {"nested": 1}}, 'upstream error: {"weird":{"nested":1}}'),  # quoted, not lost
        (b"\xef\xbb\xbf<!DOCTYPE html><title>Just a moment...</title>" + b"x" * 2000, "Just a"),
        (
            b"<?xml version='1.0'?><Error><Code>AccessDenied</Code>"
            b"<Message>Access Denied by policy</Message></Error>",
            "Access Denied by policy",
        ),
    ],
)
def test_error_shapes_in_the_wild_keep_the_backends_words(body: Any, words: str) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    message, _ = error_message(raw, 403)
    assert words in message
    assert len(message) < 400
