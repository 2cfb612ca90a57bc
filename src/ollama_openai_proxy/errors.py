"""The proxy's one exception hierarchy, and the one place that renders error bodies.

    ProxyError                      any failure we answer with an error body
    ├── BadRequest (400)            the client's request is malformed or invalid
    │   └── PayloadTooLarge (413)   the body exceeds REQUEST_MAX_SIZE
    ├── ModelNotFound (404)         the model is unknown (here or upstream)
    ├── RouteNotFound (404/405)     no such route / method
    └── UpstreamError               the backend failed us
        ├── UpstreamStatusError     it answered with an HTTP error status
        ├── UpstreamUnavailable     connection refused/reset, DNS, TLS (502)
        ├── UpstreamTimeout         no answer in time (504)
        └── UpstreamProtocolError   it answered something we cannot read (502)

Ollama clients read errors as ``{"error": "<string>"}`` with ``Content-Type:
application/json`` -- ollama-js only parses the JSON ``error`` field when the content type says
JSON, and shows ``[object Object]`` if ``error`` is not a string (contract §4.9). OpenAI clients
(`/v1/*`) expect ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


class ProxyError(Exception):
    """Base of every error the proxy answers with an error body."""

    status: int = 500
    openai_type: str = "api_error"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ProxyError):
    status = 400
    openai_type = "invalid_request_error"


class PayloadTooLarge(BadRequest):
    status = 413


class ModelNotFound(ProxyError):
    status = 404
    openai_type = "not_found_error"

    def __init__(self, model: str) -> None:
        # Ollama's exact wording on chat/generate/show (routes.go), single quotes included.
        super().__init__(f"model '{model}' not found")
        self.model = model


class RouteNotFound(ProxyError):
    status = 404
    openai_type = "not_found_error"


class UpstreamError(ProxyError):
    status = 502


class UpstreamStatusError(UpstreamError):
    """The backend answered with an error status; ``upstream_status`` keeps its code."""

    def __init__(
        self,
        message: str,
        upstream_status: int,
        status: int,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, status)
        self.upstream_status = upstream_status
        self.code = code
        self.detail = message if detail is None else detail  # the backend's own words


class UpstreamUnavailable(UpstreamError):
    status = 502


class UpstreamTimeout(UpstreamError):
    status = 504


class UpstreamProtocolError(UpstreamError):
    status = 502


class Redactor:
    """Removes secrets (the upstream key, inbound keys) from any text we emit.

    Backends sometimes echo the key they received in an error message; it must never reach a
    client or a log line.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text


def ollama_error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def openai_error_body(exc: ProxyError, message: str) -> bytes:
    code = getattr(exc, "code", None)
    return orjson.dumps(
        {"error": {"message": message, "type": exc.openai_type, "param": None, "code": code}}
    )


def render_error(exc: ProxyError, *, openai: bool, redact: Redactor) -> tuple[int, bytes]:
    """Status and JSON body for ``exc``, in Ollama's (default) or OpenAI's error shape."""
    message = redact(exc.message)
    body = openai_error_body(exc, message) if openai else ollama_error_body(message)
    return exc.status, body
