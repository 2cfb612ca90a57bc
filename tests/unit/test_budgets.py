"""Token budgets counted and enforced in memory (budgets.py), with a clock of the test's; the
429 each dialect's clients read (render.py). Redis: tests/integration/test_token_budgets.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from starlette.types import Message
from structlog.testing import capture_logs

from ollama_openai_bridge.access import SCOPE_KEY, AccessRecord
from ollama_openai_bridge.budget_plan import Ticket, caller_of, load_accounts
from ollama_openai_bridge.budgets import BudgetGuard, TokenBudgets
from ollama_openai_bridge.errors import BudgetExhausted, Redactor
from ollama_openai_bridge.exchange import Attempt, Plan, Reply, Route
from ollama_openai_bridge.metrics import Metrics
from ollama_openai_bridge.owner import Owner
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


def _plan(method: str = "POST", body: bytes | None = None) -> Plan:
    route = Route(None, "m", None)  # type: ignore[arg-type]  # what admission never reads
    return Plan(method, (Attempt(route, "/chat/completions", body),))


# 120 characters of content and "user": 31 tokens by the estimate (characters / 4)
BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 120}]})


ANSWER = Reply(200, b"{}", "application/json", {})


class Backend:
    """A stand-in for Backends.execute: counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, plan: Plan, owner: Owner, rec: AccessRecord) -> Reply:
        self.calls += 1
        return ANSWER


def test_admission_refuses_a_spent_key_s_model_calls_before_the_backend() -> None:
    async def go() -> None:
        b = budgets("10/day", Clock())
        backend = Backend()
        execute = b.wrap(backend)
        b.spend(A, 10, 0)
        spent = AccessRecord(caller=A)
        with pytest.raises(BudgetExhausted) as refused:
            await execute(_plan(body=BODY), Owner(), spent)
        assert refused.value.retry_after == 13 * 3600 + 59 * 60 + 30
        assert refused.value.should_retry is False
        assert refused.value.message.startswith("token budget of key '86107931' used up")
        assert backend.calls == 0
        assert spent.ticket is None
        # a GET (a model list relayed) is not a model call; another key has its own budget
        assert await execute(_plan("GET"), Owner(), spent) is ANSWER
        other = AccessRecord(caller=B)
        assert await execute(_plan(body=BODY), Owner(), other) is ANSWER
        assert other.ticket is not None
        assert (other.ticket.estimate, other.ticket.reserved) == (31, 31)
        # no key (a proxy without PROXY_API_KEYS) or the admin: nothing to admit
        assert await execute(_plan(body=BODY), Owner(), AccessRecord(caller="")) is ANSWER
        assert backend.calls == 3
        # the refusal gave its reservation back: the key's count is what it spent
        (report,) = await b.usage([A])
        assert report["windows"]["day"]["total_tokens"] == 10

    asyncio.run(go())


def test_requests_sent_at_once_see_each_other_s_estimates() -> None:
    # issue #20 review, M2: 50 requests at once against a budget of 100 all got in; each now
    # charges its prompt estimate (31) when admitted, so the fourth sees 93 and the fifth 124.
    async def go() -> None:
        b = budgets("100/minute", Clock())
        admitted = refused = 0
        tickets = []
        for _ in range(50):
            try:
                ticket = await b.admit(A, 31)
            except BudgetExhausted:
                refused += 1
            else:
                assert ticket is not None
                tickets.append(ticket)
                admitted += 1
        assert (admitted, refused) == (4, 46)
        for ticket in tickets:  # each used 40 prompt and 10 completion tokens
            ticket.answered(40, 10, 0)
            b.settle(ticket)
        (report,) = await b.usage([A])
        minute = report["windows"]["minute"]
        assert (minute["prompt_tokens"], minute["completion_tokens"]) == (160, 40)
        assert minute["remaining"] == 0

    asyncio.run(go())


def test_settling_replaces_the_estimate_or_gives_it_back() -> None:
    async def go() -> None:
        clock = Clock()
        metrics = Metrics()
        b = budgets("1k/day", clock, metrics)
        reported = await b.admit(A, 31)
        unanswered = await b.admit(A, 31)
        left = await b.admit(A, 31)
        assert reported is not None
        assert unanswered is not None
        assert left is not None
        (report,) = await b.usage([A])
        assert report["windows"]["day"]["prompt_tokens"] == 93  # in flight: their estimates
        reported.answered(7, 2, 999)  # the backend's counts win over characters
        b.settle(reported)
        b.settle(unanswered)  # an error: no answer, nothing counted
        left.answered(None, None, 41)  # a stream left before its usage chunk: 41 characters
        with capture_logs() as logs:
            b.settle(left)
        (estimated,) = [e for e in logs if e["event"] == "token_usage_estimated"]
        assert (estimated["prompt_tokens"], estimated["completion_tokens"]) == (31, 11)
        assert estimated["estimated"] == ["prompt", "completion"]
        (report,) = await b.usage([A])
        day = report["windows"]["day"]
        assert (day["prompt_tokens"], day["completion_tokens"]) == (7 + 31, 2 + 11)
        text = metrics.exposition().decode()
        assert 'ollama_proxy_key_tokens_total{key="86107931",kind="prompt"} 38.0' in text

    asyncio.run(go())


def test_a_request_is_settled_in_the_windows_it_was_admitted_in() -> None:
    async def go() -> None:
        clock = Clock()
        b = budgets("100/minute", clock)
        ticket = await b.admit(A, 31)
        assert ticket is not None
        clock.now += 40  # the minute turned while it ran
        ticket.answered(10, 5, 0)
        b.settle(ticket)
        (report,) = await b.usage([A])
        assert report["windows"]["minute"]["total_tokens"] == 0  # the old minute took it
        assert report["windows"]["day"]["total_tokens"] == 15  # never below zero anywhere

    asyncio.run(go())


async def _call(guard: BudgetGuard, app_ticket: Ticket | None, fail: bool) -> AccessRecord:
    rec = AccessRecord(caller=A)
    scope = {"type": "http", "method": "POST", "path": "/api/chat", SCOPE_KEY: rec}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        rec.ticket = app_ticket  # admitted in the handler
        if fail:
            raise RuntimeError("the handler failed")

    guard.app = app

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    if fail:
        with pytest.raises(RuntimeError):
            await guard(scope, receive, send)
    else:
        await guard(scope, receive, send)
    return rec


def test_the_guard_settles_each_admitted_request_however_it_ends() -> None:
    async def go() -> None:
        b = budgets("1k/day", Clock())
        guard = BudgetGuard(Backend(), b)  # type: ignore[arg-type]  # replaced by _call
        first = await b.admit(A, 31)
        assert first is not None
        first.answered(7, 2, 0)
        assert (await _call(guard, first, fail=False)).ticket is None  # settled, once
        second = await b.admit(A, 31)
        assert second is not None
        await _call(guard, second, fail=True)  # a failure: its estimate given back
        await _call(guard, None, fail=False)  # nothing admitted: nothing to settle
        (report,) = await b.usage([A])
        assert report["windows"]["day"]["total_tokens"] == 9

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
