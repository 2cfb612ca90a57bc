"""CORS as Ollama allows it: its local origins always, CORS_ORIGINS added with wildcards (as
OLLAMA_ORIGINS, envconfig/config.go AllowedOrigins), the SDKs' headers, refusals rendered."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from ollama_openai_bridge.cors import CORS_HEADERS, CORSForBrowsers, origin_regex
from ollama_openai_bridge.errors import Redactor
from ollama_openai_bridge.render import Renderer

EXTENSION = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"


@pytest.mark.parametrize(
    ("configured", "origin", "allowed"),
    [
        # Ollama's defaults, whatever is configured
        (None, "http://localhost:3000", True),
        (None, "https://127.0.0.1", True),
        (None, "http://0.0.0.0:8080", True),
        (None, "http://[::1]:5173", True),
        (None, "app://obsidian.md", True),
        (None, "vscode-webview://1abc", True),
        (None, "tauri://localhost", True),
        (None, "file://", True),
        (None, "https://evil.example", False),
        (None, "http://localhost.evil.example", False),
        (None, EXTENSION, False),
        (["chrome-extension://*"], EXTENSION, True),
        (["chrome-extension://*"], "http://localhost:3000", True),  # added, not replaced
        (["chrome-extension://*"], "moz-extension://x", False),
        (["moz-extension://*", "app://*"], "moz-extension://1234-abcd", True),
        (["https://*.example.com"], "https://chat.example.com", True),
        (["https://*.example.com"], "https://example.com.evil.test", False),
        (["https://app.example.com"], "https://app.example.com", True),
        (["https://app.example.com"], "https://app.example.com.evil.test", False),
        (["https://app.example.com"], "HTTPS://APP.EXAMPLE.COM", True),  # scheme, host: any case
        (["https://a.b"], "https://aXb", False),  # dots are literal
    ],
)
def test_origins(configured: list[str] | None, origin: str, allowed: bool) -> None:
    assert bool(re.fullmatch(origin_regex(configured), origin)) is allowed


def run(app: CORSForBrowsers, method: str, path: str, headers: dict[str, str]) -> Any:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }

    async def call() -> None:
        await app(scope, receive, send)  # an awaitable, not a coroutine function (issue #18)

    asyncio.run(call())
    head = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], head, body


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def cors(origins: list[str] | None = None) -> CORSForBrowsers:
    return CORSForBrowsers(ok, Renderer(Redactor()), origins)


def preflight(origin: str, headers: str = "content-type", method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def test_a_listed_extension_and_localhost_pass_preflight() -> None:
    app = cors(["chrome-extension://*"])
    for origin in (EXTENSION, "http://localhost:3000"):
        status, head, _ = run(app, "OPTIONS", "/api/chat", preflight(origin))
        assert status == 200
        assert head["access-control-allow-origin"] == origin


def test_the_sdks_headers_are_allowed() -> None:
    # The OpenAI SDK's OpenAI-Beta (Assistants), the Anthropic SDK's version, beta, key and
    # browser opt-in headers (for /v1/messages), the Stainless retry header.
    asked = "content-type,openai-beta,anthropic-version,anthropic-beta,x-api-key,"
    asked += "anthropic-dangerous-direct-browser-access,x-stainless-retry-count"
    status, head, _ = run(cors(), "OPTIONS", "/v1/messages", preflight("http://localhost", asked))
    assert status == 200
    allowed = {h.strip().lower() for h in head["access-control-allow-headers"].split(",")}
    assert set(asked.split(",")) <= allowed
    assert {h.lower() for h in CORS_HEADERS} <= allowed


def test_an_origin_not_allowed_is_a_403_in_the_routes_dialect() -> None:
    status, head, body = run(cors(), "OPTIONS", "/api/chat", preflight(EXTENSION))
    assert (status, head["content-type"]) == (403, "application/json; charset=utf-8")
    message = json.loads(body)["error"]
    assert EXTENSION in message
    assert "CORS_ORIGINS" in message
    status, _, body = run(cors(), "OPTIONS", "/v1/chat/completions", preflight(EXTENSION))
    assert status == 403
    assert json.loads(body)["error"]["type"] == "permission_error"


def test_a_header_not_allowed_is_a_400_naming_it() -> None:
    status, _, body = run(
        cors(), "OPTIONS", "/api/chat", preflight("http://localhost", "content-type, x-secret")
    )
    assert status == 400
    assert json.loads(body) == {"error": "CORS preflight refused: header(s) not allowed: x-secret"}


def test_a_method_not_allowed_is_a_400() -> None:
    status, _, body = run(
        cors(), "OPTIONS", "/api/chat", preflight("http://localhost", method="PATCH")
    )
    assert status == 400
    assert "PATCH" in json.loads(body)["error"]


def test_star_allows_any_origin() -> None:
    status, head, _ = run(cors(["*"]), "OPTIONS", "/api/tags", preflight("https://any.example"))
    assert (status, head["access-control-allow-origin"]) == (200, "*")


def test_simple_requests_are_served_with_or_without_the_allow_header() -> None:
    status, head, _ = run(cors(), "GET", "/api/tags", {"Origin": "http://localhost:3000"})
    assert (status, head["access-control-allow-origin"]) == (200, "http://localhost:3000")
    # Not allowed: served without the header (the browser withholds it; a non-browser client
    # that sends an Origin keeps working).
    status, head, _ = run(cors(), "GET", "/api/tags", {"Origin": "https://evil.example"})
    assert status == 200
    assert "access-control-allow-origin" not in head
    status, head, _ = run(cors(), "GET", "/api/tags", {})
    assert (status, head) == (200, {})
