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

from collections.abc import Mapping
from typing import Any

import aiohttp

from ollama_openai_bridge import egress
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


def session(
    settings: Settings, headers: dict[str, str], proxies: Mapping[str, egress.Proxy]
) -> Any:
    """A pooled session to one backend: at most MAX_CONNECTIONS connections, CONNECT_TIMEOUT to
    connect, STREAM_IDLE_TIMEOUT for the first byte and every silence after it (``sock_read``),
    gzip and deflate answers decoded, ``headers`` on every request; certificates checked unless
    DISABLE_SSL_VERIFICATION. ``proxies``: per origin (``scheme://host:port/``) the HTTP proxy
    its requests go through (egress.py resolved them from the environment), given to aiohttp
    as ``proxy=``; other origins are called directly. ``trust_env`` stays off: it would
    look the proxy up again on every request and read ~/.netrc (egress.py says why).
    Redirects are not followed: upstream.py passes ``allow_redirects=False`` with each request
    and decides (upstream_redirect)."""
    connector = aiohttp.TCPConnector(
        limit=settings.max_connections,
        limit_per_host=0,
        ttl_dns_cache=300,
        ssl=not settings.disable_ssl_verification,
    )
    client = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.connect_timeout,
            sock_read=settings.stream_idle_timeout,
        ),
        headers=headers,
        auto_decompress=True,
    )
    return Proxied(client, proxies) if proxies else client


class ProxyRefused(aiohttp.ClientError):
    """An HTTP proxy answered a request to an ``http://`` backend itself with 407 Proxy
    Authentication Required: ``proxy`` its ``host:port``, ``reason`` its reason phrase. (For an
    ``https://`` backend aiohttp raises ClientHttpProxyError at CONNECT.)"""

    def __init__(self, proxy: str, reason: str) -> None:
        super().__init__(f"HTTP proxy {proxy} answered 407")
        self.proxy = proxy
        self.reason = reason


class Proxied:
    """An aiohttp session whose requests to some origins go through an HTTP proxy: absolute-form
    requests for ``http://`` (RFC 9112 §3.2.2), a CONNECT tunnel for ``https://`` (RFC 9110
    §9.3.6), both aiohttp's; a ``user:password@`` in the proxy URL is sent as
    ``Proxy-Authorization: Basic``. The origin is found by prefix, once per request: a few
    string comparisons beside aiohttp's own cost."""

    __slots__ = ("_routes", "_session")

    def __init__(self, session: Any, proxies: Mapping[str, egress.Proxy]) -> None:
        self._session = session
        self._routes = tuple(proxies.items())

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """``session.request``, through the proxy of ``url``'s origin if it has one. Raises
        :class:`ProxyRefused` for the proxy's own 407."""
        for origin, proxy in self._routes:
            if url.startswith(origin):
                resp = await self._session.request(method, url, proxy=proxy.url, **kwargs)
                if resp.status == 407:
                    # The proxy's, never the backend's (RFC 9110 §15.5.8): relayed, a client
                    # would take it for its own proxy asking for credentials.
                    resp.release()
                    raise ProxyRefused(proxy.shown, str(resp.reason or ""))
                return resp
        return await self._session.request(method, url, **kwargs)

    async def close(self) -> None:
        """Close the session (and its connections)."""
        await self._session.close()


def total_timeout(seconds: float, connect: float) -> Any:
    """aiohttp's timeout for a whole call of ``seconds`` (connecting within ``connect``)."""
    return aiohttp.ClientTimeout(total=seconds, sock_connect=connect)


def map_failure(exc: BaseException, host: str, *, reading: bool) -> UpstreamError | None:
    """The :class:`UpstreamError` for an aiohttp failure (``reading``: while reading an answer
    whose headers had arrived), or None for a failure that is not aiohttp's own kind -- a
    timeout, an OSError -- which upstream.map_failure maps as it maps http1's."""
    # The proxy's own failures, before the ClientConnectorError they subclass: said as the
    # proxy's, by its host:port and status alone -- str(exc) quotes the proxy URL, credentials
    # included (ClientResponseError's url=).
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        reason = exc.os_error.strerror or str(exc.os_error) if exc.os_error else str(exc)
        return UpstreamUnavailable(
            f"cannot connect to the HTTP proxy {_proxy(exc.host, exc.port)} for upstream "
            f"{host}: {reason}"
        )
    if isinstance(exc, aiohttp.ClientHttpProxyError):  # its answer to CONNECT (https://)
        proxy = exc.request_info.real_url
        return _refused(_proxy(proxy.host, proxy.port), "tunnel", host, exc.status, exc.message)
    if isinstance(exc, ProxyRefused):  # its answer to a whole request (http://)
        return _refused(exc.proxy, "request", host, 407, exc.reason)
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


def _refused(proxy: str, what: str, host: str, status: int, reason: str) -> UpstreamError:
    return UpstreamUnavailable(
        f"the HTTP proxy {proxy} refused the {what} to upstream {host}: {status} "
        f"{str(reason)[:200]}"
        + (" (credentials in the proxy URL missing or wrong)" if status == 407 else "")
    )


def _proxy(host: str | None, port: int | None) -> str:
    return f"[{host}]:{port}" if host and ":" in host else f"{host}:{port}"
