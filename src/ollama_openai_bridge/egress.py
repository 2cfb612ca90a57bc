"""HTTP proxies from the environment: the one, if any, a backend URL is called through.

The variables curl, requests, httpx and Python's urllib read: ``HTTP_PROXY`` for ``http://``
URLs, ``HTTPS_PROXY`` for ``https://`` ones, ``ALL_PROXY`` for either when the scheme's own is
unset; ``NO_PROXY`` lists what is called directly. Each name in lower case too, which wins over
upper case, so that ``http_proxy=`` set empty turns ``HTTP_PROXY`` off
(``urllib.request.getproxies_environment``'s rule, which aiohttp's ``trust_env`` reads through).

Resolved once per backend URL at start (upstream.client_for), then given to aiohttp as
``proxy=``: aiohttp's own ``trust_env`` would look the proxy up again in a thread on every
request (client.py ``_request``: ``asyncio.to_thread(get_env_proxy_for_url, url)``), read
``~/.netrc`` for Basic credentials to send the backend, ignore ``ALL_PROXY`` (helpers.py
``proxies_from_env`` keeps http/https/ws/wss only) and match ``NO_PROXY`` on the host alone
(``proxy_bypass(url.host)``: no ``host:port`` entry, no CIDR). The http1 client speaks to the
backend directly only: an upstream a proxy applies to is called through aiohttp
(UPSTREAM_HTTP_CLIENT=auto), and UPSTREAM_HTTP_CLIENT=http1 refuses to start
(config/backends.py).

A proxy URL may carry credentials (``user:password@`` before its host, sent as
``Proxy-Authorization: Basic``): :func:`secrets` lists them for the redactor, and what is
shown of a proxy (:attr:`Proxy.shown`, every log line and error) is its ``host:port`` alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

# The variables read, upper case; each also in lower case (which wins).
VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
DEFAULT_PORTS = {"http": 80, "https": 443}


class EgressError(ValueError):
    """A proxy variable applies to a backend URL but names no proxy aiohttp can use (socks5://,
    https://, no host). The message names the variable and the proxy's ``host:port``, never its
    credentials."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """The proxy a backend URL is called through.

    ``url``: ``http://[user:password@]host:port`` as aiohttp's ``proxy=`` takes it (credentials
    included: never log it); ``variable``: the one it came from (``HTTPS_PROXY``,
    ``all_proxy``, ...); ``shown``: ``host:port``, what a log line or an error may say."""

    url: str = field(repr=False)
    variable: str
    shown: str


def _value(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """``(value, variable)`` of ``NAME`` or ``name`` (lower case wins; set empty, it turns the
    upper-case one off), or None when unset or empty."""
    lower = name.lower()
    if lower in env:
        return (env[lower], lower) if env[lower].strip() else None
    value = env.get(name, "")
    return (value, name) if value.strip() else None


def _parse(value: str, variable: str) -> Proxy:
    """A proxy variable's value as a :class:`Proxy`; a bare ``host:port`` is ``http://``, as
    curl and requests take it. Raises :class:`EgressError` for one aiohttp cannot use."""
    value = value.strip()
    if "://" not in value:
        value = "http://" + value
    parts = urlsplit(value)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        host, port = None, None
    if not host:
        raise EgressError(f"{variable} is not a proxy URL (http://host:port)")
    shown = f"[{host}]" if ":" in host else host
    shown = f"{shown}:{port or DEFAULT_PORTS.get(parts.scheme.lower(), 80)}"
    if parts.scheme.lower() != "http":
        # aiohttp speaks plain HTTP to a proxy; socks needs another package, and its own
        # trust_env skips https:// proxies with a warning (helpers.py proxies_from_env).
        raise EgressError(
            f"{variable} names a {parts.scheme}:// proxy ({shown}); only http:// proxies are "
            "supported"
        )
    return Proxy(value, variable, shown)


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` lists ``host`` (lower case, an IPv6 address without brackets) at
    ``port``: ``*``; a host name and its subdomains (``example.com``, ``.example.com`` and
    ``*.example.com`` alike, as curl and requests match them); ``host:port``; an IP address or
    a CIDR range (``10.0.0.0/8``, ``fd00::/8``), matched against an address in the URL (a name
    is not resolved: curl and requests do not either)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        try:
            network = ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            network = None
        if network is not None:
            if address is not None and address in network:
                return True
            continue
        name, entry_port = entry, None
        head, sep, tail = entry.rpartition(":")
        if sep and tail.isdigit():
            name, entry_port = head.strip("[]"), int(tail)
        if entry_port is not None and entry_port != port:
            continue
        name = name.removeprefix("*").lstrip(".")
        if address is not None:
            try:
                if ipaddress.ip_address(name) == address:
                    return True
            except ValueError:
                pass
            continue
        if host == name or host.endswith("." + name):
            return True
    return False


def proxy_for(url: str, env: Mapping[str, str]) -> Proxy | None:
    """The proxy ``env`` (the process environment) sets for ``url`` (an ``http://`` or
    ``https://`` backend URL), or None: called directly. Raises :class:`EgressError` when the
    proxy that applies is one aiohttp cannot use."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    found = _value(env, f"{scheme.upper()}_PROXY") or _value(env, "ALL_PROXY")
    if found is None or parts.hostname is None:
        return None
    no_proxy = _value(env, "NO_PROXY")
    port = parts.port or DEFAULT_PORTS.get(scheme, 80)
    if no_proxy is not None and _bypassed(parts.hostname, port, no_proxy[0]):
        return None
    return _parse(*found)


def origin(url: str) -> str:
    """``scheme://netloc/`` of a backend URL: what every request URL made of it starts with (its
    proxy depends on the origin alone)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"


def shown(proxies: Mapping[str, Proxy | None]) -> str:
    """What a log line says of the proxies of an upstream's origins (:func:`origin` to its
    proxy, None: directly): the one proxy's ``host:port`` (or ``direct``); with replicas that
    differ, each origin's (``a.example via proxy:3128, 10.0.0.5:8000 via direct``). Never a
    proxy's credentials, nor a base URL's."""
    each = {o: "direct" if p is None else p.shown for o, p in proxies.items()}
    if len(set(each.values())) == 1:
        return next(iter(each.values()))
    return ", ".join(f"{urlsplit(o).netloc.rpartition('@')[2]} via {s}" for o, s in each.items())


def secrets(env: Mapping[str, str]) -> list[str]:
    """The credentials in the proxy variables of ``env``: each password (as written and
    percent-decoded, as aiohttp sends it), and a user name that comes without one (a token)."""
    out: list[str] = []
    for name in VARIABLES[:3]:
        for variable in (name, name.lower()):
            value = env.get(variable, "").strip()
            if "@" not in value:
                continue
            parts = urlsplit(value if "://" in value else "http://" + value)
            secret = parts.password if parts.password else parts.username
            if secret:
                out += [secret, unquote(secret)]
    return list(dict.fromkeys(out))
