"""AuthThrottle: failed authentications per client address (security.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from ollama_openai_bridge.errors import RateLimited
from ollama_openai_bridge.security import AuthThrottle

T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_the_limit_refuses_that_address_only_and_before_its_key_is_compared() -> None:
    async def scenario() -> tuple[list[RateLimited | None], RateLimited | None, RateLimited | None]:
        throttle = AuthThrottle("3/minute", "memory://")
        failures = [await throttle.failed("10.0.0.1") for _ in range(4)]  # no check between
        return failures, await throttle.check("10.0.0.1"), await throttle.check("10.0.0.2")

    failures, same, other = run(scenario())
    assert failures[:3] == [None, None, None]
    assert isinstance(failures[3], RateLimited)  # the fourth failure is one too many
    assert isinstance(same, RateLimited)
    assert same.status == 429
    assert 1 <= same.retry_after <= 60
    assert str(same).startswith("too many failed authentication attempts from this address")
    assert "3 per 1 minute" in str(same)
    assert other is None


def test_addresses_that_never_failed_cost_no_storage_call() -> None:
    class Exploding:
        async def test(self, *_: object) -> bool:
            raise AssertionError("looked up")

        async def hit(self, *_: object) -> bool:
            raise AssertionError("counted")

    throttle = AuthThrottle("3/minute", "memory://")
    throttle.limiter = Exploding()  # type: ignore[assignment]
    assert run(throttle.check("10.0.0.9")) is None


def test_a_suspect_is_forgotten_once_its_window_has_passed() -> None:
    clock = Clock()
    throttle = AuthThrottle("3/minute", "memory://", clock=clock)
    run(throttle.failed("10.0.0.1"))
    assert "10.0.0.1" in throttle._suspects
    clock.now += 61
    assert run(throttle.check("10.0.0.1")) is None
    assert "10.0.0.1" not in throttle._suspects


def test_the_suspect_list_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AuthThrottle, "MAX_SUSPECTS", 50)
    clock = Clock()
    throttle = AuthThrottle("1000/minute", "memory://", clock=clock)

    async def many() -> None:
        for i in range(40):
            await throttle.failed(f"10.0.0.{i}")
        clock.now += 120  # those 40 are stale now
        for i in range(200):
            await throttle.failed(f"10.1.{i // 250}.{i % 250}")

    run(many())
    assert len(throttle._suspects) <= 50
    assert "10.1.0.199" in throttle._suspects  # the newest are kept
    assert "10.0.0.0" not in throttle._suspects


def test_an_invalid_limit_is_refused_at_start() -> None:
    from ollama_openai_bridge.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="AUTH_FAILURE_LIMIT: Value error, not one limit"):
        load_settings(
            openai_api_base_url="http://127.0.0.1:1/v1",
            openai_api_key="k",
            auth_failure_limit="ten a minute",
            _env_file=None,
        )
