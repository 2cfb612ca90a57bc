"""Redirects from a backend (RFC 9110 §15.4), decided here for both HTTP clients alike.

Neither client follows a redirect on its own (aiohttp's ``allow_redirects`` is off): aiohttp
followed every 301/302/303/307/308 to any host, turning a redirected POST into a GET for
301/302/303 (its client.py, as browsers do), which an API answers with an error, and sending the
request's ``Authorization`` header along to another host; http1 followed none, so a 308 reached
``/api/chat`` as a body that is not JSON and ``/v1/chat/completions`` as a bare 308 without its
``Location`` (fresh-eyes review of #18). Here:

- a 307 or 308 whose ``Location`` is on the same origin (scheme, host, port: RFC 6454 §4) is
  followed with the same method and body (RFC 9110 §15.4.8, §15.4.9 forbid changing them), up to
  :data:`MAX_REDIRECTS` hops;
- anything else -- a 301, 302 or 303 (a POST would become a GET), another origin (the API key
  must not go there), a ``Location`` missing or not an http(s) URL, too many hops -- is an
  :class:`UpstreamRedirect`, a 502 in the caller's dialect naming the status and where it
  pointed.

A followed redirect costs a round trip per call: upstream.py warns once per upstream to set the
base URL to the address it redirects to.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any
from urllib.parse import quote_from_bytes, urljoin, urlsplit, urlunsplit

import structlog

from ollama_openai_bridge.errors import UpstreamProtocolError

log = structlog.get_logger("ollama_openai_bridge.upstream")

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 3  # hops followed per call (aiohttp's default was 10)
_PORTS = {"http": 80, "https": 443}
_HINT = "set the upstream's base URL (OPENAI_API_BASE_URL or base_url) to where it points"


class UpstreamRedirect(UpstreamProtocolError):
    """A redirect the proxy does not follow; ``upstream_status``: the backend's 3xx."""

    def __init__(self, message: str, upstream_status: int) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


def shown(url: str) -> str:
    """``url`` as logs and errors show it: no ``user:password@``, no query (where signed URLs
    and some backends' keys travel; tracing.py shows URLs the same way), at most 200
    characters."""
    parts = urlsplit(url)
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path[:200]}{query}"


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an http(s) URL without credentials, else None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number
        return None
    scheme = parts.scheme.lower()
    if scheme not in _PORTS or not parts.hostname or parts.username or parts.password:
        return None
    return scheme, parts.hostname.lower(), port or _PORTS[scheme]


def target(url: str, status: int, location: str | None, hops: int) -> str:
    """Where to send the request again after ``url`` answered ``status`` (one of
    :data:`REDIRECTS`) with ``location``, ``hops`` redirects having been followed for this call
    already: the absolute URL (RFC 9110 §10.2.2: a reference resolved against ``url``, its
    fragment dropped). Raises :class:`UpstreamRedirect` for a redirect not followed."""
    answered = f"upstream answered {status} {HTTPStatus(status).phrase}"
    if not location:
        raise UpstreamRedirect(f"{answered} without a Location for {shown(url)}", status)
    try:
        resolved = urljoin(url, location.strip()).partition("#")[0]
        pointed = f"{answered} pointing to {shown(resolved)}"
    except ValueError:  # urllib refuses it (a bracketed host that is no IPv6 address)
        raise UpstreamRedirect(f"{answered} with a Location that is not a URL", status) from None
    origin = _origin(resolved)
    if status not in (307, 308):
        raise UpstreamRedirect(
            f"{pointed}: not followed, as it would turn the {shown(url)} request into a GET; "
            f"{_HINT}",
            status,
        )
    if origin is None or origin != _origin(url):
        raise UpstreamRedirect(
            f"{pointed}: not followed to another origin (the API key is not sent elsewhere); "
            f"{_HINT}",
            status,
        )
    if hops >= MAX_REDIRECTS:
        raise UpstreamRedirect(f"{pointed}: more than {MAX_REDIRECTS} redirects; {_HINT}", status)
    return _quoted(resolved)


# What a path or query keeps as it is: RFC 3986's reserved and unreserved characters, and "%"
# so that what the backend escaped stays escaped once.
_SAFE = "/%:@!$&'()*+,;=?~"


def _quoted(url: str) -> str:
    """``url`` with a space, a control or a non-ASCII character of its path and query
    percent-encoded (their UTF-8 bytes, as both clients decode a header: UTF-8 with surrogate
    escapes), as yarl requotes it for aiohttp: the http1 client sends only printable ASCII
    (second review of #18: ``Location: /v2/chat completions`` was a 500 on http1)."""
    parts = urlsplit(url)
    path, query = (
        quote_from_bytes(p.encode("utf-8", "surrogateescape"), safe=_SAFE)
        for p in (parts.path, parts.query)
    )
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


class Redirects:
    """The redirects of one upstream (``name``): followed as :func:`target` says, a WARNING the
    first time (every call pays the redirect's round trip until the base URL names where it
    goes), each hop after that in the DEBUG log."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.warned = False

    async def follow(
        self, session: Any, method: str, url: str, resp: Any, options: dict[str, Any]
    ) -> Any:
        """The answer at the end of the redirects that ``resp`` (answered for ``url``) starts,
        each hop sent through ``session`` (upstream.Session) with the same method and
        ``options`` (body, timeout). Raises :class:`UpstreamRedirect` for one not followed, a
        hop's failures as a request's (upstream.Upstream.send maps them)."""
        hops = 0
        while resp.status in REDIRECTS:
            status = resp.status
            try:
                location = target(url, status, resp.headers.get("Location"), hops)
            finally:
                resp.release()
            (log.debug if self.warned else log.warning)(
                "upstream_redirected",
                upstream=self.name,
                status=status,
                url=shown(url),
                location=shown(location),
                hint="followed (same origin, same method and body), a round trip more per "
                "call: set the upstream's base URL (OPENAI_API_BASE_URL or base_url) to the "
                "address it redirects to",
            )
            self.warned = True
            url = location
            hops += 1
            resp = await session.request(method, url, **options)
        return resp
