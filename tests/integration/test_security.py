"""Inbound keys, rate limits (in memory and in a real Redis), headers, and adversarial input."""

from __future__ import annotations

import json
import socket
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

CHAT = {"model": "gpt-4o-mini", "stream": False, "messages": [{"role": "user", "content": "hi"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_inbound_api_keys(upstream: FakeUpstream, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team B\nkey-from-file\n\n")
    with ProxyServer(
        settings_for(
            upstream.url, proxy_api_keys="key-one-1234,key-two-5678", proxy_api_keys_file=keys_file
        )
    ) as p:
        for headers in (
            {},
            bearer("wrong"),
            {"Authorization": "Bearer"},
            {"Authorization": "key-one-1234"},
            {"Authorization": "Basic azE="},
        ):
            r = httpx.post(p.url + "/api/chat", json=CHAT, headers=headers)
            assert (r.status_code, r.json()) == (401, {"error": "unauthorized"})
            assert r.headers["www-authenticate"] == "Bearer"
        r = httpx.get(p.url + "/v1/models")
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        for key in ("key-one-1234", "key-two-5678", "key-from-file"):
            assert (
                httpx.post(p.url + "/api/chat", json=CHAT, headers=bearer(key)).status_code == 200
            )
        # the client's key is never forwarded: the backend sees the proxy's own
        assert upstream.last()["headers"]["Authorization"] == "Bearer sk-test-upstream"
        # liveness stays open
        assert httpx.get(p.url + "/health").status_code == 200
        assert httpx.get(p.url + "/").text == "Ollama is running"
        # an error never echoes a key
        r = httpx.post(
            p.url + "/api/chat",
            json={**CHAT, "model": "key-one-1234"},
            headers=bearer("key-one-1234"),
        )
        assert "key-one-1234" not in r.text


def test_rate_limit_in_memory_per_key(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, proxy_api_keys="a,b", rate_limit="3/minute")) as p:
        codes = [
            httpx.get(p.url + "/api/version", headers=bearer("a")).status_code for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        r = httpx.get(p.url + "/api/version", headers=bearer("a"))
        assert r.json()["error"].startswith("rate limit exceeded: 3 per 1 minute")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert (
            httpx.get(p.url + "/api/version", headers=bearer("b")).status_code == 200
        )  # own bucket


def test_rate_limit_per_ip_without_keys(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, rate_limit="2/minute")) as p:
        codes = [httpx.get(p.url + "/api/tags").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert httpx.get(p.url + "/health").status_code == 200  # never limited


def test_readiness_probes_spend_no_rate_limit_and_share_one_backend_call(
    upstream: FakeUpstream,
) -> None:
    """The chart's readiness probe sends the first inbound key (healthcheck.py) every few
    seconds from every pod: counted by RATE_LIMIT, it spent that team's requests and, at the
    limit, marked every pod unready (issue #19's review, H1). /ready still needs a key; it is
    not counted, and concurrent /ready calls make one backend call, so looping on it cannot
    multiply the backend's load."""
    upstream.faults.append((lambda path, _: path == "/v1/models", Script(first_delay=1.0)))
    settings = settings_for(upstream.url, proxy_api_keys="team-a,team-b", rate_limit="2/minute")
    with ProxyServer(settings) as p:
        assert httpx.get(p.url + "/ready").status_code == 401  # still behind the key
        before = upstream.targets.count("/v1/models")
        with ThreadPoolExecutor(10) as pool:
            codes = list(
                pool.map(
                    lambda _: httpx.get(p.url + "/ready", headers=bearer("team-a"), timeout=30),
                    range(10),
                )
            )
        assert [r.status_code for r in codes] == [200] * 10
        assert {r.json()["status"] for r in codes} == {"ready"}
        # Ten callers at once, one backend call (two if a caller arrived as the first ended).
        assert 1 <= upstream.targets.count("/v1/models") - before <= 2
        assert httpx.get(p.url + "/ready", headers=bearer("team-a")).status_code == 200
        codes2 = [
            httpx.get(p.url + "/api/version", headers=bearer("team-a")).status_code
            for _ in range(3)
        ]
        assert codes2 == [200, 200, 429]  # the team's own requests are limited as before


def test_forwarded_for_is_ignored_unless_the_peer_is_a_listed_proxy(
    upstream: FakeUpstream,
) -> None:
    """uvicorn believes X-Forwarded-For from 127.0.0.1 by default: any local client could pick
    a new rate-limit identity per request. Here no one is believed unless listed."""
    with ProxyServer(settings_for(upstream.url, rate_limit="2/minute")) as p:
        codes = [
            httpx.get(p.url + "/api/tags", headers={"X-Forwarded-For": f"1.2.3.{i}"}).status_code
            for i in range(3)
        ]
        assert codes == [200, 200, 429]  # all counted under 127.0.0.1
    settings = settings_for(upstream.url, rate_limit="2/minute", forwarded_allow_ips="127.0.0.1")
    with ProxyServer(settings) as p:
        codes = [
            httpx.get(p.url + "/api/tags", headers={"X-Forwarded-For": f"1.2.3.{i}"}).status_code
            for i in range(3)
        ]
        assert codes == [200, 200, 200]  # each forwarded address has its own window
        same = [
            httpx.get(p.url + "/api/tags", headers={"X-Forwarded-For": "5.6.7.8"}).status_code
            for _ in range(3)
        ]
        assert same == [200, 200, 429]
        # what the forwarded client sends cannot go around its proxy: the last address the
        # trusted proxy appended is the one counted
        spoofed = httpx.get(
            p.url + "/api/tags", headers={"X-Forwarded-For": "9.9.9.9, 5.6.7.8"}
        ).status_code
        assert spoofed == 429


def test_rate_limit_shared_through_redis(upstream: FakeUpstream, redis_url: str) -> None:
    common = {
        "proxy_api_keys": "shared",
        "rate_limit": "3/minute",
        "rate_limit_storage_uri": redis_url,
    }
    with (
        ProxyServer(settings_for(upstream.url, **common)) as a,
        ProxyServer(settings_for(upstream.url, **common)) as b,
    ):
        codes = [
            httpx.get(p.url + "/api/version", headers=bearer("shared")).status_code
            for p in (a, b, a, b)
        ]
        assert codes == [200, 200, 200, 429]  # one budget across both instances


def test_failed_authentications_are_throttled_per_address(upstream: FakeUpstream) -> None:
    settings = settings_for(upstream.url, proxy_api_keys="right-key", auth_failure_limit="3/minute")
    with ProxyServer(settings) as p, capture_logs() as logs:
        codes = [
            httpx.get(p.url + "/api/tags", headers=bearer(f"guess-{i}")).status_code
            for i in range(5)
        ]
        assert codes == [401, 401, 401, 429, 429]
        # Throttled, guesses are not compared at all: even the right key waits out the window,
        # or a guesser would learn which guess was right at full speed.
        r = httpx.post(p.url + "/api/chat", json=CHAT, headers=bearer("right-key"))
        assert r.status_code == 429
        assert r.json()["error"].startswith("too many failed authentication attempts")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        r = httpx.get(p.url + "/v1/models", headers=bearer("guess"))
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert httpx.get(p.url + "/health").status_code == 200  # liveness stays open
    throttled = [e for e in logs if e["event"] == "auth_throttled"]
    assert [(e["client"], e["log_level"]) for e in throttled] == [("127.0.0.1", "warning")]


def test_failed_authentications_count_across_instances_through_redis(
    upstream: FakeUpstream, redis_url: str
) -> None:
    common = {
        "proxy_api_keys": "right-key",
        "auth_failure_limit": "2/minute",
        "rate_limit_storage_uri": redis_url,
    }
    with (
        ProxyServer(settings_for(upstream.url, **common)) as a,
        ProxyServer(settings_for(upstream.url, **common)) as b,
    ):
        codes = [
            httpx.get(p.url + "/api/version", headers=bearer("nope")).status_code
            for p in (a, b, a, b)
        ]
        assert codes == [401, 401, 429, 429]


def test_rate_limit_storage_down_fails_open(upstream: FakeUpstream) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    settings = settings_for(
        upstream.url, rate_limit="1/minute", rate_limit_storage_uri=f"redis://127.0.0.1:{dead}/0"
    )
    with ProxyServer(settings) as p:
        assert [httpx.get(p.url + "/api/version").status_code for _ in range(2)] == [200, 200]


def test_security_headers(proxy: ProxyServer) -> None:
    h = httpx.get(proxy.url + "/api/version").headers
    assert (h["x-content-type-options"], h["x-frame-options"], h["referrer-policy"]) == (
        "nosniff",
        "DENY",
        "no-referrer",
    )


# --- fuzzing ----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "model",
    "messages",
    "prompt",
    "stream",
    "options",
    "format",
    "think",
    "keep_alive",
    "tools",
    "images",
    "input",
    "suffix",
    "raw",
    "dimensions",
    "name",
    "system",
    "template",
    "context",
]
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool", "system", "x"]) | JSON},
    optional={"content": JSON, "images": JSON, "tool_calls": JSON, "tool_name": JSON},
)
BODY = st.one_of(
    st.binary(max_size=64),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6).map(
        lambda v: json.dumps({"model": "gpt-4o-mini", **v}).encode()
    ),
    st.lists(MESSAGE, max_size=3).map(
        lambda m: json.dumps({"model": "gpt-4o-mini", "messages": m}).encode()
    ),
)
ENDPOINTS = [
    "/api/chat",
    "/api/generate",
    "/api/show",
    "/api/embed",
    "/api/embeddings",
    "/api/pull",
    "/v1/chat/completions",
    "/v1/embeddings",
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_fuzz_no_5xx_no_hang(proxy: ProxyServer, endpoint: str) -> None:
    with httpx.Client(base_url=proxy.url, timeout=5) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(body=BODY)
        def check(body: bytes) -> None:
            r = client.post(endpoint, content=body)
            assert r.status_code < 500, (r.status_code, r.text[:300])
            if r.status_code >= 400:
                err: Any = r.json()["error"]
                assert isinstance(err, str if endpoint.startswith("/api/") else dict)

        check()


def test_cors_preflight_passes_with_keys_on(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, proxy_api_keys="key-one-1234")) as p:
        pre = httpx.options(
            p.url + "/api/chat",
            headers={
                "Origin": "http://localhost:3000",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert httpx.options(p.url + "/api/chat").status_code == 401  # not a preflight


def test_cors_origins_add_to_the_local_ones_with_wildcards(upstream: FakeUpstream) -> None:
    # Ollama's OLLAMA_ORIGINS=chrome-extension://* lets an extension in and keeps localhost
    # (envconfig/config.go AllowedOrigins appends its defaults to the list).
    extension = "chrome-extension://gkhbfdbhmcaeicmbnplbfbgpmpkfhgom"
    with ProxyServer(settings_for(upstream.url, cors_origins="chrome-extension://*")) as p:
        for origin in (extension, "http://localhost:3000"):
            pre = httpx.options(
                p.url + "/v1/messages",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,x-api-key,anthropic-version",
                },
            )
            assert pre.status_code == 200, pre.text
            assert pre.headers["access-control-allow-origin"] == origin
        tags = httpx.get(p.url + "/api/tags", headers={"Origin": extension})
        assert tags.headers["access-control-allow-origin"] == extension
        refused = httpx.options(
            p.url + "/api/chat",
            headers={"Origin": "moz-extension://x", "Access-Control-Request-Method": "POST"},
        )
        assert refused.status_code == 403
        assert "CORS_ORIGINS" in refused.json()["error"]


# --- what a client can make the proxy ask the backend for ------------------------------------
# GET /v1/models/{id} is the one route whose client text becomes part of a backend URL (sent with
# the operator's key). Request targets are sent raw, as a hostile client would (httpx would
# normalise dot segments); whatever the proxy answers, the backend may only ever see
# /v1/models/<one id> with no dot segment, query or fragment, even after percent-decoding.

TRICKS = [
    "../files",
    "..%2Ffiles",
    "..%2F..%2Fadmin%3Fq%3D1",
    "%2e%2e/files",
    "%2E%2E%2Ffiles",
    "%252e%252e%252ffiles",
    "a/../../files",
    "a/./b",
    "a%2F..%2F..%2Ffiles",
    "gpt-4o?x=1",
    "gpt-4o%3Fx%3D1",
    "gpt-4o%23frag",
    "..\\files",
    "..%5Cfiles",
    "%00",
    "a%0d%0aX-Injected:%201",
    "openai/gpt-4o",
    "gpt-4o-mini",
    "..;/files",
    "..%3B/files",
    "%2e%2e;/files",
    "a" * 300,
    "~/",
    "%",
    "a//b",
]
TARGET_ALPHABET = st.sampled_from(
    [
        *(".", "..", "/", "%", "%2e", "%2E", "%2f", "%2F", "%25", "%3f", "%23", "%5c", "?", "#"),
        *("\\", "a", "b", "gpt-4o", ":", "@", "+", ";", "~", "%00", "%0a", "%20", "%c3%a9"),
        "files",
    ]
)


def _raw_get(port: int, target: str) -> int:
    """Status of ``GET <target>`` sent byte for byte; 0 when the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                return 0
            head += chunk
    return int(head.split(b" ", 2)[1])


def _assert_only_model_paths_reached(upstream: FakeUpstream) -> None:
    for target in upstream.targets:
        parts = urllib.parse.urlsplit(target)
        assert parts.query == "", target
        assert parts.fragment == "", target
        if parts.path == "/v1/models":  # the model list (name resolution)
            continue
        assert parts.path.startswith("/v1/models/"), target
        decoded = urllib.parse.unquote(parts.path)
        segments = decoded.split("/")[3:]
        assert segments, target
        assert all(seg not in ("", ".", "..") for seg in segments), target
        assert not any(c in decoded for c in "?#;\\\x00\r\n"), target


@pytest.mark.parametrize("trick", TRICKS)
def test_no_model_id_reaches_another_backend_path(
    proxy: ProxyServer, upstream: FakeUpstream, trick: str
) -> None:
    status = _raw_get(proxy.port, "/v1/models/" + trick)
    assert status in (200, 400, 404), status
    _assert_only_model_paths_reached(upstream)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(TARGET_ALPHABET, min_size=1, max_size=8))
def test_fuzz_model_ids_never_escape_the_models_path(
    proxy: ProxyServer, upstream: FakeUpstream, parts: list[str]
) -> None:
    upstream.targets.clear()
    status = _raw_get(proxy.port, "/v1/models/" + "".join(parts))
    assert status in (0, 200, 400, 404), status  # 0: uvicorn refused a malformed request line
    _assert_only_model_paths_reached(upstream)


def test_a_whole_answer_is_bounded_after_decompression(tmp_path: Path) -> None:
    """A hostile backend's gzip bomb: 2 MB of zeros in a few KB, against a 1 MB limit."""
    import gzip

    from aiohttp import web

    bomb = gzip.compress(b'{"choices":[{"message":{"content":"' + b"0" * 2_000_000 + b'"}}]}')

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        settings = settings_for(f"http://127.0.0.1:{port}/v1", response_max_size=1_000_000)
        with ProxyServer(settings) as p:
            chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            r = httpx.post(p.url + "/api/chat", json={**chat, "stream": False})
            assert r.status_code == 502
            assert r.json() == {
                "error": "upstream answer larger than 1000000 bytes (RESPONSE_MAX_SIZE)"
            }
            r = httpx.post(p.url + "/v1/chat/completions", json=chat)
            assert r.status_code == 502
            assert "RESPONSE_MAX_SIZE" in r.json()["error"]["message"]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_what_a_backend_writes_never_carries_the_key(upstream: FakeUpstream) -> None:
    """The backend key quoted in generated text (Ollama routes, streamed and not) and in a
    relayed header (/v1) is redacted, as it is in error bodies."""
    key = "sk-test-upstream"
    with ProxyServer(settings_for(upstream.url)) as p:
        upstream.script(Script(message={"role": "assistant", "content": f"the key is {key}"}))
        r = httpx.post(p.url + "/api/chat", json={**CHAT, "stream": False})
        assert r.status_code == 200
        assert key not in r.text
        assert "[redacted]" in r.json()["message"]["content"]
        upstream.script(Script(chunks=[{"content": f"key {key} here"}]))
        r = httpx.post(p.url + "/api/chat", json={**CHAT, "stream": True})
        assert key not in r.text
        assert "[redacted]" in r.text
        upstream.script(
            Script(
                status=401, error={"error": {"message": "no"}}, headers={"x-ratelimit-debug": key}
            )
        )
        r = httpx.post(p.url + "/v1/chat/completions", json=CHAT)
        assert r.status_code == 401
        assert r.headers.get("x-ratelimit-debug") == "[redacted]"


def test_a_clients_huge_text_is_echoed_bounded(upstream: FakeUpstream) -> None:
    role = "r" * 100_000
    with ProxyServer(settings_for(upstream.url)) as p:
        r = httpx.post(
            p.url + "/api/chat",
            json={"model": "gpt-4o-mini", "messages": [{"role": role, "content": "x"}]},
        )
        assert r.status_code == 400
        assert len(r.content) < 1000
        r = httpx.post(p.url + "/api/blobs/sha256-" + "a" * 5000)
        assert r.status_code == 501
        assert len(r.content) < 1000
