"""The client's failures, all foreign to the proxy and mapped by ``upstream.map_failure``::

ConnectionError
├── ConnectFailed       no connection: refused, DNS, TLS handshake or certificate
└── Disconnected        closed before the whole answer; ``answered``: part of it came;
                        ``sent``/``after``/``reset``: whether it can have read the request
TimeoutError
├── ConnectTimeout      no connection within connect_timeout
├── ReadTimeout         no byte for read_timeout seconds
└── TotalTimeout        the request's own timeout passed
ValueError
└── InvalidResponse     not HTTP/1.1 llhttp can read, a head or trailer too large, a body that
                        will not decode or is in a transfer coding other than chunked
"""

from __future__ import annotations


class ConnectFailed(ConnectionError):
    """No connection could be opened: ``os_error`` says why (refused, DNS, TLS)."""

    def __init__(self, host: str, os_error: OSError) -> None:
        super().__init__(f"cannot connect to {host}: {os_error}")
        self.os_error = os_error


class Disconnected(ConnectionError):
    """The server closed the connection before the whole answer; ``answered``: some of it (a
    byte at least) had come. What tells whether the server can have read the request, which
    decides whether :class:`~ollama_openai_bridge.http1.Client` may send it again (RFC 9112
    §9.3.1): ``sent`` is false when nothing of it was written (the connection was found
    closing first); ``after`` is the seconds from the write to a close by the server that came
    before any byte of the answer (None when unknown: the proxy closed it, or a byte came);
    ``reset``: that close was a TCP reset, not a FIN."""

    def __init__(
        self,
        message: str,
        *,
        answered: bool,
        sent: bool = True,
        after: float | None = None,
        reset: bool = False,
    ) -> None:
        super().__init__(message)
        self.answered = answered
        self.sent = sent
        self.after = after
        self.reset = reset


class InvalidResponse(ValueError):
    """An answer that is not HTTP/1.1 llhttp can read, a head or a trailer section over
    ``max_head`` bytes, a body in a transfer coding other than chunked (RFC 9112 §6.1), or a
    body whose gzip/deflate coding does not decode. The message completes "upstream sent ..."."""


class ConnectTimeout(TimeoutError):
    """No connection (TCP and TLS handshakes) within ``connect_timeout``."""


class ReadTimeout(TimeoutError):
    """No byte from the server for ``read_timeout`` seconds while an answer was awaited."""


class TotalTimeout(TimeoutError):
    """The request's own ``timeout`` passed (its connection, head and body together)."""


# llhttp's reasons for three forms of a head that RFC 9112 lets a recipient refuse, which llhttp
# (strict, as uvicorn runs it) refuses and aiohttp's parser accepts (issue #18's review, L3):
# said plainly, with the section and the way out, instead of llhttp's words alone.
_LAX = (
    ("Missing expected CR after", "a line ended by a bare LF instead of CRLF (RFC 9112 §2.2)"),
    (
        "Unexpected whitespace after header value",
        "a header field folded onto a continuation line (obs-fold, RFC 9112 §5.2)",
    ),
    (
        "Invalid header field char",
        "whitespace between a header field name and its colon (RFC 9112 §5.1) or a head line "
        "ended by a bare LF (§2.2)",
    ),
)


def parser_failure(reason: str) -> InvalidResponse:
    """The :class:`InvalidResponse` for llhttp's ``reason`` (``str(HttpParserError)``): one of
    the forms above named with its RFC section, else llhttp's reason quoted."""
    for start, form in _LAX:
        if reason.startswith(start):
            return InvalidResponse(
                f"an HTTP/1.1 response with {form}, which the http1 client refuses "
                f"(UPSTREAM_HTTP_CLIENT=aiohttp accepts it in a head; llhttp: {reason})"
            )
    return InvalidResponse(f"an invalid HTTP/1.1 response ({reason})")
