"""Backend error answers -> the error a client should see (contract §4.9).

One function, used for HTTP error statuses before a stream starts and for error objects a backend
sends inside an SSE stream, so both report the same message and status.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import orjson

from ollama_openai_bridge.errors import (
    UpstreamEndpointNotFound,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamRefusedParameter,
    UpstreamStatusError,
    echo,
    malformed,
)

MAX_MESSAGE = 1000
# How backends name a parameter they refuse, in their messages (the error object's "param" and
# pydantic's "loc" are read first, as structure). Sources: OpenAI ("Unsupported parameter: 'x'",
# "Unknown parameter: 'x'", "Unrecognized request argument supplied: x"), vLLM (pydantic errors
# printed into the message), LiteLLM ("does not support parameters: ['x']"), Google ("Unknown
# name \"x\""), and the backtick form of several gateways ("`x` is not supported").
_REFUSAL_PATTERNS = tuple(
    re.compile(p)
    for p in (
        r"Unsupported parameter: '([^']+)'",
        r"Unsupported value: '([^']+)'",
        r"Unknown parameter: '([^']+)'",
        r"Unrecognized request arguments? supplied: ([\w.]+)",
        r"'extra_forbidden', 'loc': \('body', '([^']+)'",
        r"does not support parameters: \[\s*'([^']+)'",
        r"Unknown name \"([^\"]+)\"",
        r"^[`'\"]([\w.]+)[`'\"] is not supported",
        r"(?:[Pp]arameter|[Aa]rgument|[Ff]ield) [`'\"]([\w.]+)[`'\"] is not supported",
        r"property '([^']+)' is unsupported",
    )
)
# Refusals that name no field but can only mean one (OpenAI's ada embeddings; vLLM for models
# without matryoshka representations).
_REFUSED_FIELDS = (
    (re.compile(r"does not support specifying dimensions"), "dimensions"),
    (re.compile(r"does not support matryoshka"), "dimensions"),
    # OpenRouter, for a model that always reasons asked not to (reasoning.mandatory in its
    # /models entry): without the reasoning object it reasons, and the answer hides it.
    (re.compile(r"Reasoning is mandatory for this endpoint"), "reasoning"),
)
_INSTEAD = re.compile(r"[Uu]se '([A-Za-z_][\w]*)' instead")
_FIELD = re.compile(r"^[A-Za-z_]\w*")  # a top-level field: "stream_options.include_usage" -> ...
# Objects the proxy adds itself, which may go whole when a field inside them is refused.
_OWN_OBJECTS = frozenset({"stream_options"})
# Codes OpenAI gives such refusals; a "param" with another code (a wrong value of a field the
# backend does take, say) is not a refusal of the field.
_REFUSAL_CODES = frozenset({"unsupported_parameter", "unknown_parameter", "unsupported_value"})


def error_message(body: Any, status: int | None = None) -> tuple[str, str | None]:
    """``(message, code)`` from a backend's error body, whatever its shape (issue #16):
    OpenAI's ``{"error": {...}}``, ``{"error": "..."}``, FastAPI's ``{"detail": ...}``
    (vLLM), ``{"message": ...}``, Gemini's list of those, ``{"error": [...]}``, Cloudflare's
    ``{"errors": [{"message"}]}``, RFC 7807's ``title``/``detail``, ``error_message``, plain
    text, an HTML page (its title) or an XML error (its ``Message``). A JSON body of no known
    shape is quoted, cut: the backend's own words are never lost."""
    obj = body
    if isinstance(body, bytes | bytearray):
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = body.decode("utf-8", "replace").strip()
    code: Any = None
    message: Any = None
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        obj = obj[0]  # Gemini's OpenAI endpoint wraps its error object in a list
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, list) and err and isinstance(err[0], dict):
            err = err[0]
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or err.get("msg")
            code = err.get("code") or err.get("type")
        elif isinstance(err, str):
            message = err
        if message is None and isinstance(err, dict) and err is not obj:
            message = _known_message(err)
        if message is None:
            message = _known_message(obj)
        if message is None and obj:
            message = _quoted(obj)
    elif isinstance(obj, str) and obj:
        message = _markup_message(obj) or obj
    if not message:
        message = f"upstream returned HTTP {status}" if status else "upstream error"
    text = message if isinstance(message, str) else orjson.dumps(message).decode()
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE] + "..."
    return text, None if code is None else str(code)


def _known_message(obj: dict[str, Any]) -> Any:
    for key in ("detail", "message", "error_message", "error_description"):
        value = obj.get(key)
        if value:
            return value
    errors = obj.get("errors")  # Cloudflare's API envelope
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0].get("message")
        if isinstance(first, str) and first:
            return first
    title = obj.get("title")  # RFC 7807 without detail
    return title if isinstance(title, str) and title else None


def _quoted(obj: Any) -> str:
    try:
        text = orjson.dumps(obj).decode()
    except TypeError:
        text = repr(obj)
    return f"upstream error: {text[:300]}"


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_XML_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.I | re.S)


def _markup_message(text: str) -> str | None:
    """An HTML error page (a CDN's, a gateway's) as its title, not a thousand characters of
    markup (issue #16); an XML error (S3-style gateways) as its ``Message``."""
    head = text[:4096].lstrip("\ufeff \t\r\n")
    if not head.startswith("<"):
        return None
    found = _XML_MESSAGE.search(head)
    if found and not head[:200].lower().lstrip("<!").startswith(("doctype html", "html")):
        return " ".join(found.group(1).split())[:300]
    found = _TITLE.search(head)
    title = " ".join(found.group(1).split()) if found else ""
    return f"an HTML page{': ' + title if title else ''} (not an API answer)"


def _dicts(obj: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    if depth > 4:
        return
    if isinstance(obj, dict):
        yield obj
        for value in obj.values():
            yield from _dicts(value, depth + 1)
    elif isinstance(obj, list):
        for value in obj[:20]:
            yield from _dicts(value, depth + 1)


def refused_parameter(body: Any, message: str) -> tuple[str, str | None] | None:
    """``(field, replacement)`` when a 400/422 answer says the backend refuses one request
    field (``replacement``: the name it asks for instead, if it says), else None.

    Read from the error object's ``param`` with a refusal ``code`` (OpenAI), pydantic's
    ``extra_forbidden`` with a ``loc`` (Mistral, FastAPI servers), or the message's own words
    (:data:`_REFUSAL_PATTERNS`). ``field`` is top-level: ``stream_options.include_usage`` ->
    ``stream_options``."""
    name: str | None = None
    for d in _dicts(body):
        param, code = d.get("param"), d.get("code")
        if isinstance(param, str) and param and code in _REFUSAL_CODES:
            name = param
            break
        loc = d.get("loc")
        if d.get("type") == "extra_forbidden" and isinstance(loc, list) and loc:
            path = loc[1:] if loc[0] == "body" else loc
            name = ".".join(str(part) for part in path)
            break
    if name is None:
        for pattern in _REFUSAL_PATTERNS:
            found = pattern.search(message)
            if found:
                name = found.group(1)
                break
        else:
            name = next((f for p, f in _REFUSED_FIELDS if p.search(message)), None)
    field = _FIELD.match(name) if name else None
    if field is None:
        return None
    top = field.group(0)
    if top != name and top not in _OWN_OBJECTS:
        # A field inside one the request needs (tools[0].function.strict, a message's name):
        # leaving out the whole field would change the request; the client gets the 400.
        return None
    instead = _INSTEAD.search(message)
    return top, instead.group(1) if instead else None


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
    if code == "model_not_found" and status != 404 and client_model is not None:
        # Some backends (gateways, OpenRouter) say it with a 400 and the code (issue #16).
        return UpstreamModelNotFound(f"model '{echo(client_model)}' not found", status, 404, code)
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
        if isinstance(body, bytes | bytearray):
            with contextlib.suppress(orjson.JSONDecodeError):
                body = orjson.loads(body)
        refused = refused_parameter(body, message)
        if refused is not None:
            return UpstreamRefusedParameter(message, status, code, *refused)
        mapped = 400
    elif status == 408:
        mapped = 504
    elif status >= 500:
        mapped = 504 if status == 504 else 502
        message = f"upstream error (HTTP {status}): {message}"
    else:  # 401, 403, 409, 413, 429, ... keep their meaning
        mapped = status
    return UpstreamStatusError(message, status, mapped, code)


def not_a_completion(body: dict[str, Any], client_model: str | None) -> UpstreamError:
    """A 200 JSON answer without ``choices``: the error it carries, in the backend's words
    (``{"error": ...}``, vLLM's ``{"object": "error"}``, ``{"message"}``, ``{"detail"}``; its
    ``code`` decides the status as for an error status), else the answer quoted as malformed.
    The same for a whole answer and for one that came instead of a stream (issue #16)."""
    err = body.get("error")
    if err:
        return stream_error(err, client_model=client_model, endpoint="/chat/completions")
    if body.get("object") == "error" or _known_message(body) is not None:
        return stream_error(body, client_model=client_model, endpoint="/chat/completions")
    return malformed("an answer that is not a completion", body)


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
        if code == "model_not_found":  # a gateway's way to say it, whatever the status
            return upstream_status_error(
                400, {"error": err}, client_model=client_model, endpoint=endpoint
            )
    message, code_text = error_message({"error": err})
    return UpstreamStatusError(f"upstream error: {message}", 200, 502, code_text)
