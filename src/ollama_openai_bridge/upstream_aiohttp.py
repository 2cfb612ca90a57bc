"""aiohttp, the fallback client of :mod:`ollama_openai_bridge.upstream`: its session and its
failures, in a module of their own so that aiohttp is imported only when an upstream uses it.

The proxy's own HTTP/1.1 client (http1/) serves every backend URL it handles (UPSTREAM_HTTP_CLIENT
``auto``), so most processes never call aiohttp; importing it anyway cost 13.8 MB of resident
memory per worker, the largest single share of the proxy's memory above the bare stack (issue
#18: "import what a request does not need only when it is needed"). upstream.py imports this
module when the first aiohttp upstream starts
(:func:`ollama_openai_bridge.upstream.aiohttp_client`).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ollama_openai_bridge.config import Settings
from ollama_openai_bridge.errors import UpstreamError, UpstreamUnavailable

# What aiohttp raises besides OSError and TimeoutError subclasses (ServerTimeoutError is one):
# the failures map_failure() takes.
FAILURES: tuple[type[BaseException], ...] = (aiohttp.ClientError,)
# Of those, the failures before any answer that are safe to try again: refused or reset
# connections and stale pooled keep-alive sockets.
RETRYABLE: tuple[type[BaseException], ...] = (
    aiohttp.ClientOSError,
    aiohttp.ServerDisconnectedError,
)


def session(settings: Settings, headers: dict[str, str]) -> Any:
    """A pooled session to one backend: at most MAX_CONNECTIONS connections, CONNECT_TIMEOUT to
    connect, STREAM_IDLE_TIMEOUT for the first byte and every silence after it (``sock_read``),
    gzip and deflate answers decoded, ``headers`` on every request; certificates checked unless
    DISABLE_SSL_VERIFICATION. HTTP proxies from the environment are not used (``trust_env``
    off, as ever). Redirects are not followed: upstream.py passes ``allow_redirects=False`` with
    each request and decides (upstream_redirect)."""
    connector = aiohttp.TCPConnector(
        limit=settings.max_connections,
        limit_per_host=0,
        ttl_dns_cache=300,
        ssl=not settings.disable_ssl_verification,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.connect_timeout,
            sock_read=settings.stream_idle_timeout,
        ),
        headers=headers,
        auto_decompress=True,
    )


def total_timeout(seconds: float, connect: float) -> Any:
    """aiohttp's timeout for a whole call of ``seconds`` (connecting within ``connect``)."""
    return aiohttp.ClientTimeout(total=seconds, sock_connect=connect)


def map_failure(exc: BaseException, host: str, *, reading: bool) -> UpstreamError | None:
    """The :class:`UpstreamError` for an aiohttp failure (``reading``: while reading an answer
    whose headers had arrived), or None for a failure that is not aiohttp's own kind -- a
    timeout, an OSError -- which upstream.map_failure maps as it maps http1's."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error) if exc.os_error else str(exc)
        return UpstreamUnavailable(f"cannot connect to upstream {host}: {reason}")
    # aiohttp reports a reset mid-body as ClientPayloadError with the reset only in its text
    # (client_proto.py connection_lost); a reset it raises as such is told apart here.
    if reading and isinstance(exc, aiohttp.ClientOSError):
        return UpstreamUnavailable("upstream stream interrupted: connection reset")
    closed = aiohttp.ServerDisconnectedError
    if reading and isinstance(exc, aiohttp.ClientPayloadError | closed):
        return UpstreamUnavailable("upstream stream interrupted: connection closed early")
    if isinstance(exc, closed):
        return UpstreamUnavailable(f"upstream {host} closed the connection")
    if isinstance(exc, aiohttp.ClientOSError):
        return UpstreamUnavailable(f"upstream {host} reset the connection")
    return None
