"""The response cache through the real proxy and a fake backend that counts its calls
(response_cache.py, issue #20): a hit makes no backend call on every route that calls a model,
a stream replays what the backend sent, TTL and size bounds, the Cache-Control bypasses, what is
never kept, tenants kept apart, metrics, and Redis: shared by two proxy processes, and killed
mid-way without a failed request."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from structlog.testing import capture_logs

from ollama_openai_bridge.cache_store import PREFIX
from tests.fake_upstream import FakeUpstream, Script
from tests.integration.test_cli import Running
from tests.integration.test_token_budgets import RedisServer
from tests.servers import ProxyServer, settings_for

HELLO = [{"role": "user", "content": "hi"}]
CHAT = {"model": "gpt-4o-mini", "messages": HELLO, "options": {"temperature": 0}}
OPENAI = {"model": "gpt-4o-mini", "messages": HELLO, "temperature": 0}
KEY_A, KEY_B = "test-key-1", "test-key-2"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
STATUS = "x-cache-status"


def calls(upstream: FakeUpstream, path: str = "/v1/chat/completions") -> int:
    return sum(1 for e in upstream.journal if e["path"] == path)


@pytest.fixture
def cached(upstream: FakeUpstream) -> Iterator[ProxyServer]:
    with ProxyServer(settings_for(upstream.url, response_cache="memory")) as server:
        yield server


def ndjson(r: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in r.text.splitlines() if line]


def _content(lines: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What an Ollama stream says, without its clock (timestamps and durations)."""
    return [(x.get("message"), x["done"], x.get("done_reason"), x.get("eval_count")) for x in lines]


VOLATILE = frozenset(
    {"id", "item_id", "created_at", "created", "context", "total_duration", "load_duration",
     "eval_duration", "prompt_eval_duration"}
)  # fmt: skip


def _stable(obj: Any) -> Any:
    """``obj`` without the ids and times a translator makes per answer."""
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def _events(text: str) -> list[Any]:
    """An SSE body's data, without the ids and times the translator makes per answer."""
    return [
        _stable(json.loads(line[6:]))
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def test_a_hit_makes_no_backend_call_on_every_route(
    cached: ProxyServer, upstream: FakeUpstream
) -> None:
    url = cached.url
    requests: list[tuple[str, dict[str, Any], str]] = [
        ("/api/chat", {**CHAT, "stream": False}, "/v1/chat/completions"),
        ("/api/generate", {"model": "gpt-4o-mini", "prompt": "hi", "stream": False,
                           "options": {"seed": 42}}, "/v1/chat/completions"),
        ("/v1/chat/completions", OPENAI, "/v1/chat/completions"),
        ("/v1/messages", {"model": "gpt-4o-mini", "max_tokens": 50, "messages": HELLO,
                          "temperature": 0}, "/v1/chat/completions"),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi", "temperature": 0},
         "/v1/chat/completions"),
        ("/api/embed", {"model": "text-embedding-3-small", "input": "hi"}, "/v1/embeddings"),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"}, "/v1/embeddings"),
    ]  # fmt: skip
    for path, body, backend in requests:
        before = calls(upstream, backend)
        first = httpx.post(url + path, json=body)
        second = httpx.post(url + path, json=body)
        assert first.status_code == second.status_code == 200, (path, second.text)
        assert (first.headers[STATUS], second.headers[STATUS]) == ("MISS", "HIT"), path
        assert calls(upstream, backend) == before + 1, path  # the hit did not reach it
        assert _stable(first.json()) == _stable(second.json()), path
    # /api/chat and /v1/chat/completions that ask the backend the same share an entry
    shared = {"model": "gpt-4o-mini", "messages": HELLO, "temperature": 0, "stream": False}
    before = calls(upstream)
    r = httpx.post(url + "/v1/chat/completions", json={**shared, "max_tokens": 9})
    assert r.headers[STATUS] == "MISS"
    chat = {"model": "gpt-4o-mini", "messages": HELLO, "stream": False,
            "options": {"temperature": 0, "num_predict": 9}}  # fmt: skip
    r = httpx.post(url + "/api/chat", json=chat)
    assert r.headers[STATUS] == "HIT", upstream.last()["body"]
    assert r.json()["message"]["content"] == "Hello!"
    assert calls(upstream) == before + 1


def test_a_stream_replays_what_the_backend_sent(
    cached: ProxyServer, upstream: FakeUpstream
) -> None:
    url = cached.url
    upstream.rules.append(
        (lambda body: True, Script(chunks=[{"content": "Hel"}, {"content": "lo"}], split_at=7))
    )
    chat = {**CHAT, "stream": True}
    first, second = (
        httpx.post(url + "/api/chat", json=chat),
        httpx.post(url + "/api/chat", json=chat),
    )
    assert (first.headers[STATUS], second.headers[STATUS]) == ("MISS", "HIT")
    assert _content(ndjson(first)) == _content(ndjson(second))
    assert "".join(x["message"]["content"] for x in ndjson(second)) == "Hello"
    assert ndjson(second)[-1]["done"] is True
    assert calls(upstream) == 1
    # the relay passes the backend's bytes: the same bytes again
    relayed = {**OPENAI, "stream": True}
    first = httpx.post(url + "/v1/chat/completions", json=relayed)
    second = httpx.post(url + "/v1/chat/completions", json=relayed)
    assert (first.headers[STATUS], second.headers[STATUS]) == ("MISS", "HIT")
    assert second.headers["content-type"].startswith("text/event-stream")
    assert first.content == second.content
    assert second.text.endswith("data: [DONE]\n\n")
    # Anthropic's and the Responses API's events, made again by their translators
    for path, body in (
        ("/v1/messages", {"model": "gpt-4o-mini", "max_tokens": 50, "messages": HELLO,
                          "temperature": 0, "stream": True}),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi", "temperature": 0,
                           "stream": True}),
    ):  # fmt: skip
        first, second = httpx.post(url + path, json=body), httpx.post(url + path, json=body)
        assert (first.headers[STATUS], second.headers[STATUS]) == ("MISS", "HIT"), path
        assert _events(first.text) == _events(second.text), path
        assert "Hel" in second.text
    assert calls(upstream) == 4
    # streamed and whole answers are kept apart
    r = httpx.post(url + "/api/chat", json={**CHAT, "stream": False})
    assert r.headers[STATUS] == "MISS"
    assert r.json()["message"]["content"] == "Hello"


def test_what_is_never_kept(cached: ProxyServer, upstream: FakeUpstream) -> None:
    url = cached.url
    chat = {**CHAT, "stream": True}

    def twice(script: Script, expect: int) -> None:
        before = calls(upstream)
        upstream.script(script, Script())
        httpx.post(url + "/api/chat", json=chat)
        r = httpx.post(url + "/api/chat", json=chat)
        assert r.headers[STATUS] == "MISS"  # the first was not kept
        assert calls(upstream) == before + 2
        assert r.status_code == expect
        httpx.post(url + "/api/chat", json={**chat, "options": {"temperature": 0, "seed": 1}})

    # an error, a stream the backend cut, one that never said it was done, an error event
    twice(Script(status=500, error={"error": {"message": "boom"}}), 200)
    upstream.journal.clear()
    chat["messages"] = [{"role": "user", "content": "two"}]
    twice(Script(drop_after=2), 200)
    chat["messages"] = [{"role": "user", "content": "three"}]
    twice(Script(finish_reason=None, done_marker=False), 200)
    chat["messages"] = [{"role": "user", "content": "four"}]
    twice(Script(chunks=[{"content": "a"}, '{"error": {"message": "overloaded"}}']), 200)
    # not deterministic: not looked up, not kept
    plain = {"model": "gpt-4o-mini", "messages": HELLO, "stream": False}
    for _ in range(2):
        r = httpx.post(url + "/api/chat", json=plain)
        assert r.headers[STATUS] == "UNCACHEABLE"
    # routes that call no model say nothing
    assert STATUS not in httpx.get(url + "/api/tags").headers


def test_a_stream_larger_than_the_bound_is_served_but_not_kept(upstream: FakeUpstream) -> None:
    settings = settings_for(
        upstream.url, response_cache="memory", response_cache_max_entry_bytes=2048
    )
    big = Script(chunks=[{"content": "x" * 100} for _ in range(30)])
    upstream.script(big, big)
    chat = {**CHAT, "stream": True}
    with ProxyServer(settings) as server:
        for _ in range(2):
            r = httpx.post(server.url + "/api/chat", json=chat)
            assert r.headers[STATUS] == "MISS"
            assert "".join(x["message"]["content"] for x in ndjson(r)) == "x" * 3000
    assert calls(upstream) == 2


def test_ttl_and_size_bounds(upstream: FakeUpstream) -> None:
    settings = settings_for(
        upstream.url,
        response_cache="memory",
        response_cache_ttl=0.6,
        response_cache_max_entries=2,
    )

    def ask(word: str) -> str:
        body = {**CHAT, "stream": False, "messages": [{"role": "user", "content": word}]}
        r = httpx.post(server.url + "/api/chat", json=body)
        assert r.status_code == 200
        return r.headers[STATUS]

    with ProxyServer(settings) as server:
        assert [ask("a"), ask("b"), ask("a")] == ["MISS", "MISS", "HIT"]
        assert ask("c") == "MISS"  # three entries: b, the least recently used, went
        assert [ask("a"), ask("c"), ask("b")] == ["HIT", "HIT", "MISS"]  # a went for b
        time.sleep(0.7)
        assert ask("c") == "MISS"  # expired
        metrics = httpx.get(server.url + "/metrics").text
    assert calls(upstream) == 5
    assert 'ollama_proxy_response_cache_requests_total{result="hit"} 3.0' in metrics
    assert 'ollama_proxy_response_cache_requests_total{result="miss"} 5.0' in metrics
    assert 'ollama_proxy_response_cache_stores_total{kind="whole"} 5.0' in metrics
    assert 'ollama_proxy_response_cache_evictions_total{reason="size"} 2.0' in metrics
    assert 'ollama_proxy_response_cache_evictions_total{reason="expired"} 1.0' in metrics
    assert "ollama_proxy_response_cache_entries 2.0" in metrics


def test_cache_control_bypasses(cached: ProxyServer, upstream: FakeUpstream) -> None:
    url = cached.url
    body = {**CHAT, "stream": False}
    upstream.script(Script(chunks=[{"content": "old"}]), Script(chunks=[{"content": "new"}]))
    assert httpx.post(url + "/api/chat", json=body).headers[STATUS] == "MISS"
    # no-cache: to the backend, and its new answer is kept
    r = httpx.post(url + "/api/chat", json=body, headers={"Cache-Control": "no-cache"})
    assert r.headers[STATUS] == "BYPASS"
    assert r.json()["message"]["content"] == "new"
    r = httpx.post(url + "/api/chat", json=body)
    assert (r.headers[STATUS], r.json()["message"]["content"]) == ("HIT", "new")
    assert calls(upstream) == 2
    # no-store: neither looked up nor kept
    other = {**body, "messages": [{"role": "user", "content": "other"}]}
    r = httpx.post(url + "/api/chat", json=other, headers={"Cache-Control": "max-age=0, no-store"})
    assert r.headers[STATUS] == "BYPASS"
    assert httpx.post(url + "/api/chat", json=other).headers[STATUS] == "MISS"
    assert calls(upstream) == 4


def test_answers_do_not_cross_keys_unless_told(upstream: FakeUpstream) -> None:
    for across, second in ((False, "MISS"), (True, "HIT")):
        upstream.journal.clear()
        settings = settings_for(
            upstream.url,
            response_cache="memory",
            proxy_api_keys=f"{KEY_A},{KEY_B}",
            response_cache_across_keys=across,
        )
        with ProxyServer(settings) as server:
            body = {**CHAT, "stream": False}
            assert (
                httpx.post(server.url + "/api/chat", json=body, headers=A).headers[STATUS] == "MISS"
            )
            assert (
                httpx.post(server.url + "/api/chat", json=body, headers=B).headers[STATUS] == second
            )
            assert (
                httpx.post(server.url + "/api/chat", json=body, headers=A).headers[STATUS] == "HIT"
            )


def test_nondeterministic_requests_only_when_allowed(upstream: FakeUpstream) -> None:
    settings = settings_for(
        upstream.url, response_cache="memory", response_cache_nondeterministic=True
    )
    plain = {"model": "gpt-4o-mini", "messages": HELLO, "stream": False}
    with ProxyServer(settings) as server:
        assert httpx.post(server.url + "/api/chat", json=plain).headers[STATUS] == "MISS"
        assert httpx.post(server.url + "/api/chat", json=plain).headers[STATUS] == "HIT"
    assert calls(upstream) == 1


def test_a_hit_counts_its_tokens_like_an_answer(upstream: FakeUpstream) -> None:
    settings = settings_for(upstream.url, response_cache="memory")
    with ProxyServer(settings) as server:
        for _ in range(2):
            httpx.post(server.url + "/api/chat", json={**CHAT, "stream": True})
        metrics = httpx.get(server.url + "/metrics").text
    assert 'ollama_proxy_tokens_total{kind="prompt",model="gpt-4o-mini"} 14.0' in metrics
    assert (
        'ollama_proxy_requests_total{endpoint="/api/chat",model="gpt-4o-mini",status="200"} 2.0'
        in metrics
    )
    assert calls(upstream) == 1


def _flush(url: str) -> None:
    r = redis.Redis.from_url(url)
    try:
        for name in r.scan_iter(PREFIX + "*"):
            r.delete(name)
    finally:
        r.close()


def _wait_for_hit(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    deadline = time.monotonic() + 10
    while True:  # the first process writes to Redis in the background
        r = httpx.post(url + path, json=body)
        if r.headers[STATUS] == "HIT":
            return r
        assert time.monotonic() < deadline, "no hit within 10 s"
        time.sleep(0.05)


def test_two_proxy_processes_share_the_cache_through_one_redis(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str
) -> None:
    _flush(redis_url)
    env = {
        "OPENAI_API_BASE_URL": upstream.url,
        "OPENAI_API_KEY": upstream.api_key,
        "RESPONSE_CACHE": "redis",
        "RATE_LIMIT_STORAGE_URI": redis_url,  # the rate limits' Redis
        "MAX_RETRIES": "0",
    }
    one, two = Running(tmp_path, env), Running(tmp_path, env)
    try:
        chat = {**CHAT, "stream": True}
        first = httpx.post(one.url + "/api/chat", json=chat)
        assert first.headers[STATUS] == "MISS"
        hit = _wait_for_hit(two.url, "/api/chat", chat)
        assert _content(ndjson(hit)) == _content(ndjson(first))
        relayed = {**OPENAI, "stream": False}
        first = httpx.post(two.url + "/v1/chat/completions", json=relayed)
        assert _wait_for_hit(one.url, "/v1/chat/completions", relayed).json() == first.json()
        # the backend answered each request once; the other process answered from Redis
        assert calls(upstream) == 2
        r = redis.Redis.from_url(redis_url)
        names = list(r.scan_iter(PREFIX + "*"))
        assert len(names) == 2
        assert all(0 < r.pttl(n) <= 3600 * 1000 for n in names)
        r.close()
    finally:
        out = one.stop() + two.stop()
    assert "Traceback" not in out
    # the access log says what the cache did
    access = [
        json.loads(line)
        for line in out.splitlines()
        if line.startswith("{") and '"event": "request"' in line.replace('":"', '": "')
    ]
    chats = [e.get("cache") for e in access if e.get("path") == "/api/chat"]
    assert chats[0] == "MISS"
    assert chats[-1] == "HIT"


def test_a_redis_killed_mid_way_fails_no_request(redis_url: str, upstream: FakeUpstream) -> None:
    del redis_url  # skips the test where redis-server is not installed
    server = RedisServer()
    server.start()
    settings = settings_for(
        upstream.url, response_cache="redis", response_cache_redis_uri=server.url
    )
    try:
        with ProxyServer(settings) as proxy, capture_logs() as logs:
            chat = {**CHAT, "stream": True}
            assert httpx.post(proxy.url + "/api/chat", json=chat).headers[STATUS] == "MISS"
            _wait_for_hit(proxy.url, "/api/chat", chat)
            server.stop()  # Redis goes away
            for i in range(3):
                started = time.monotonic()
                body = {**chat, "messages": [{"role": "user", "content": f"q{i}"}]}
                r = httpx.post(proxy.url + "/api/chat", json=body)
                assert r.status_code == 200
                assert r.headers[STATUS] == "MISS"
                assert ndjson(r)[-1]["done"] is True
                assert time.monotonic() - started < 2  # bounded waits, never a hang
            metrics = httpx.get(proxy.url + "/metrics").text
        warnings = [e for e in logs if e["event"] == "response_cache_unavailable"]
        assert len(warnings) == 1  # then Redis is left alone a while: one warning
        assert "ollama_proxy_response_cache_storage_errors_total" in metrics
    finally:
        server.stop()
