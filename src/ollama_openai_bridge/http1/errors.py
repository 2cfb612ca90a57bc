"""The client's failures, all foreign to the proxy and mapped by ``upstream.map_failure``::

ConnectionError
├── ConnectFailed       no connection: refused, DNS, TLS handshake or certificate
└── Disconnected        closed before the whole answer; ``answered``: part of it came
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
    byte at least) had come."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


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
