"""The one renderer of errors: every error the proxy answers, before or during a stream, in the
caller's dialect, redacted, and logged once as ``request_failed``.

Dialects and what their clients read:

- Ollama (``/api/*``, ``/``): ``{"error": "<string>"}`` with ``Content-Type: application/json``
  -- ollama-js parses the ``error`` field only when the content type says JSON and shows
  ``[object Object]`` if it is not a string (contract §4.9). In a stream, one
  ``{"error": "..."}`` line and no done line: ollama-python raises ResponseError, ollama-js
  throws (contract §3.5).
- OpenAI (``/v1/*``): ``{"error": {"message", "type", "param", "code"}}``; in an SSE stream, one
  ``data:`` event with that object -- the openai SDKs raise APIError on an event whose data has
  an ``error`` key (openai-python ``_streaming.py``).
- Responses (a ``/v1/responses`` stream under way; before it, OpenAI's): two events. First
  ``error``, with the fields of openai-python's ResponseErrorEvent (``code``, ``message``,
  ``param``) and also the nested ``error`` object OpenAI's servers send (openai-dotnet#881), on
  which the openai SDK raises APIError (``_streaming.py``; openai-python#2487). Then
  ``response.failed``, the terminal event, with the Response streamed so far, ``status:
  failed`` and ``error {code, message}``: Codex ignores ``error`` events, ends the turn on this
  one and retries it (codex-rs codex-api ``sse/responses.rs``).
- Anthropic (``/v1/messages*``): ``{"type": "error", "error": {"type", "message"}}``, the type
  named by the status as Anthropic's API names it (platform.claude.com/docs/en/api/errors; Ollama's
  anthropic.NewError does the same); in an SSE stream, one ``event: error`` with that object --
  the anthropic SDKs raise APIStatusError on it (anthropic-sdk-python ``_streaming.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

import orjson
import structlog
from starlette.responses import Response

from ollama_openai_bridge.access import AccessRecord
from ollama_openai_bridge.errors import (
    ProxyError,
    RateLimited,
    Redactor,
    RouteNotFound,
    Unauthorized,
    UpstreamStatusError,
)
from ollama_openai_bridge.http import JSONBytes

log = structlog.get_logger("ollama_openai_bridge")

INTERNAL = "internal proxy error; see the proxy's log"


class Dialect(Enum):
    OLLAMA = "ollama"
    OPENAI = "openai"
    RESPONSES = "responses"  # a /v1/responses stream; its bodies are OpenAI's
    ANTHROPIC = "anthropic"


ANTHROPIC_PREFIX = "/v1/messages"

# A Responses stream's state for its last events: the next sequence_number and the Response
# as streamed so far (translate/responses_stream.py ResponsesStream.snapshot).
Snapshot = Callable[[], tuple[int, dict[str, Any]]]


def dialect_of(path: str) -> Dialect:
    """The error dialect a route's clients read: Anthropic's under ``/v1/messages`` (and its
    sub-paths, ``/v1/messages/count_tokens`` or an unknown ``/v1/messages/batches``), OpenAI's
    elsewhere under ``/v1/``, Ollama's everywhere else."""
    if path.startswith("/v1/"):
        if path.startswith(ANTHROPIC_PREFIX) and (
            len(path) == len(ANTHROPIC_PREFIX) or path[len(ANTHROPIC_PREFIX)] == "/"
        ):
            return Dialect.ANTHROPIC
        return Dialect.OPENAI
    return Dialect.OLLAMA


# Anthropic's error type per status (platform.claude.com/docs/en/api/errors): other 4xx are
# invalid_request_error, other 5xx api_error. 503 is overloaded_error, as Ollama's own
# Anthropic layer says (anthropic.go NewError): the anthropic SDKs and Claude Code retry it.
_ANTHROPIC_TYPES = {
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    """The Anthropic ``error.type`` for an HTTP status."""
    named = _ANTHROPIC_TYPES.get(status)
    if named is not None:
        return named
    return "invalid_request_error" if status < 500 else "api_error"


class Renderer:
    """Renders :class:`ProxyError` for one app; holds the app's :class:`Redactor`."""

    def __init__(self, redact: Redactor) -> None:
        self.redact = redact

    def body(self, exc: ProxyError, dialect: Dialect) -> bytes:
        """The JSON error body (bytes), the message redacted."""
        if dialect is Dialect.OLLAMA:
            return orjson.dumps({"error": self.redact(exc.message)})
        if dialect is Dialect.ANTHROPIC:
            return orjson.dumps(
                {
                    "type": "error",
                    "error": {
                        "type": anthropic_type(exc.status),
                        "message": self.redact(exc.message),
                    },
                }
            )
        return orjson.dumps({"error": self._openai(exc)})

    def _openai(self, exc: ProxyError) -> dict[str, Any]:
        return {
            "message": self.redact(exc.message),
            "type": exc.openai_type,
            "param": exc.param,
            "code": exc.code,
        }

    def failed(self, exc: ProxyError, rec: AccessRecord | None, *, stage: str = "") -> None:
        """Log ``request_failed`` once, with the reason (the error's type), and note the error on
        the access record."""
        message = self.redact(exc.message)
        if rec is not None:
            rec.error, rec.error_status = message, exc.status
        level = log.warning if exc.status < 500 else log.error
        level(
            "request_failed",
            status=exc.status,
            reason=type(exc).__name__,
            error=message,
            **({"stage": stage} if stage else {}),
        )

    def response(
        self, exc: ProxyError, dialect: Dialect, rec: AccessRecord | None = None
    ) -> Response:
        """The whole error response: status, JSON body, and the headers the error calls for
        (``WWW-Authenticate`` on 401, ``Retry-After`` on 429 or the backend's with its error,
        ``x-should-retry: false`` on a 429 not worth retrying soon, ``Allow`` on 405)."""
        self.failed(exc, rec)
        body = self.body(exc, dialect)
        response = JSONBytes(body, exc.status)
        if isinstance(exc, Unauthorized):
            response.raw_headers.append((b"www-authenticate", b"Bearer"))
        elif isinstance(exc, RateLimited):
            response.raw_headers.append((b"retry-after", str(exc.retry_after).encode()))
            if exc.should_retry is False:
                response.raw_headers.append((b"x-should-retry", b"false"))
        elif isinstance(exc, RouteNotFound) and exc.allow:
            response.raw_headers.append((b"allow", exc.allow.encode()))
        elif isinstance(exc, UpstreamStatusError) and exc.retry_after:
            response.raw_headers.append((b"retry-after", exc.retry_after.encode()))
        return response

    def stream_error(
        self,
        exc: ProxyError,
        dialect: Dialect,
        rec: AccessRecord | None,
        snapshot: Snapshot | None = None,
    ) -> bytes:
        """The error as the last piece of a stream already under way (logged here).
        ``snapshot``: a Responses stream's state (:data:`Snapshot`), for its last events."""
        self.failed(exc, rec, stage="stream")
        if dialect is Dialect.RESPONSES:
            return self._responses_failure(exc, snapshot)
        if dialect is Dialect.OPENAI:
            return b"data: " + self.body(exc, dialect) + b"\n\n"
        if dialect is Dialect.ANTHROPIC:
            return b"event: error\ndata: " + self.body(exc, dialect) + b"\n\n"
        return self.body(exc, dialect) + b"\n"

    def _responses_failure(self, exc: ProxyError, snapshot: Snapshot | None) -> bytes:
        seq, resp = snapshot() if snapshot is not None else (0, {"object": "response"})
        error = self._openai(exc)
        # response.error.code is one of OpenAI's few words (openai-python ResponseError); Codex
        # reads rate_limit_exceeded to wait before it retries (codex-api sse/responses.rs). The
        # error event's code is free: the backend's own, when it gave one.
        limited = exc.status == 429 or exc.code == "rate_limit_exceeded"  # or the backend's event
        code = "rate_limit_exceeded" if limited else "server_error"
        event = {
            "type": "error",
            "code": exc.code or code,
            "message": error["message"],
            "param": exc.param,
            "error": error,
            "sequence_number": seq,
        }
        failed = {
            "type": "response.failed",
            "response": {
                **resp,
                "status": "failed",
                "error": {"code": code, "message": error["message"]},
            },
            "sequence_number": seq + 1,
        }
        return (
            b"event: error\ndata: "
            + orjson.dumps(event)
            + b"\n\nevent: response.failed\ndata: "
            + orjson.dumps(failed)
            + b"\n\n"
        )

    @staticmethod
    def unexpected(exc: BaseException) -> ProxyError:
        """A bug below us: log it with its traceback; the client gets a 500 in its dialect."""
        log.error("unhandled_exception", exc_info=exc)
        return ProxyError(INTERNAL, 500)

    @staticmethod
    def route_error(status: int, detail: str, allow: str = "") -> ProxyError:
        """Starlette's routing errors in Ollama's words (Go's net/http); ``allow``: the path's
        methods, for a 405's ``Allow`` header."""
        if status == 404:
            return RouteNotFound("404 page not found", 404)
        if status == 405:
            return RouteNotFound("405 method not allowed", 405, allow)
        return ProxyError(f"{status} {detail}", status)
