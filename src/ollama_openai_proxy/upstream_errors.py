"""Backend error answers -> the error a client should see (contract §4.9).

One function, used for HTTP error statuses before a stream starts and for error objects a backend
sends inside an SSE stream, so both report the same message and status.
"""

from __future__ import annotations

from typing import Any

import orjson

from ollama_openai_proxy.errors import (
    UpstreamEndpointNotFound,
    UpstreamModelNotFound,
    UpstreamStatusError,
    echo,
)

MAX_MESSAGE = 1000


def error_message(body: Any, status: int | None = None) -> tuple[str, str | None]:
    """``(message, code)`` from an OpenAI, FastAPI (vLLM) or plain-text error body."""
    obj = body
    if isinstance(body, bytes | bytearray):
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = body.decode("utf-8", "replace").strip()
    code: Any = None
    message: Any = None
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or err.get("msg")
            code = err.get("code") or err.get("type")
        elif isinstance(err, str):
            message = err
        if message is None:
            message = obj.get("detail")
        if message is None and isinstance(obj.get("message"), str):
            message = obj["message"]
    elif isinstance(obj, str) and obj:
        message = obj
    if not message:
        message = f"upstream returned HTTP {status}" if status else "upstream error"
    text = message if isinstance(message, str) else orjson.dumps(message).decode()
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE] + "..."
    return text, None if code is None else str(code)


def _is_model_error(message: str, code: str | None) -> bool:
    if code == "model_not_found":
        return True
    text = message.lower()
    return "model" in text and any(w in text for w in ("not found", "does not exist", "unknown"))


def upstream_status_error(
    status: int, body: Any, *, client_model: str | None, endpoint: str
) -> UpstreamStatusError:
    """Map a backend error status to what an Ollama client should get."""
    message, code = error_message(body, status)
    if status == 404:
        if client_model is not None and _is_model_error(message, code):
            return UpstreamModelNotFound(
                f"model '{echo(client_model)}' not found", status, 404, code
            )
        # A 404 on every request usually means a base URL without /v1.
        return UpstreamEndpointNotFound(
            f"upstream answered HTTP 404 for {endpoint}: {message} (if every request fails "
            "like this, check that OPENAI_API_BASE_URL ends with /v1)",
            status,
            502,
            code,
            message,
        )
    if status in (400, 422):
        mapped = 400
    elif status == 408:
        mapped = 504
    elif status >= 500:
        mapped = 504 if status == 504 else 502
        message = f"upstream error (HTTP {status}): {message}"
    else:  # 401, 403, 409, 413, 429, ... keep their meaning
        mapped = status
    return UpstreamStatusError(message, status, mapped, code)


def stream_error(err: Any, *, client_model: str | None, endpoint: str) -> UpstreamStatusError:
    """An ``{"error": ...}`` object inside an SSE stream."""
    if isinstance(err, dict):
        code = err.get("code")
        if isinstance(code, str) and code.isdigit():
            code = int(code)
        if isinstance(code, int) and 400 <= code < 600:
            return upstream_status_error(
                code, {"error": err}, client_model=client_model, endpoint=endpoint
            )
    message, code_text = error_message({"error": err})
    return UpstreamStatusError(f"upstream error: {message}", 200, 502, code_text)
