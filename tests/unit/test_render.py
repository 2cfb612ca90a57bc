"""The one renderer: bodies per dialect, headers per error, redaction and the one log event."""

from __future__ import annotations

import orjson
import pytest
from structlog.testing import capture_logs

from ollama_openai_bridge.access import AccessRecord
from ollama_openai_bridge.errors import (
    BadRequest,
    Busy,
    ProxyError,
    RateLimited,
    Redactor,
    Unauthorized,
    UpstreamModelNotFound,
    UpstreamTimeout,
    malformed,
    reading,
    sample,
)
from ollama_openai_bridge.render import INTERNAL, Dialect, Renderer, dialect_of

SECRET = "sk-live-0123456789"
R = Renderer(Redactor([SECRET]))


@pytest.mark.parametrize(
    ("exc", "dialect", "body"),
    [
        (BadRequest("bad"), Dialect.OLLAMA, {"error": "bad"}),
        (
            BadRequest("bad"),
            Dialect.OPENAI,
            {
                "error": {
                    "message": "bad",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
        (
            UpstreamModelNotFound("model 'x' not found", 404, 404, "model_not_found"),
            Dialect.OPENAI,
            {
                "error": {
                    "message": "model 'x' not found",
                    "type": "not_found_error",
                    "param": None,
                    "code": "model_not_found",
                }
            },
        ),
        (ProxyError(f"key {SECRET} leaked"), Dialect.OLLAMA, {"error": "key [redacted] leaked"}),
    ],
)
def test_bodies_by_dialect(exc: ProxyError, dialect: Dialect, body: object) -> None:
    assert orjson.loads(R.body(exc, dialect)) == body


def test_response_status_headers_and_one_log_event() -> None:
    rec = AccessRecord()
    with capture_logs() as logs:
        r = R.response(RateLimited("slow down", 7), Dialect.OLLAMA, rec)
    assert r.status_code == 429
    assert (b"retry-after", b"7") in r.raw_headers
    assert (b"content-type", b"application/json; charset=utf-8") in r.raw_headers
    assert logs == [
        {
            "event": "request_failed",
            "status": 429,
            "reason": "RateLimited",
            "error": "slow down",
            "log_level": "warning",
        }
    ]
    assert (rec.error, rec.error_status) == ("slow down", 429)
    unauthorized = R.response(Unauthorized("unauthorized"), Dialect.OPENAI)
    assert (b"www-authenticate", b"Bearer") in unauthorized.raw_headers


def test_stream_errors_per_dialect_are_redacted_and_logged_as_errors() -> None:
    rec = AccessRecord()
    exc = UpstreamTimeout(f"stalled {SECRET}")
    with capture_logs() as logs:
        line = R.stream_error(exc, Dialect.OLLAMA, rec)
        event = R.stream_error(exc, Dialect.OPENAI, None)
    assert line == b'{"error":"stalled [redacted]"}\n'
    assert event.startswith(b"data: {")
    assert event.endswith(b"}\n\n")
    assert orjson.loads(event[6:])["error"]["message"] == "stalled [redacted]"
    assert [(e["log_level"], e["stage"], e["status"]) for e in logs] == [
        ("error", "stream", 504),
        ("error", "stream", 504),
    ]
    assert rec.fields() == {"error": "stalled [redacted]", "error_status": 504}


def test_unexpected_errors_are_logged_with_their_traceback() -> None:
    with capture_logs() as logs:
        exc = Renderer.unexpected(RuntimeError("bug"))
    assert (exc.status, exc.message) == (500, INTERNAL)
    assert logs[0]["event"] == "unhandled_exception"
    assert isinstance(logs[0]["exc_info"], RuntimeError)


def test_route_errors_in_go_words() -> None:
    assert Renderer.route_error(404, "Not Found").message == "404 page not found"
    assert Renderer.route_error(405, "Method Not Allowed").status == 405
    assert Renderer.route_error(418, "teapot").message == "418 teapot"


def test_dialects() -> None:
    assert dialect_of("/v1/chat/completions") is Dialect.OPENAI
    assert dialect_of("/api/chat") is Dialect.OLLAMA
    assert dialect_of("/") is Dialect.OLLAMA
    assert dialect_of("/v1/messages") is Dialect.ANTHROPIC
    assert dialect_of("/v1/messages/count_tokens") is Dialect.ANTHROPIC
    assert dialect_of("/v1/messages/batches") is Dialect.ANTHROPIC  # unknown: a 404 they read
    assert dialect_of("/v1/messagesx") is Dialect.OPENAI


# Anthropic's error type per status (platform.claude.com/docs/en/api/errors; ollama anthropic.go
# NewError): what the anthropic SDKs and Claude Code read to decide whether to retry.
@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (BadRequest("bad"), "invalid_request_error"),
        (BadRequest("slow body", 408), "invalid_request_error"),
        (Unauthorized("unauthorized"), "authentication_error"),
        (ProxyError("forbidden", 403), "permission_error"),
        (UpstreamModelNotFound("model 'x' not found", 404, 404), "not_found_error"),
        (ProxyError("405 method not allowed", 405), "not_found_error"),
        (ProxyError("too large", 413), "request_too_large"),
        (RateLimited("slow down", 3), "rate_limit_error"),
        (ProxyError("bug"), "api_error"),
        (ProxyError("upstream failed", 502), "api_error"),
        (Busy("busy"), "overloaded_error"),
        (UpstreamTimeout("late"), "timeout_error"),
        (ProxyError("overloaded", 529), "overloaded_error"),
    ],
)
def test_anthropic_bodies_name_the_type_by_status(exc: ProxyError, kind: str) -> None:
    assert orjson.loads(R.body(exc, Dialect.ANTHROPIC)) == {
        "type": "error",
        "error": {"type": kind, "message": exc.message},
    }
    assert R.response(exc, Dialect.ANTHROPIC).status_code == exc.status


def test_anthropic_stream_error_is_an_error_event() -> None:
    """The anthropic SDKs raise on ``event: error`` (anthropic-sdk-python _streaming.py); its
    data is the same body as before a stream, redacted."""
    event = R.stream_error(UpstreamTimeout(f"stalled {SECRET}"), Dialect.ANTHROPIC, None)
    head, data = event.split(b"\n", 1)
    assert head == b"event: error"
    assert data.startswith(b"data: ")
    assert data.endswith(b"\n\n")
    assert orjson.loads(data[6:]) == {
        "type": "error",
        "error": {"type": "timeout_error", "message": "stalled [redacted]"},
    }


def test_busy_and_malformed_shapes() -> None:
    assert Busy("x").status == 503
    err = malformed("a thing", b"\xff" + b"y" * 500)
    assert err.status == 502
    assert err.message.startswith("upstream sent a thing: '\\\\xffyyy")
    assert err.message.endswith("...")
    assert sample({"a": 1}) == repr(repr({"a": 1}))
    with pytest.raises(type(err), match="upstream sent an answer: "), reading("an answer", {}):
        raise KeyError("choices")
    with pytest.raises(BadRequest), reading("an answer", {}):
        raise BadRequest("passes through")


def test_redactor_on_bytes() -> None:
    assert Redactor([SECRET]).bytes(f'{{"m":"{SECRET}"}}'.encode()) == b'{"m":"[redacted]"}'
    assert Redactor(["abc"]).bytes(b"abc") == b"abc"  # too short to be a secret
