"""The exact bytes on the wire: framing, headers, statuses, and upstream faults aimock can't make."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from ollama_openai_bridge.config import OLLAMA_API_VERSION
from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def http(proxy: ProxyServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, timeout=10) as c:
        yield c


def ndjson(resp: httpx.Response) -> list[dict[str, Any]]:
    body = resp.text
    assert body.endswith("\n")
    assert "\n\n" not in body
    return [json.loads(line) for line in body.split("\n")[:-1]]


def test_root_version_health(http: httpx.Client) -> None:
    r = http.get("/")
    assert (r.status_code, r.text, r.headers["content-type"]) == (
        200,
        "Ollama is running",
        "text/plain; charset=utf-8",
    )
    assert http.head("/").status_code == 200
    v = http.get("/api/version")
    assert v.headers["content-type"] == "application/json; charset=utf-8"
    version = v.json()["version"]
    # Open WebUI: tuple(map(int, ...)); VS Code Copilot: >= 0.6.4
    assert tuple(map(int, version.split("."))) >= (0, 6, 4)
    assert http.head("/api/version").status_code == 200
    # Codex's --oss mode refuses an Ollama older than 0.13.4; the default is the release whose
    # API the proxy serves (capabilities in /api/tags: 0.30.0).
    assert version == OLLAMA_API_VERSION
    assert tuple(map(int, version.split("."))) >= (0, 30, 0)
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/v1/version").json()["name"] == "ollama-openai-bridge"


def test_status_says_cloud_features_are_disabled(http: httpx.Client) -> None:
    # Ollama 0.16.2's /api/status (routes.go StatusHandler): `ollama launch` reads
    # cloud.disabled to decide whether to offer cloud models, which no proxy can serve.
    r = http.get("/api/status")
    assert (r.status_code, r.headers["content-type"]) == (200, "application/json; charset=utf-8")
    assert r.json() == {"cloud": {"disabled": True, "source": "config"}}
    assert http.post("/api/status").status_code == 405
    assert http.head("/api/status").status_code == 200


def test_ready(http: httpx.Client) -> None:
    assert http.get("/ready").json() == {
        "status": "ready",
        "circuit_breaker": "closed",
        "profile": "openai-reference",
    }


def test_ready_reports_unreachable_upstream() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with ProxyServer(settings_for(f"http://127.0.0.1:{dead}/v1", health_check_timeout=1)) as p:
        r = httpx.get(p.url + "/ready")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable"
        assert "cannot connect" in r.json()["error"]
        chat = httpx.post(p.url + "/api/chat", json=CHAT)
        assert chat.status_code == 502
        assert chat.json()["error"].startswith("cannot connect to upstream")


def test_tags_head_and_shape(http: httpx.Client) -> None:
    assert http.head("/api/tags").status_code == 200
    models = http.get("/api/tags").json()["models"]
    for m in models:
        assert m["name"] == m["model"]
        assert {"modified_at", "size", "digest", "details"} <= m.keys()
    # Ollama 0.30.0: capabilities and the context (and embedding) length of each entry.
    by_name = {m["name"]: m for m in models}
    assert by_name["qwen3:8b"]["capabilities"] == ["completion", "tools", "insert", "thinking"]
    assert by_name["qwen3:8b"]["details"]["context_length"] == 40960
    embed = by_name["text-embedding-3-small"]
    assert embed["capabilities"] == ["embedding"]
    assert embed["details"]["embedding_length"] == 1536


def test_insert_only_where_the_backend_takes_suffix(upstream: FakeUpstream) -> None:
    # vLLM refuses suffix on /v1/completions (serving_completion.py): no insert capability,
    # no .Suffix in the template, so Continue does not try fill-in-the-middle through it.
    with ProxyServer(settings_for(upstream.url, backend_profile="vllm")) as p:
        tags = httpx.get(p.url + "/api/tags").json()["models"]
        qwen = next(m for m in tags if m["name"] == "qwen3:8b")
        assert qwen["capabilities"] == ["completion", "tools", "thinking"]
        show = httpx.post(p.url + "/api/show", json={"model": "qwen3:8b"}).json()
        assert show["capabilities"] == ["completion", "tools", "thinking"]
        assert ".Suffix" not in show["template"]
        assert ".Thinking" in show["template"]


def test_unknown_route_and_method(http: httpx.Client) -> None:
    r = http.get("/api/nope")
    assert (r.status_code, r.json()) == (404, {"error": "404 page not found"})
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    r = http.get("/api/chat")
    assert (r.status_code, r.json()) == (405, {"error": "405 method not allowed"})
    r = http.get("/v1/nope")
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "404 page not found"


def test_streaming_content_type_and_framing(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.script(Script(chunks=[{"content": "a\u2028b"}, {"content": "c\u2029d\u0085e"}]))
    r = http.post("/api/chat", json=CHAT)
    assert r.headers["content-type"] == "application/x-ndjson"
    raw = r.content
    for sep in ("\u2028", "\u2029", "\u0085"):
        assert sep.encode() not in raw
    lines = ndjson(r)
    assert "".join(line["message"]["content"] for line in lines) == "a\u2028bc\u2029d\u0085e"
    assert [line["done"] for line in lines] == [False, False, True]
    # httpx's iter_lines (what ollama-python uses) must see exactly these lines.
    with http.stream("POST", "/api/chat", json=CHAT) as s:
        assert len([json.loads(x) for x in s.iter_lines()]) == 3


@pytest.mark.parametrize("split_at", [1, 3, 7, 50])
def test_sse_frames_and_utf8_split_across_reads(
    http: httpx.Client, upstream: FakeUpstream, split_at: int
) -> None:
    text = ["Grüße ", "日本語 ", "🎉🎉", " done"]
    upstream.script(Script(chunks=[{"content": t} for t in text], split_at=split_at, delay=0.001))
    lines = ndjson(http.post("/api/chat", json=CHAT))
    assert [line["message"]["content"] for line in lines] == [*text, ""]
    assert lines[-1]["eval_count"] == 2


def test_keepalive_comments_and_crlf(http: httpx.Client, upstream: FakeUpstream) -> None:
    body = (
        b": ping\r\n\r\n"
        b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\r\n\r\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    upstream.script(Script(raw_body=body, split_at=5))
    lines = ndjson(http.post("/api/chat", json=CHAT))
    assert [line["message"]["content"] for line in lines] == ["x", ""]
    assert lines[-1]["done_reason"] == "length"


def test_stream_without_done_marker_still_finishes(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    upstream.script(Script(done_marker=False))
    lines = ndjson(http.post("/api/chat", json=CHAT))
    assert lines[-1]["done"] is True


def test_backend_answering_json_to_a_stream_request(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    completion = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "whole"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
    upstream.script(
        Script(raw_body=json.dumps(completion).encode(), content_type="application/json")
    )
    lines = ndjson(http.post("/api/chat", json=CHAT))
    assert [line["message"]["content"] for line in lines] == ["whole", ""]


def test_garbage_stream_before_output_is_502(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.script(Script(raw_body=b"data: {not json}\n\n"))
    r = http.post("/api/chat", json=CHAT)
    assert r.status_code == 502
    assert "not JSON" in r.json()["error"]


def test_error_event_mid_stream(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.script(
        Script(chunks=[{"content": "partial"}, '{"error": {"message": "model crashed"}}'])
    )
    lines = ndjson(http.post("/api/chat", json=CHAT))
    assert lines == [lines[0], {"error": "upstream error: model crashed"}]
    assert lines[0]["message"]["content"] == "partial"


def test_connection_dropped_mid_stream_gives_error_line_no_done(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    upstream.script(
        Script(chunks=[{"content": "Once"}, {"content": " upon"}], drop_after=2, delay=0.01)
    )
    r = http.post("/api/chat", json=CHAT)
    assert r.status_code == 200
    lines = ndjson(r)
    assert lines[-1] == {"error": "upstream stream interrupted: connection closed early"}
    assert not any(line.get("done") for line in lines)


def test_client_disconnect_cancels_upstream_promptly(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    upstream.script(Script(chunks=[{"content": str(i)} for i in range(200)], delay=0.05))
    with httpx.Client(base_url=proxy.url) as c, c.stream("POST", "/api/chat", json=CHAT) as r:
        next(r.iter_lines())
        closed_at = time.monotonic()
    deadline = closed_at + 2
    while not upstream.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    assert upstream.cancelled, "the upstream stream was not closed"
    assert upstream.cancelled[0] - closed_at < 0.5


async def _tasks() -> int:
    return len(asyncio.all_tasks())


def test_a_held_stream_costs_the_server_one_task(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    """Issue #18, memory per open stream: the command's protocol reports a departed client to
    the request itself (http.REPORTS_KEY), so a stream holds uvicorn's task and nothing more --
    no task waiting for ``http.disconnect`` beside it (about 1.5 KB each)."""
    n = 3
    upstream.script(
        *(Script(chunks=[{"content": str(i)} for i in range(200)], delay=0.05) for _ in range(n))
    )
    loop = proxy.server.servers[0].get_loop()

    def tasks() -> int:
        return asyncio.run_coroutine_threadsafe(_tasks(), loop).result(5)

    before = tasks()
    with httpx.Client(base_url=proxy.url) as c, ExitStack() as held:
        streams = [held.enter_context(c.stream("POST", "/api/chat", json=CHAT)) for _ in range(n)]
        lines = [r.iter_lines() for r in streams]  # kept: a closed iterator closes its response
        for line in lines:
            assert "message" in json.loads(next(line))
        assert tasks() == before + n
        closed_at = time.monotonic()
    deadline = closed_at + 2
    while len(upstream.cancelled) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(upstream.cancelled) == n, "the departures were not reported"
    assert max(upstream.cancelled) - closed_at < 0.5


def test_stalled_stream_times_out_with_error_line(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, stream_idle_timeout=0.3)) as p:
        upstream.script(Script(chunks=[{"content": "a"}, {"content": "b"}], stall_after=2))
        lines = ndjson(httpx.post(p.url + "/api/chat", json=CHAT, timeout=10))
        assert lines[0]["message"]["content"] == "a"
        assert lines[-1] == {"error": "upstream stream stalled: no data within the timeout"}


def test_timeout_before_first_byte_is_504(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, request_timeout=0.3, first_byte_timeout=0.3)) as p:
        for stream in (False, True):
            upstream.script(Script(first_delay=1.0))
            r = httpx.post(p.url + "/api/chat", json={**CHAT, "stream": stream}, timeout=10)
            assert r.status_code == 504
            assert any(w in r.json()["error"] for w in ("did not answer", "sent nothing within"))


def test_retry_before_first_byte(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, max_retries=2)) as p:
        upstream.script(
            Script(status=503, error={"error": {"message": "busy"}}),
            Script(status=429, headers={"Retry-After": "0"}),
            Script(chunks=[{"content": "ok"}]),
        )
        r = httpx.post(p.url + "/api/chat", json={**CHAT, "stream": False})
        assert r.status_code == 200
        assert r.json()["message"]["content"] == "ok"
        assert len([e for e in upstream.journal if e["path"] == "/v1/chat/completions"]) == 3


def test_body_size_limit(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, request_max_size=1000)) as p:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
        r = httpx.post(p.url + "/api/chat", json=big)
        assert (r.status_code, r.json()) == (
            413,
            {"error": "request body too large: the limit is 1000 bytes"},
        )

        def chunks() -> Any:
            data = json.dumps(big).encode()
            for i in range(0, len(data), 100):
                yield data[i : i + 100]

        r = httpx.post(p.url + "/api/chat", content=chunks())  # chunked: no Content-Length
        assert r.status_code == 413
        # nothing but the model list fetched at start
        assert [e["path"] for e in upstream.journal] == ["/v1/models"]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"", 400, "missing request body"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "model is required"),
        (
            b'{"model": "m", "messages": [',
            400,
            "Invalid JSON: EOF while parsing a list at line 1 column 28",
        ),
        (
            b'{"model": "m", "messages": [{"role":"user","content":"x"}], "think": "extreme"}',
            400,
            'invalid think value: "extreme" (must be "high", "medium", "low", "max", true, or false)',
        ),
        (
            b'{"model": "m", "messages": [{"role":"user","content":"x"}], "keep_alive": "300"}',
            400,
            'time: missing unit in duration "300"',
        ),
    ],
)
def test_bad_chat_requests(http: httpx.Client, body: bytes, status: int, error: str) -> None:
    r = http.post("/api/chat", content=body)
    assert (r.status_code, r.json()) == (status, {"error": error})
    assert r.headers["content-type"] == "application/json; charset=utf-8"


def test_generate_without_model_is_404_like_ollama(http: httpx.Client) -> None:
    r = http.post("/api/generate", json={"prompt": "x"})
    assert (r.status_code, r.json()) == (404, {"error": "model '' not found"})


def test_show_requires_model_and_accepts_name_alias(http: httpx.Client) -> None:
    assert http.post("/api/show", json={}).json() == {"error": "model is required"}
    assert http.post("/api/show", json={"name": "gpt-4o-mini"}).json()["capabilities"]


def test_request_id_accepted_and_returned(http: httpx.Client) -> None:
    assert (
        http.get("/api/version", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    generated = http.get("/api/version").headers["x-request-id"]
    assert len(generated) == 32
    assert (
        http.get("/api/version", headers={"X-Request-ID": "bad id!"}).headers["x-request-id"]
        != "bad id!"
    )


def test_cors_default_local_origins(http: httpx.Client) -> None:
    pre = http.options(
        "/api/chat",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "http://localhost:3000"
    other = http.get("/api/version", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_authorization_from_clients_is_not_forwarded(
    http: httpx.Client, upstream: FakeUpstream
) -> None:
    # n8n sends "Bearer " with an empty key; ollama-python may send an ollama.com key.
    r = http.post(
        "/api/chat",
        json={**CHAT, "stream": False},
        headers={"Authorization": "Bearer client-secret"},
    )
    assert r.status_code == 200
    assert upstream.last()["headers"]["Authorization"] == "Bearer sk-test-upstream"


def test_upstream_key_never_in_error_bodies(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.script(
        Script(status=401, error={"error": {"message": "bad key sk-test-upstream given"}})
    )
    r = http.post("/api/chat", json={**CHAT, "stream": False})
    assert r.status_code == 401
    assert "sk-test-upstream" not in r.text
    assert "[redacted]" in r.json()["error"]


def test_model_mapping_file(tmp_path: Any, upstream: FakeUpstream) -> None:
    path = tmp_path / "models.json"
    path.write_text(
        json.dumps(
            {
                "fast": "gpt-4o-mini",
                "big": {
                    "model": "qwen3:8b",
                    "context_length": 4096,
                    "capabilities": ["completion"],
                },
            }
        )
    )
    with ProxyServer(settings_for(upstream.url, model_mapping_file=path)) as p:
        names = [m["name"] for m in httpx.get(p.url + "/api/tags").json()["models"]]
        assert names == ["fast", "big", "text-embedding-3-small"]
        r = httpx.post(
            p.url + "/api/chat",
            json={
                "model": "fast:latest",
                "stream": False,
                "messages": [{"role": "user", "content": "x"}],
            },
        )
        assert r.json()["model"] == "fast:latest"
        assert upstream.last()["body"]["model"] == "gpt-4o-mini"
        show = httpx.post(p.url + "/api/show", json={"model": "big"}).json()
        assert show["capabilities"] == ["completion"]
        assert show["model_info"]["qwen.context_length"] == 4096
        oai = httpx.get(p.url + "/v1/models").json()
        assert [m["id"] for m in oai["data"]] == ["fast", "big", "text-embedding-3-small"]
        httpx.post(
            p.url + "/v1/chat/completions",
            json={"model": "big", "messages": [{"role": "user", "content": "x"}]},
        )
        assert upstream.last()["body"]["model"] == "qwen3:8b"


def test_openapi_documents_the_raw_handlers(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    chat = spec["paths"]["/api/chat"]["post"]
    assert chat["operationId"] == "chat"
    schema = chat["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "messages", "stream", "options", "think", "format"} <= schema[
        "properties"
    ].keys()
    assert {
        "/api/generate",
        "/api/show",
        "/api/tags",
        "/api/ps",
        "/api/version",
        "/v1/chat/completions",
    } <= spec["paths"].keys()
    assert http.get("/docs").status_code == 200


def test_first_byte_timeout_counts_until_the_first_line(upstream: FakeUpstream) -> None:
    # Headers and a role-only chunk arrive at once, the first token never: still a real 504.
    with ProxyServer(settings_for(upstream.url, first_byte_timeout=0.3)) as p:
        upstream.script(Script(chunks=[{"content": "late"}], stall_after=1))
        r = httpx.post(p.url + "/api/chat", json=CHAT, timeout=10)
        assert (r.status_code, r.json()) == (
            504,
            {"error": "upstream sent nothing within 0.3 s (FIRST_BYTE_TIMEOUT)"},
        )


def test_stream_total_timeout(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, stream_timeout=0.3)) as p:
        upstream.script(Script(chunks=[{"content": str(i)} for i in range(20)], delay=0.05))
        lines = ndjson(httpx.post(p.url + "/api/chat", json=CHAT, timeout=10))
        assert lines[0]["message"]["content"] == "0"
        assert lines[-1] == {"error": "stream ended: it lasted longer than STREAM_TIMEOUT"}


def test_lying_content_length_neither_hangs_nor_breaks(proxy: ProxyServer) -> None:
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        # claims 10 bytes, sends 5 KB: only 10 bytes are the body (invalid JSON -> 400), the
        # rest is not a valid request and the connection is closed, without a 5xx
        s.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n"
            + body
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400")
    assert b" 500 " not in data
