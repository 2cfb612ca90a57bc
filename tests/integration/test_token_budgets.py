"""Token budgets per inbound key (issue #20) on the running proxy: every route that calls a model
counts, a spent key is refused before the backend in its route's dialect, /v1/usage is
protected; with a real redis-server, two proxy processes share the budgets, and a Redis that
fails or goes away never fails a request and loses no counts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from structlog.testing import capture_logs

from ollama_openai_bridge import budgets as budgets_module
from ollama_openai_bridge.budget_plan import Account, caller_of, load_accounts, window
from ollama_openai_bridge.budgets import PREFIX, TokenBudgets
from tests.fake_upstream import FakeUpstream
from tests.integration.test_cli import Running
from tests.servers import ProxyServer, settings_for

KEY_A, KEY_B = "key-team-a-0123", "key-team-b-0123"
ID_A, ID_B = (hashlib.sha256(k.encode()).hexdigest()[:8] for k in (KEY_A, KEY_B))
ADMIN = "admin-key-0123456789abcdef"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
HELLO = [{"role": "user", "content": "hi"}]
CHAT = {"model": "gpt-4o-mini", "messages": HELLO, "stream": False}
OPENAI_CHAT = {"model": "gpt-4o-mini", "messages": HELLO}
# The fake backend's usage of a chat answer (tests/fake_upstream.Script)
PROMPT, COMPLETION = 7, 2


def frozen(server: ProxyServer, at: float) -> None:
    """The proxy's budgets read time from a clock of the test's (``at``, epoch seconds): windows
    and Retry-After are then exact, whatever the time the test runs at."""
    b = server.app.state.ctx.budgets
    assert b is not None
    b._clock = lambda: at


def mid_hour() -> float:
    """Half past the next hour, in the future (Redis expiries are set from the window's end)."""
    return (math.floor(time.time() / 3600) + 1) * 3600 + 1800.0


def used(server: ProxyServer, headers: dict[str, str], unit: str = "day") -> int:
    body = httpx.get(server.url + "/v1/usage", headers=headers).json()
    total: int = body["keys"][0]["windows"][unit]["total_tokens"]
    return total


@pytest.fixture
def budgeted(upstream: FakeUpstream, tmp_path: Path) -> Iterator[ProxyServer]:
    """Keys A (named team-a, 10 tokens an hour) and B (the default, 1000 an hour)."""
    path = tmp_path / "budgets.yaml"
    path.write_text(f'"{ID_A}": {{name: team-a, budget: 10/hour}}\n')
    settings = settings_for(
        upstream.url,
        proxy_api_keys=f"{KEY_A},{KEY_B}",
        token_budget="1000/hour",
        token_budgets_file=path,
        usage_admin_key=ADMIN,
    )
    with ProxyServer(settings) as server:
        frozen(server, mid_hour())
        yield server


def test_a_spent_key_is_refused_before_the_backend_in_each_dialect(
    budgeted: ProxyServer, upstream: FakeUpstream
) -> None:
    url = budgeted.url
    assert httpx.post(url + "/api/chat", json=CHAT, headers=A).status_code == 200
    # a stream counts when it ends
    with httpx.stream("POST", url + "/api/chat", json={**CHAT, "stream": True}, headers=A) as r:
        lines = [json.loads(line) for line in r.iter_lines()]
    assert lines[-1]["done"] is True
    assert used(budgeted, A, "hour") == 2 * (PROMPT + COMPLETION)  # 18: the second overshot
    calls = len(upstream.journal)
    r = httpx.post(url + "/api/chat", json=CHAT, headers=A)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1800"  # until the hour ends
    assert r.headers["x-should-retry"] == "false"  # half an hour: SDK retries would be in vain
    assert r.json() == {
        "error": "token budget of key 'team-a' used up: 18 of 10 tokens this hour (UTC); "
        "retry in 1800 s"
    }
    r = httpx.post(url + "/v1/chat/completions", json=OPENAI_CHAT, headers=A)
    assert r.status_code == 429
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    r = httpx.post(url + "/v1/responses", json={"model": "gpt-4o-mini", "input": "hi"}, headers=A)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    anthropic = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": HELLO}
    r = httpx.post(url + "/v1/messages", json=anthropic, headers={"x-api-key": KEY_A})
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["type"] == "error"
    embed = {"model": "text-embedding-3-small", "input": "x"}
    assert httpx.post(url + "/api/embed", json=embed, headers=A).status_code == 429
    assert len(upstream.journal) == calls  # none of them reached the backend
    # what calls no model stays open; the other key has its own budget
    assert httpx.get(url + "/api/tags", headers=A).status_code == 200
    assert httpx.post(url + "/api/chat", json=CHAT, headers=B).status_code == 200
    metrics = httpx.get(url + "/metrics", headers=A).text
    assert 'ollama_proxy_budget_refusals_total{key="team-a",window="hour"} 5.0' in metrics
    assert f'ollama_proxy_key_tokens_total{{key="{ID_B}",kind="prompt"}} 7.0' in metrics
    assert KEY_A not in metrics


def test_every_route_that_calls_a_model_counts(
    budgeted: ProxyServer, upstream: FakeUpstream
) -> None:
    url = budgeted.url
    steps: list[tuple[str, dict[str, Any], int]] = [
        ("/api/chat", CHAT, PROMPT + COMPLETION),
        ("/api/generate", {"model": "gpt-4o-mini", "prompt": "hi"}, PROMPT + COMPLETION),
        ("/api/embed", {"model": "text-embedding-3-small", "input": ["a", "b"]}, 6),
        ("/api/embeddings", {"model": "text-embedding-3-small", "prompt": "a"}, 3),
        ("/v1/chat/completions", OPENAI_CHAT, PROMPT + COMPLETION),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": "hi"}, PROMPT + COMPLETION),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "a"}, 3),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi"}, PROMPT + COMPLETION),
        (
            "/v1/responses",
            {"model": "gpt-4o-mini", "input": "hi", "stream": True},
            PROMPT + COMPLETION,
        ),
        (
            "/v1/messages",
            {"model": "gpt-4o-mini", "max_tokens": 16, "messages": HELLO, "stream": True},
            PROMPT + COMPLETION,
        ),
    ]
    total = 0
    for path, body, tokens in steps:
        with httpx.stream("POST", url + path, json=body, headers=B) as r:
            r.read()
            assert r.status_code == 200, (path, r.text)
        total += tokens
        assert used(budgeted, B, "hour") == total, path


def test_a_v1_stream_is_counted_whether_or_not_the_client_asked_for_its_usage(
    budgeted: ProxyServer, upstream: FakeUpstream
) -> None:
    url = budgeted.url
    stream = {**OPENAI_CHAT, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=stream, headers=B) as r:
        text = r.read().decode()
    # asked for on the client's behalf, counted, and its chunk kept from the client
    assert upstream.last()["body"]["stream_options"] == {"include_usage": True}
    assert '"usage"' not in text
    assert text.endswith("data: [DONE]\n\n")
    assert used(budgeted, B, "hour") == PROMPT + COMPLETION
    asked = {**stream, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", url + "/v1/chat/completions", json=asked, headers=B) as r:
        text = r.read().decode()
    assert '"usage"' in text  # the client asked: it gets it
    assert used(budgeted, B, "hour") == 2 * (PROMPT + COMPLETION)
    completions = {"model": "gpt-4o-mini", "prompt": "hi", "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=completions, headers=B) as r:
        assert '"usage"' not in r.read().decode()
    assert used(budgeted, B, "hour") == 3 * (PROMPT + COMPLETION)


def test_a_day_budget_spent_is_a_quota(upstream: FakeUpstream) -> None:
    settings = settings_for(upstream.url, proxy_api_keys=KEY_A, token_budget="5/day")
    with ProxyServer(settings) as server:
        at = mid_hour()
        frozen(server, at)
        assert httpx.post(server.url + "/api/chat", json=CHAT, headers=A).status_code == 200
        r = httpx.post(server.url + "/v1/chat/completions", json=OPENAI_CHAT, headers=A)
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "insufficient_quota"
    assert r.json()["error"]["code"] == "insufficient_quota"
    assert r.headers["retry-after"] == str(math.ceil(window("day", at)[1] - at))
    assert r.headers["x-should-retry"] == "false"  # the SDKs would retry in vain


def test_the_usage_endpoint_shows_a_key_its_own_usage_and_the_admin_all(
    budgeted: ProxyServer,
) -> None:
    url = budgeted.url
    assert httpx.post(url + "/api/chat", json=CHAT, headers=B).status_code == 200
    own = httpx.get(url + "/v1/usage", headers=B)
    assert own.status_code == 200
    body = own.json()
    assert body["object"] == "usage"
    assert body["shared"] is False
    (entry,) = body["keys"]
    assert (entry["key_id"], entry["name"]) == (ID_B, None)
    assert entry["windows"]["hour"]["limit"] == 1000
    assert entry["windows"]["hour"]["remaining"] == 1000 - PROMPT - COMPLETION
    assert entry["windows"]["hour"]["reset_in_s"] == 1800
    assert entry["windows"]["day"]["limit"] is None
    assert httpx.get(url + f"/v1/usage?key={ID_B}", headers=B).status_code == 200
    r = httpx.get(url + "/v1/usage?key=team-a", headers=B)
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "permission_error"
    everyone = httpx.get(url + "/v1/usage", headers=ADMIN_H).json()
    assert {(k["key_id"], k["name"]) for k in everyone["keys"]} == {
        (ID_A, "team-a"),
        (ID_B, None),
    }
    (named,) = httpx.get(url + "/v1/usage?key=team-a", headers=ADMIN_H).json()["keys"]
    assert named["windows"]["hour"]["limit"] == 10
    assert httpx.get(url + "/v1/usage?key=nobody", headers=ADMIN_H).status_code == 404
    for text in (own.text, json.dumps(everyone)):
        assert KEY_A not in text
        assert KEY_B not in text
    # the admin key reads usage and nothing else; no key reads nothing
    assert httpx.post(url + "/api/chat", json=CHAT, headers=ADMIN_H).status_code == 401
    assert httpx.get(url + "/api/tags", headers=ADMIN_H).status_code == 401
    assert httpx.get(url + "/v1/usage").status_code == 401
    assert (
        httpx.get(url + "/v1/usage", headers={"Authorization": "Bearer guess"}).status_code == 401
    )


def test_without_budgets_the_usage_endpoint_says_they_are_off(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, proxy_api_keys=KEY_A)) as server:
        assert server.app.state.ctx.budgets is None
        r = httpx.get(server.url + "/v1/usage", headers=A)
    assert r.status_code == 404
    assert "TOKEN_BUDGET" in r.json()["error"]["message"]


def _wait_for(check: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _not_near_midnight() -> None:
    """Wait past a UTC day's end if it is less than 30 s away (the test's day must not turn)."""
    left = window("day", time.time())[1] - time.time()
    if left < 30:
        time.sleep(left + 1)


def _day_total(url: str, headers: dict[str, str]) -> int:
    windows = httpx.get(url + "/v1/usage", headers=headers).json()["keys"][0]["windows"]
    total: int = windows["day"]["total_tokens"]
    return total


def test_two_proxy_processes_share_budgets_through_one_redis(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str
) -> None:
    _not_near_midnight()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.flushdb()
    env = {
        "OPENAI_API_BASE_URL": upstream.url,
        "OPENAI_API_KEY": upstream.api_key,
        "PROXY_API_KEYS": f"{KEY_A},{KEY_B}",
        "TOKEN_BUDGET": "10/day",
        "RATE_LIMIT_STORAGE_URI": redis_url,  # the budgets use the rate limits' Redis
        "USAGE_ADMIN_KEY": ADMIN,
        "MAX_RETRIES": "0",
    }
    one, two = Running(tmp_path, env), Running(tmp_path, env)
    try:
        for _ in range(2):  # 18 tokens through the first process
            assert httpx.post(one.url + "/api/chat", json=CHAT, headers=A).status_code == 200
        # written in the background (the answers did not wait for Redis), read by the other
        _wait_for(lambda: _day_total(two.url, A) == 18)
        usage = httpx.get(two.url + "/v1/usage", headers=ADMIN_H).json()
        assert usage["shared"] is True
        refused = httpx.post(two.url + "/api/chat", json=CHAT, headers=A)
        assert refused.status_code == 429  # the second process knows what the first counted
        assert "18 of 10 tokens this day" in refused.json()["error"]
        assert httpx.post(two.url + "/api/chat", json=CHAT, headers=B).status_code == 200
        _wait_for(lambda: _day_total(one.url, B) == 9)  # and the other way round
        # in Redis: one hash per key and window, named by hashes, expiring with the window
        names = sorted(r.keys(PREFIX + "*"))
        assert len(names) == 8  # two keys x four windows
        assert all(KEY_A not in n and KEY_B not in n for n in names)
        day = [n for n in names if ":day:" in n and caller_of(KEY_A)[4:] in n]
        assert r.hgetall(day[0]) == {"p": "14", "c": "4"}
        assert 0 < r.ttl(day[0]) <= 86400 + 60
    finally:
        out = one.stop() + two.stop()
        r.close()
    assert "Traceback" not in out
    assert KEY_A not in out
    assert ADMIN not in out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_redis_that_is_down_never_fails_a_request(upstream: FakeUpstream) -> None:
    settings = settings_for(
        upstream.url,
        proxy_api_keys=KEY_A,
        token_budget="10/day",
        token_budget_storage_uri=f"redis://127.0.0.1:{_closed_port()}/0",
    )
    with ProxyServer(settings) as server, capture_logs() as logs:
        for _ in range(3):  # over the budget, but nothing can say so: fail open
            started = time.monotonic()
            assert httpx.post(server.url + "/api/chat", json=CHAT, headers=A).status_code == 200
            assert time.monotonic() - started < 2  # bounded waits, never a hang
        r = httpx.get(server.url + "/v1/usage", headers=A)
    assert r.status_code == 503
    assert "Redis" in r.json()["error"]["message"]
    warnings = [e for e in logs if e["event"] == "token_budget_storage_unavailable"]
    assert len(warnings) == 1  # then Redis is left alone for a while: no warning per request
    assert warnings[0]["operation"] == "check"


class RedisServer:
    """A redis-server of the test's own, on a port it keeps across a stop and a start."""

    def __init__(self) -> None:
        self.port = _closed_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [*args, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(self._answers)

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def own_redis_and_a_day_budget() -> tuple[RedisServer, dict[str, Account], float, str, str]:
    """A redis-server of the test's own, started; KEY_A's 100 tokens a day; a time mid-hour;
    KEY_A's caller and its day's counts key in Redis."""
    server = RedisServer()
    server.start()
    accounts = load_accounts("100/day", None, [KEY_A])
    assert accounts is not None
    at = mid_hour()
    caller = caller_of(KEY_A)
    return server, accounts, at, caller, f"{PREFIX}{caller[4:]}:day:{window('day', at)[0]}"


def test_counts_made_while_redis_was_away_reach_it_when_it_is_back(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    del redis_url  # skips the test where redis-server is not installed
    monkeypatch.setattr(budgets_module, "REDIS_REST", 0.3)
    server, accounts, at, caller, key = own_redis_and_a_day_budget()

    async def go() -> None:
        b = TokenBudgets(accounts, server.url, clock=lambda: at)
        try:
            b.spend(caller, 10, 1)
            await _flushed(b)
            direct = redis.Redis(port=server.port)
            assert direct.hgetall(key) == {b"p": b"10", b"c": b"1"}
            server.stop()
            with capture_logs() as logs:
                b.spend(caller, 20, 2)  # Redis is gone: kept here
                await _flushed(b)
                assert await b.check(caller) is None  # unknown: the request passes
            assert [e["event"] for e in logs].count("token_budget_storage_unavailable") == 1
            server.start()
            await asyncio.sleep(0.4)  # the rest is over
            b.spend(caller, 100, 10)  # and with it, what waited
            await _flushed(b)
            # the new redis-server (no persistence) has forgotten the first request; the one
            # counted while it was away, and the last, are there
            counts = redis.Redis(port=server.port).hgetall(key)
            assert counts == {b"p": b"120", b"c": b"12"}
            refused = await b.check(caller)
            assert refused is not None
            assert "132 of 100 tokens this day" in refused.message
        finally:
            await b.close()

    try:
        asyncio.run(go())
    finally:
        server.stop()


async def _flushed(b: TokenBudgets) -> None:
    """Wait for the background write in flight, if any."""
    writer = b._writer
    if writer is not None:
        await asyncio.gather(writer, return_exceptions=True)


def test_a_redis_that_does_not_answer_is_not_waited_for() -> None:
    # A listener that accepts and never answers: a hung Redis, not a refused connection.
    accounts = load_accounts("10/day", None, [KEY_A])
    assert accounts is not None
    caller = caller_of(KEY_A)
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()

        async def go() -> None:
            b = TokenBudgets(accounts, f"redis://127.0.0.1:{hung.getsockname()[1]}/0")
            try:
                with capture_logs() as logs:
                    started = time.monotonic()
                    assert await b.check(caller) is None  # fail open
                    b.spend(caller, 5, 5)
                    await _flushed(b)  # not even tried: Redis rests
                    assert await b.check(caller) is None
                    assert time.monotonic() - started < 2  # one timeout, not one per call
                assert [e["event"] for e in logs] == ["token_budget_storage_unavailable"]
                with pytest.raises(budgets_module.StorageUnavailable):
                    await b.usage([caller])
            finally:
                await b.close()

        asyncio.run(go())
