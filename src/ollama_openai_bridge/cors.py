"""Browser requests across origins (CORS), as Ollama allows them.

Ollama answers browsers with gin-contrib/cors (server/routes.go GenerateRoutes): its own local
origins always (envconfig/config.go AllowedOrigins), plus those of ``OLLAMA_ORIGINS``, where a
``*`` inside an origin is a wildcard (``AllowWildcard``: ``chrome-extension://*``,
``https://*.example.com``). ``CORS_ORIGINS`` is the same list here: added to the local defaults,
never replacing them, so listing a browser extension does not lock out ``localhost``.

Only requests with an ``Origin`` header (browsers) pass through Starlette's CORSMiddleware;
SDKs, n8n and curl send none. A preflight the policy refuses is answered in the route's error
dialect, like every other error (render.py): 403 for an origin (Ollama's status), 400 for a
method or header. A simple request from an origin not allowed is served without
``Access-Control-Allow-Origin`` (the browser then withholds the answer from the page), where
Ollama would refuse it with 403: clients that send an ``Origin`` from outside a browser keep
working.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ollama_openai_bridge.access import SCOPE_KEY
from ollama_openai_bridge.errors import BadRequest, Forbidden, ProxyError, echo
from ollama_openai_bridge.render import Renderer, dialect_of

# Ollama's default origins (envconfig/config.go AllowedOrigins): local pages on any port, its
# desktop app (app://), files, Tauri apps, VS Code webviews; and IPv6 loopback, which the proxy
# always allowed.
DEFAULT_ORIGIN_PATTERN = (
    r"https?://(localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])(:\d+)?"
    r"|app://.*|file://.*|tauri://.*|vscode-webview://.*|vscode-file://.*"
)

# Request headers a browser page may send: Ollama's list (routes.go: its own, OpenAI's
# OpenAI-Beta and the Stainless SDKs' x-stainless-*), the request id, and what the Anthropic
# SDK sends for /v1/messages: anthropic-version, anthropic-beta, its key as x-api-key, and
# anthropic-dangerous-direct-browser-access (dangerouslyAllowBrowser, anthropic-sdk-typescript).
CORS_HEADERS = [
    "Authorization",
    "Content-Type",
    "User-Agent",
    "Accept",
    "X-Requested-With",
    "X-Request-ID",
    "OpenAI-Beta",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-api-key",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
]
CORS_METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]


def origin_pattern(origin: str) -> str:
    """One configured origin as a regular expression: each ``*`` matches any run of characters,
    as gin-contrib/cors's wildcard does (``chrome-extension://*``); the rest is literal."""
    return ".*".join(re.escape(part) for part in origin.split("*"))


def origin_regex(configured: Sequence[str] | None) -> str:
    """The regular expression (for a full match) of every allowed origin: Ollama's defaults,
    then ``configured`` (CORS_ORIGINS), each compared without regard to case, as browsers send
    scheme and host in lower case."""
    extra = "".join(f"|{origin_pattern(o)}" for o in configured or ())
    return f"(?i:{DEFAULT_ORIGIN_PATTERN}{extra})"


class CORSForBrowsers:
    """Starlette's CORSMiddleware, only for requests that carry an ``Origin`` header (it wraps
    the ``send`` of every response it sees), with refused preflights rendered as errors.

    ``origins``: CORS_ORIGINS; ``*`` among them allows any origin."""

    def __init__(
        self,
        app: ASGIApp,
        renderer: Renderer,
        origins: Sequence[str] | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.renderer = renderer
        any_origin = bool(origins) and "*" in (origins or ())
        self.cors = CORSMiddleware(
            app,
            allow_origins=["*"] if any_origin else [],
            allow_origin_regex=None if any_origin else origin_regex(origins),
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            **options,
        )

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain call that returns the next app's awaitable rather than a coroutine of its
        # own: a request holds no frame here for as long as it lasts (336 B per open stream,
        # issue #18).
        if scope["type"] == "http":
            for name, _ in scope["headers"]:
                if name == b"origin":
                    headers = Headers(scope=scope)
                    if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
                        return self._preflight(headers, scope)(scope, receive, send)
                    return self.cors(scope, receive, send)
        return self.app(scope, receive, send)

    def _preflight(self, headers: Headers, scope: Scope) -> Response:
        response = self.cors.preflight_response(request_headers=headers)
        if response.status_code < 400:
            return response
        return self.renderer.response(
            self._refusal(headers), dialect_of(scope["path"]), scope.get(SCOPE_KEY)
        )

    def _refusal(self, headers: Headers) -> ProxyError:
        """Why a preflight is refused, in words: the origin first (Ollama's 403), else the
        method, the headers or a private-network request (400)."""
        origin = headers["origin"]
        if not self.cors.is_allowed_origin(origin):
            return Forbidden(
                f"origin '{echo(origin)}' is not allowed: add it to CORS_ORIGINS (as Ollama's "
                "OLLAMA_ORIGINS; '*' is a wildcard, e.g. chrome-extension://*)"
            )
        method = headers["access-control-request-method"]
        if method not in self.cors.allow_methods:
            return BadRequest(f"CORS preflight refused: method '{echo(method)}' is not allowed")
        refused = [
            h
            for h in headers.get("access-control-request-headers", "").split(",")
            if h.strip() and h.strip().lower() not in self.cors.allow_headers
        ]
        if refused:
            names = ", ".join(h.strip() for h in refused)
            return BadRequest(f"CORS preflight refused: header(s) not allowed: {echo(names)}")
        return BadRequest("CORS preflight refused: private network access is not allowed")
