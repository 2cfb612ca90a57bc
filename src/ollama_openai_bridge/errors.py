"""The proxy's one exception hierarchy. Bodies are rendered by :mod:`ollama_openai_bridge.render`.

    ProxyError                          any failure we answer with an error body (500)
    ├── BadRequest (400)                the client's request is malformed or invalid
    │   ├── TooMany (400)               an array longer than its REQUEST_MAX_* limit
    │   ├── PayloadTooLarge (413)       the body exceeds REQUEST_MAX_SIZE (decompressed too)
    │   ├── UnsupportedEncoding (415)   a Content-Encoding the proxy does not decode
    │   ├── HeadersTooLarge (431)       the head exceeds REQUEST_HEADERS_MAX_SIZE / _MAX_COUNT
    │   └── RequestTimeout (408)        the head or body did not arrive in time (transport.py)
    ├── Unauthorized (401)              no valid inbound key (PROXY_API_KEYS)
    ├── Forbidden (403)                 a browser origin CORS_ORIGINS does not allow (preflight);
    │                                   another key's usage asked for (/v1/usage)
    ├── ModelNotFound (404)             the model is unknown here
    ├── RouteNotFound (404/405)         no such route / method (``allow``: the path's methods)
    ├── RateLimited (429)               RATE_LIMIT exceeded; carries ``retry_after``
    │   └── BudgetExhausted (429)       a key's TOKEN_BUDGET used up for a window
    ├── NotSupported (501)              a route the proxy cannot serve (model management)
    ├── Busy (503)                      no concurrency slot (MAX_CONCURRENT_REQUESTS)
    │   ├── TooManyConnections (503)    MAX_CLIENT_CONNECTIONS(_PER_IP): connection refused
    │   └── ShuttingDown (503)          still running when SHUTDOWN_GRACE_PERIOD ran out
    └── UpstreamError (502)             the backend failed us
        ├── UpstreamStatusError         it answered with an HTTP error status
        │   ├── UpstreamModelNotFound (404)     ... saying the model does not exist
        │   ├── UpstreamEndpointNotFound (502)  ... a 404 for the endpoint itself
        │   └── UpstreamRefusedParameter (400)  ... a 400/422 naming a parameter it refuses
        ├── UpstreamUnavailable (502)   connection refused/reset, DNS, TLS, closed mid-answer
        │   └── BreakerOpen (503)       its circuit breaker is open: not even tried
        ├── UpstreamTimeout (504)       no answer (or no first byte) in time
        └── UpstreamProtocolError (502) it answered something we cannot read

Foreign failures (aiohttp, OS, timeouts) become one of these in one place,
:func:`ollama_openai_bridge.upstream.map_failure`; malformed answers become
:class:`UpstreamProtocolError` through :func:`malformed`. Code branches on these types, never on
message text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

SAMPLE_CHARS = 200  # how much of an offending upstream fragment an error quotes
ECHO_CHARS = 200  # how much of a client's own text (a model name) an error or log line repeats


def echo(text: str) -> str:
    """``text`` from a client, bounded for repeating it in an error body or a log line (a
    10 MB model name must not come back as a 10 MB error, nor fill the log)."""
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "..."


class ProxyError(Exception):
    """Base of every error the proxy answers with an error body.

    ``status`` is the HTTP status the client gets; ``openai_type`` the ``error.type`` of the
    OpenAI error shape; ``code`` its ``error.code`` (a backend's own code when it gave one);
    ``param`` its ``error.param``, the request field at fault when there is one (OpenAI's own
    notation: ``messages[2].tool_calls``).
    """

    status: int = 500
    openai_type: str = "api_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ProxyError):
    """``param``: the field at fault, named in the OpenAI error's ``param``."""

    status = 400
    openai_type = "invalid_request_error"

    def __init__(self, message: str, status: int | None = None, *, param: str | None = None):
        super().__init__(message, status)
        self.param = param


class TooMany(BadRequest):
    """An array of the request holds more items than ``setting`` allows (400 before anything
    is built from it). The message names the field, the count and the limit; ``code`` is
    OpenAI's for the same refusal (its API answers ``array_above_max_length`` with
    ``param: "tools"`` to a 129th tool)."""

    code = "array_above_max_length"

    def __init__(self, field: str, count: int, limit: int, setting: str, param: str) -> None:
        super().__init__(
            f"too many items in '{field}': {count} (at most {limit}, {setting})", param=param
        )
        self.limit = limit


class PayloadTooLarge(BadRequest):
    status = 413


class UnsupportedEncoding(BadRequest):
    """A request body in a ``Content-Encoding`` the proxy does not decode (codings.py): 415
    (RFC 9110 section 15.5.16: "the content is in a format not supported ... due to the
    request's indicated Content-Encoding")."""

    status = 415


class HeadersTooLarge(BadRequest):
    """The request line and headers exceed REQUEST_HEADERS_MAX_SIZE bytes, or the headers
    REQUEST_HEADERS_MAX_COUNT fields: 431 (RFC 6585 section 5), and the connection closes."""

    status = 431


class RequestTimeout(BadRequest):
    """The request head or body did not arrive in time (REQUEST_HEADERS_TIMEOUT,
    REQUEST_BODY_TIMEOUT, REQUEST_BODY_MIN_RATE): 408 (RFC 9110 section 15.5.9), and the
    connection closes."""

    status = 408


class Unauthorized(ProxyError):
    status = 401
    openai_type = "authentication_error"


class Forbidden(ProxyError):
    """A browser's preflight from an origin that CORS_ORIGINS does not allow: 403, Ollama's
    status for it (gin-contrib/cors)."""

    status = 403
    openai_type = "permission_error"


class ModelNotFound(ProxyError):
    status = 404
    openai_type = "not_found_error"

    def __init__(self, model: str) -> None:
        # Ollama's exact wording on chat/generate/show (routes.go), single quotes included.
        super().__init__(f"model '{echo(model)}' not found")
        self.model = model


class RouteNotFound(ProxyError):
    """404, or 405 with ``allow``: the methods the path has (the ``Allow`` header RFC 9110
    §15.5.6 requires on a 405)."""

    status = 404
    openai_type = "not_found_error"

    def __init__(self, message: str, status: int | None = None, allow: str = "") -> None:
        super().__init__(message, status)
        self.allow = allow


class RateLimited(ProxyError):
    """``retry_after``: whole seconds until the window frees a request (the Retry-After header).
    ``should_retry``: False when retrying soon is pointless (the ``x-should-retry: false``
    header, which the openai and anthropic SDKs obey before their own retry rules)."""

    status = 429
    openai_type = "rate_limit_error"
    should_retry: bool | None = None

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExhausted(RateLimited):
    """A key's token budget (TOKEN_BUDGET) is used up until its window ends, ``retry_after``
    seconds from now. A day or month window is a quota: OpenAI's ``insufficient_quota`` (its
    own answer when an account's quota is spent, which clients tell apart from a passing rate
    limit); a minute or hour window is a rate, ``rate_limit_exceeded`` (OpenAI's code for tokens
    per minute). Beyond a minute, ``x-should-retry: false``: openai-python waits by Retry-After
    only up to 60 s and would otherwise retry at once, in vain."""

    def __init__(self, message: str, retry_after: int, *, quota: bool) -> None:
        super().__init__(message, retry_after)
        self.code = "insufficient_quota" if quota else "rate_limit_exceeded"
        if quota:
            self.openai_type = "insufficient_quota"
        self.should_retry = False if retry_after > 60 else None


class NotSupported(ProxyError):
    status = 501
    openai_type = "invalid_request_error"


class Busy(ProxyError):
    status = 503


class TooManyConnections(Busy):
    """A new connection beyond MAX_CLIENT_CONNECTIONS or MAX_CLIENT_CONNECTIONS_PER_IP: answered
    503 at once, before its request is read, and closed."""


class ShuttingDown(Busy):
    """The server is stopping and SHUTDOWN_GRACE_PERIOD is over (uvicorn then cancels what is
    still running): a request under way ends with this error in its dialect -- the answer if
    none began, else its stream's last line or event -- never with a cut connection. A 503,
    which the openai and anthropic SDKs retry, and Codex too (``response.failed``)."""

    def __init__(self) -> None:
        super().__init__(
            "the proxy is shutting down: this request was still running when its grace period "
            "(SHUTDOWN_GRACE_PERIOD) ran out; send it again"
        )


class UpstreamError(ProxyError):
    status = 502


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class UpstreamStatusError(UpstreamError):
    """The backend answered with an error status; ``upstream_status`` keeps its code and
    ``detail`` the backend's own words; ``retry_after``, its ``Retry-After`` header, if any
    (relayed: the anthropic and openai SDKs, Claude Code and Codex wait by it)."""

    retry_after: str | None = None

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
        self.detail = message if detail is None else detail
        if type(self).openai_type == "api_error":
            # OpenAI's error.type for the status passed on (openai-python's _exceptions: a 429 is
            # a rate_limit_error), so a /v1/responses client reads what the backend meant.
            self.openai_type = _OPENAI_TYPES.get(status, "api_error")


class UpstreamModelNotFound(UpstreamStatusError):
    """The backend says the model does not exist (404 with a model error)."""

    openai_type = "not_found_error"


class UpstreamRefusedParameter(UpstreamStatusError):
    """A 400/422 that names one request parameter the backend refuses (``parameter``, a
    top-level field of the body), and the name it wants instead if it says so
    (``replacement``): the request can be sent again without it (exchange.py)."""

    def __init__(
        self,
        message: str,
        upstream_status: int,
        code: str | None,
        parameter: str,
        replacement: str | None = None,
    ) -> None:
        super().__init__(message, upstream_status, 400, code)
        self.parameter = parameter
        self.replacement = replacement


class UpstreamEndpointNotFound(UpstreamStatusError):
    """A 404 for the endpoint itself: the backend has no such route (or the base URL lacks
    ``/v1``)."""


class UpstreamUnavailable(UpstreamError):
    status = 502


class BreakerOpen(UpstreamUnavailable):
    status = 503


class UpstreamTimeout(UpstreamError):
    status = 504


class UpstreamProtocolError(UpstreamError):
    status = 502


def sample(data: Any) -> str:
    """``data`` (bytes, str or decoded JSON) as a repr cut to :data:`SAMPLE_CHARS` characters,
    for quoting an offending upstream fragment in an error message."""
    if isinstance(data, bytes | bytearray):
        data = bytes(data[: SAMPLE_CHARS + 1]).decode("utf-8", "backslashreplace")
    elif not isinstance(data, str):
        data = repr(data)
    text = repr(data[:SAMPLE_CHARS])
    return text + "..." if len(data) > SAMPLE_CHARS else text


def malformed(what: str, data: Any) -> UpstreamProtocolError:
    """The error for an upstream answer of the wrong shape (``what`` names what was expected),
    quoting the fragment: 502 before a stream's first line, an error line after it."""
    return UpstreamProtocolError(f"upstream sent {what}: {sample(data)}")


# What a wrong type anywhere in a decoded upstream answer raises while it is translated.
SHAPE_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError)


@contextmanager
def translating_request() -> Iterator[None]:
    """Around the translation of a client's body whose nested objects the translator reads
    (``/v1/messages`` blocks, ``/v1/responses`` items and tools): a value of the wrong type it
    did not check itself becomes a 400 quoting the problem, never a 500. Errors the translation
    raises itself pass through."""
    try:
        yield
    except SHAPE_ERRORS as exc:
        raise BadRequest(f"invalid request body: a field has the wrong type ({exc})") from None
    except RecursionError:
        raise BadRequest("invalid request body: nested too deeply") from None


@contextmanager
def reading(what: str, data: Any) -> Iterator[None]:
    """Around the translation of a decoded upstream answer: a wrong type anywhere in it (the
    TypeError, AttributeError, KeyError, IndexError or ValueError it causes) becomes
    ``malformed(what, data)``. Errors the translation raises itself pass through."""
    try:
        yield
    except SHAPE_ERRORS:
        raise malformed(what, data) from None


class Redactor:
    """Removes secrets (the upstream keys, inbound keys) from any text we emit.

    Backends sometimes echo the key they received in an error message; it must never reach a
    client or a log line.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = tuple(s for s in secrets if s and len(s) >= 4)
        self._raw = tuple(s.encode() for s in self._secrets)  # for bytes(): encoded once

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text

    def bytes(self, data: bytes) -> bytes:
        """The same for a body relayed as bytes."""
        for raw in self._raw:
            if raw in data:
                data = data.replace(raw, b"[redacted]")
        return data
