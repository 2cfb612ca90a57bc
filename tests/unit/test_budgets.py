"""Token budgets counted and enforced in memory (budgets.py), with a clock of the test's; the
429 each dialect's clients read (render.py). Redis: tests/integration/test_token_budgets.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from starlette.types import Message

from ollama_openai_bridge.access import SCOPE_KEY, AccessRecord
from ollama_openai_bridge.budget_plan import caller_of, load_accounts
from ollama_openai_bridge.budgets import SPENDING, BudgetGuard, TokenBudgets
from ollama_openai_bridge.errors import BudgetExhausted, Redactor
from ollama_openai_bridge.metrics import Metrics
from ollama_openai_bridge.render import Dialect, Renderer

KEYS = ["key-team-a", "key-team-b"]
A, B = (caller_of(k) for k in KEYS)
# 10:00:30 UTC on the 23rd: 30 s left in the minute, 13.5 h in the day, 7.5 days in the month
NOON = datetime(2026, 11, 23, 10, 0, 30, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def budgets(default: str, clock: Clock, metrics: Metrics | None = None) -> TokenBudgets:
    accounts = load_accounts(default, None, KEYS)
    assert accounts is not None
    return TokenBudgets(accounts, "memory://", metrics, clock)


def test_a_key_is_refused_once_its_window_is_spent_until_the_window_ends() -> None:
    async def go() -> None:
        clock = Clock()
        b = budgets("10/minute", clock)
        assert b.shared is False
        assert await b.check(A) is None
        b.spend(A, 7, 2)  # 9: one token left
        assert await b.check(A) is None
        b.spend(A, 7, 2)  # 18: the request in flight overshoots, the next one is refused
        refused = await b.check(A)
        assert isinstance(refused, BudgetExhausted)
        assert refused.retry_after == 30  # seconds to 10:01:00 UTC
        assert refused.code == "rate_limit_exceeded"
        assert refused.openai_type == "rate_limit_error"
        assert refused.should_retry is None  # 30 s: the SDKs wait by Retry-After themselves
        assert "'86107931'" in refused.message  # the key id, never the key
        assert "key-team-a" not in refused.message
        assert "18 of 10 tokens this minute" in refused.message
        assert await b.check(B) is None  # another key's budget is its own
        clock.now += 30  # 10:01:00: a new window, a whole budget
        assert await b.check(A) is None

    asyncio.run(go())


def test_a_day_or_month_refusal_is_a_quota_not_to_retry_soon() -> None:
    async def go() -> None:
        clock = Clock()
        b = budgets("100/minute;10/day;1000/month", clock)
        b.spend(A, 10, 0)
        refused = await b.check(A)
        assert isinstance(refused, BudgetExhausted)
        assert refused.retry_after == 13 * 3600 + 59 * 60 + 30  # to midnight UTC
        assert (refused.code, refused.openai_type) == ("insufficient_quota", "insufficient_quota")
        assert refused.should_retry is False
        b.spend(A, 0, 1000)  # the month spent too: the window that frees last decides
        refused = await b.check(A)
        assert refused is not None
        end = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
        assert refused.retry_after == int(end - NOON)
        assert "this month" in refused.message

    asyncio.run(go())


def test_spending_counts_every_window_and_the_usage_report_says_so() -> None:
    async def go() -> None:
        clock = Clock()
        metrics = Metrics()
        b = budgets("20/minute;1k/day", clock, metrics)
        b.spend(A, 7, 2)
        b.spend(A, None, 5)  # a backend that reports only one of the two
        b.spend(A, 0, 0)  # nothing: not counted
        b.spend("key:unknown", 100, 100)  # not a configured key (a relay without keys)
        clock.now += 60  # the next minute: the minute starts over, the day goes on
        b.spend(A, 1, 1)
        (report,) = await b.usage([A])
        assert report["key_id"] == "86107931"
        assert report["name"] is None
        windows = report["windows"]
        assert list(windows) == ["minute", "hour", "day", "month"]
        assert windows["minute"] == {
            "limit": 20,
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "total_tokens": 2,
            "remaining": 18,
            "resets_at": "2026-11-23T10:02:00Z",
            "reset_in_s": 30,
        }
        assert windows["day"]["total_tokens"] == 16
        assert windows["day"]["remaining"] == 984
        assert windows["hour"]["limit"] is None  # counted, not limited
        assert windows["hour"]["remaining"] is None
        assert windows["month"]["resets_at"] == "2026-12-01T00:00:00Z"
        text = metrics.exposition().decode()
        assert 'ollama_proxy_key_tokens_total{key="86107931",kind="prompt"} 8.0' in text
        assert 'ollama_proxy_key_tokens_total{key="86107931",kind="completion"} 8.0' in text
        assert "unknown" not in text

    asyncio.run(go())


def test_refusals_are_counted_by_key_and_window() -> None:
    async def go() -> None:
        metrics = Metrics()
        b = budgets("5/hour", Clock(), metrics)
        b.spend(B, 5, 0)
        assert await b.check(B) is not None
        assert await b.check(B) is not None
        text = metrics.exposition().decode()
        assert 'ollama_proxy_budget_refusals_total{key="3abd0dff",window="hour"} 2.0' in text

    asyncio.run(go())


def test_find_picks_keys_by_id_prefix_or_name() -> None:
    b = budgets("1k/day", Clock())
    assert set(b.find(None)) == {A, B}
    assert b.find("86107931") == [A]
    assert b.find("86107931".upper()) == [A]
    assert b.find("8610") == []  # shorter than a key id: no guessing by prefix
    assert b.find("nobody") == []


async def _call(guard: BudgetGuard, method: str, path: str, caller: str) -> tuple[int, Any]:
    sent: list[Message] = []
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [],
        SCOPE_KEY: AccessRecord(caller=caller),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await guard(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], (dict(start["headers"]), body)


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})


def test_the_guard_refuses_only_model_calls_of_a_spent_key() -> None:
    async def go() -> None:
        b = budgets("10/day", Clock())
        guard = BudgetGuard(_ok, b, Renderer(Redactor()))
        b.spend(A, 10, 0)
        assert {"/api/chat", "/v1/chat/completions", "/v1/messages"} <= SPENDING
        for path in sorted(SPENDING):
            status, _ = await _call(guard, "POST", path, A)
            assert status == 429, path
            assert (await _call(guard, "POST", path, B))[0] == 200, path
        # listing and showing models, and reading one's usage, stay open
        for method, path in [("GET", "/api/tags"), ("POST", "/api/show"), ("GET", "/v1/usage")]:
            assert (await _call(guard, method, path, A))[0] == 200, path
        status, (headers, body) = await _call(guard, "POST", "/api/chat", A)
        assert headers[b"retry-after"] == str(13 * 3600 + 59 * 60 + 30).encode()
        assert headers[b"x-should-retry"] == b"false"
        assert orjson.loads(body)["error"].startswith("token budget of key '86107931' used up")

    asyncio.run(go())


@pytest.mark.parametrize(
    ("dialect", "body"),
    [
        (Dialect.OLLAMA, {"error": "spent"}),
        (
            Dialect.OPENAI,
            {
                "error": {
                    "message": "spent",
                    "type": "insufficient_quota",
                    "param": None,
                    "code": "insufficient_quota",
                }
            },
        ),
        (
            Dialect.ANTHROPIC,
            {"type": "error", "error": {"type": "rate_limit_error", "message": "spent"}},
        ),
    ],
)
def test_a_refusal_in_each_dialect(dialect: Dialect, body: dict[str, Any]) -> None:
    response = Renderer(Redactor()).response(BudgetExhausted("spent", 3600, quota=True), dialect)
    assert response.status_code == 429
    assert orjson.loads(response.body) == body
    assert response.headers["retry-after"] == "3600"
    assert response.headers["x-should-retry"] == "false"
    soon = Renderer(Redactor()).response(BudgetExhausted("spent", 60, quota=False), dialect)
    assert "x-should-retry" not in soon.headers  # within a minute: let the SDK wait and retry
