"""Backend faults on purpose: nothing lost, nothing duplicated, the documented error every time."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from ollama_openai_bridge.config import Settings
from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def chats(upstream: FakeUpstream) -> int:
    return sum(1 for e in upstream.journal if e["path"] == "/v1/chat/completions")


def lines(r: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(x) for x in r.text.splitlines()]


def test_circuit_breaker_opens_fails_fast_and_recovers(upstream: FakeUpstream) -> None:
    settings = settings_for(
        upstream.url,
        circuit_breaker_threshold=2,
        circuit_breaker_cooldown=0.5,
        circuit_breaker_half_open_calls=1,
    )
    with ProxyServer(settings) as p:
        upstream.script(Script(status=502, error="down"), Script(status=503, error="down"))
        assert httpx.post(p.url + "/api/chat", json=CHAT).status_code == 502
        assert httpx.post(p.url + "/api/chat", json=CHAT).status_code == 502
        r = httpx.post(p.url + "/api/chat", json=CHAT)
        assert r.status_code == 503
        assert r.json()["error"] == (
            "upstream unavailable: circuit breaker open: 2 calls in a row got no answer or a "
            "502/503/504; next attempt in 1 s"
        )
        assert chats(upstream) == 2  # failed fast: the backend was not called
        ready = httpx.get(p.url + "/ready")
        assert (ready.status_code, ready.json()["circuit_breaker"]) == (503, "open")
        assert (
            'ollama_proxy_circuit_breaker_state{upstream="default"} 2.0'
            in httpx.get(p.url + "/v1/metrics").text
        )
        time.sleep(0.6)
        assert httpx.post(p.url + "/api/chat", json=CHAT).status_code == 200  # the trial call
        assert httpx.get(p.url + "/ready").json()["circuit_breaker"] == "closed"


def test_failed_trial_call_reopens(upstream: FakeUpstream) -> None:
    settings = settings_for(upstream.url, circuit_breaker_threshold=1, circuit_breaker_cooldown=0.3)
    with ProxyServer(settings) as p:
        upstream.script(Script(status=502), Script(status=502))
        assert httpx.post(p.url + "/api/chat", json=CHAT).status_code == 502
        time.sleep(0.35)
        assert httpx.post(p.url + "/api/chat", json=CHAT).status_code == 502  # trial fails
        r = httpx.post(p.url + "/api/chat", json=CHAT)
        assert r.status_code == 503  # open again
        assert "a trial call failed after 0.3 s open" in r.json()["error"]
        assert chats(upstream) == 2


def test_a_few_bad_requests_do_not_cost_other_clients_a_503(upstream: FakeUpstream) -> None:
    """Issue #14: two requests whose content makes the backend answer 500, each retried three
    times, opened the breaker for everyone. With the default breaker they are two failed calls
    among many, and nobody else notices."""
    settings = settings_for(
        upstream.url,
        max_retries=3,
        circuit_breaker_threshold=Settings.model_fields["circuit_breaker_threshold"].default,
    )
    poison = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "poison"}]}
    upstream.faults.append(
        (lambda path, body: "poison" in json.dumps(body), Script(status=500, error="engine bug"))
    )
    with ProxyServer(settings) as p, httpx.Client(base_url=p.url, timeout=30) as c:
        statuses = []
        for i in range(30):
            if i == 3:  # one after the other: 8 failed attempts in a row
                for _ in range(2):
                    r = c.post("/api/chat", json={**poison, "stream": False})
                    assert (r.status_code, r.json()) == (
                        502,
                        {"error": "upstream error (HTTP 500): engine bug"},
                    )
            statuses.append(c.post("/api/chat", json={**CHAT, "stream": i % 2 == 0}).status_code)
        assert statuses == [200] * 30
        poisoned = [e for e in upstream.journal if "poison" in json.dumps(e.get("body"))]
        assert len(poisoned) == 8  # 2 requests x 4 attempts: what opened it before
        assert c.get("/ready").json()["circuit_breaker"] == "closed"
        assert (
            'ollama_proxy_circuit_breaker_state{upstream="default"} 0.0'
            in c.get("/v1/metrics").text
        )


def test_connection_refused_is_retried_then_502() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with ProxyServer(settings_for(f"http://127.0.0.1:{dead}/v1", max_retries=2)) as p:
        r = httpx.post(p.url + "/api/chat", json=CHAT)
        assert r.status_code == 502
        assert "cannot connect to upstream" in r.json()["error"]
        assert (
            'ollama_proxy_upstream_retries_total{path="/chat/completions",upstream="default"} 2.0'
            in httpx.get(p.url + "/v1/metrics").text
        )


def test_retry_after_is_honoured(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, max_retries=1)) as p:
        upstream.script(
            Script(
                status=429, error={"error": {"message": "slow down"}}, headers={"Retry-After": "1"}
            )
        )
        started = time.monotonic()
        r = httpx.post(p.url + "/api/chat", json={**CHAT, "stream": False})
        assert r.status_code == 200
        assert time.monotonic() - started >= 1.0
        assert chats(upstream) == 2


def test_long_retry_after_is_not_waited_for(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, max_retries=3)) as p:
        upstream.script(
            Script(
                status=429, error={"error": {"message": "quota"}}, headers={"Retry-After": "3600"}
            )
        )
        r = httpx.post(p.url + "/api/chat", json=CHAT)
        assert (r.status_code, r.json()) == (429, {"error": "quota"})
        assert chats(upstream) == 1


def test_streams_are_never_replayed(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, max_retries=3)) as p:
        upstream.script(
            Script(chunks=[{"content": "one"}, {"content": "two"}], drop_after=2, delay=0.01)
        )
        out = lines(httpx.post(p.url + "/api/chat", json=CHAT))
        assert [x.get("message", {}).get("content") for x in out[:-1]] == ["one"]
        assert "error" in out[-1]
        assert chats(upstream) == 1  # no second attempt: "one" would have been sent twice


def test_concurrency_limit_rejects_beyond_the_queue(upstream: FakeUpstream) -> None:
    settings = settings_for(upstream.url, max_concurrent_requests=1, max_queued_requests=0)
    with ProxyServer(settings) as p:
        upstream.script(Script(chunks=[{"content": str(i)} for i in range(60)], delay=0.05))
        with httpx.Client(base_url=p.url) as c, c.stream("POST", "/api/chat", json=CHAT) as slow:
            lines_ = slow.iter_lines()  # keep it: a discarded iterator closes the response
            next(lines_)
            r = httpx.post(p.url + "/api/chat", json=CHAT)
            assert (r.status_code, r.json()) == (
                503,
                {"error": "server busy, please try again.  maximum pending requests exceeded"},
            )
        # the slot came back when the stream ended (here: the client left)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            r = httpx.post(p.url + "/api/chat", json={**CHAT, "stream": False})
            if r.status_code == 200:
                break
            time.sleep(0.05)
        assert r.status_code == 200


def test_queued_request_waits_for_a_slot(upstream: FakeUpstream) -> None:
    settings = settings_for(
        upstream.url, max_concurrent_requests=1, max_queued_requests=5, queue_timeout=5
    )
    with ProxyServer(settings) as p:
        upstream.script(Script(chunks=[{"content": "a"}, {"content": "b"}], delay=0.2), Script())
        results: list[int] = []
        first = threading.Thread(
            target=lambda: results.append(httpx.post(p.url + "/api/chat", json=CHAT).status_code)
        )
        first.start()
        time.sleep(0.1)
        second = httpx.post(p.url + "/api/chat", json={**CHAT, "stream": False})
        first.join()
        assert (results, second.status_code) == ([200], 200)


def test_queue_timeout(upstream: FakeUpstream) -> None:
    settings = settings_for(
        upstream.url, max_concurrent_requests=1, max_queued_requests=5, queue_timeout=0.2
    )
    with ProxyServer(settings) as p:
        upstream.script(Script(chunks=[{"content": str(i)} for i in range(60)], delay=0.05))
        with httpx.Client(base_url=p.url) as c, c.stream("POST", "/api/chat", json=CHAT) as slow:
            lines_ = slow.iter_lines()  # keep it: a discarded iterator closes the response
            next(lines_)
            r = httpx.post(p.url + "/api/chat", json=CHAT)
            assert r.status_code == 503
            assert "no free slot within 0.2 s" in r.json()["error"]


@pytest.mark.parametrize("path", ["/api/embed", "/v1/chat/completions"])
def test_other_endpoints_share_the_limit(upstream: FakeUpstream, path: str) -> None:
    settings = settings_for(upstream.url, max_concurrent_requests=1, max_queued_requests=0)
    with ProxyServer(settings) as p:
        upstream.script(Script(chunks=[{"content": str(i)} for i in range(60)], delay=0.05))
        with httpx.Client(base_url=p.url) as c, c.stream("POST", "/api/chat", json=CHAT) as slow:
            lines_ = slow.iter_lines()  # keep it: a discarded iterator closes the response
            next(lines_)
            body = (
                {"model": "text-embedding-3-small", "input": "x"} if path == "/api/embed" else CHAT
            )
            assert httpx.post(p.url + path, json=body).status_code == 503
