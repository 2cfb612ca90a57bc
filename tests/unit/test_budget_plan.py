"""Token budgets as configured (budget_plan.py): the notation, the windows, the budgets file."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from ollama_openai_bridge.budget_plan import (
    BudgetError,
    Limit,
    bounds,
    caller_of,
    key_id,
    load_accounts,
    parse_budget,
    window,
)
from ollama_openai_bridge.config import ConfigError, Settings, load_settings

KEYS = ["key-team-a", "key-team-b", "key-team-c"]
A, B, C = (hashlib.sha256(k.encode()).hexdigest() for k in KEYS)


@pytest.mark.parametrize(
    ("text", "limits"),
    [
        ("", ()),
        ("  ", ()),
        ("20000/minute", (Limit("minute", 20_000),)),
        ("20k/minute; 1M/day", (Limit("minute", 20_000), Limit("day", 1_000_000))),
        # any order in, the order of the units out; "per" and plurals as the limits notation
        ("5M/month,1.5k per hour", (Limit("hour", 1_500), Limit("month", 5_000_000))),
        ("10 per days", (Limit("day", 10),)),
        ("7/MINUTE", (Limit("minute", 7),)),
    ],
)
def test_budgets_are_read_in_the_limits_notation(text: str, limits: tuple[Limit, ...]) -> None:
    assert parse_budget(text) == limits


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("20000", "not a budget"),
        ("20000/second", "not a budget"),  # tokens are counted per request, not per second
        ("10 per 2 minutes", "not a budget"),  # fixed windows only
        ("-5/day", "not a budget"),
        ("0/day", "at least 1 token"),
        ("0.4/day", "at least 1 token"),
        ("10/day;20/day", "a second budget per day"),
    ],
)
def test_a_bad_budget_is_refused_with_the_notation(text: str, message: str) -> None:
    with pytest.raises(BudgetError, match=message):
        parse_budget(text)


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("unit", "now", "end"),
    [
        ("minute", ts(2026, 11, 23, 10, 0, 59), ts(2026, 11, 23, 10, 1)),
        ("minute", ts(2026, 11, 23, 10, 1), ts(2026, 11, 23, 10, 2)),  # a new window at :00
        ("hour", ts(2026, 11, 23, 10, 59, 59), ts(2026, 11, 23, 11)),
        ("day", ts(2026, 11, 23, 23, 59, 59), ts(2026, 11, 24)),  # midnight UTC
        ("month", ts(2026, 11, 30, 12), ts(2026, 12, 1)),
        ("month", ts(2026, 12, 31, 23, 59), ts(2027, 1, 1)),  # December ends a year
        ("month", ts(2028, 2, 28, 12), ts(2028, 3, 1)),  # a leap year's February: 29 days
    ],
)
def test_windows_are_fixed_utc_periods(unit: str, now: float, end: float) -> None:
    n, ends = window(unit, now)
    assert ends == end
    assert window(unit, end - 0.001)[0] == n  # the same window until its end
    assert window(unit, end)[0] == n + 1  # the next one from it
    same, start, ends = bounds(unit, now)
    assert (same, ends) == (n, end)
    assert start <= now
    assert window(unit, start)[0] == n  # it starts there
    assert window(unit, start - 0.001)[0] == n - 1


def test_keys_are_known_by_hashes_only() -> None:
    assert key_id("key-team-a") == A[:8] == "86107931"
    assert caller_of("key-team-a") == "key:" + A[:16]


def test_budgets_off_without_a_budget_or_a_file() -> None:
    assert load_accounts("", None, KEYS) is None
    with pytest.raises(BudgetError, match="USAGE_ADMIN_KEY reads"):
        load_accounts("", None, KEYS, admin="admin-key-0123456789")


def test_every_key_gets_the_default_budget() -> None:
    accounts = load_accounts("20k/minute", None, KEYS)
    assert accounts is not None
    assert set(accounts) == {caller_of(k) for k in KEYS}
    a = accounts[caller_of("key-team-a")]
    assert (a.key_id, a.name, a.label, a.counter) == (A[:8], None, A[:8], A[:16])
    assert a.limits == (Limit("minute", 20_000),)


@pytest.mark.parametrize(
    ("default", "keys", "admin", "message"),
    [
        ("1k/day", [], "", "set PROXY_API_KEYS"),
        ("1k/day", KEYS, "key-team-b", "must not be one of the inbound keys"),
    ],
)
def test_what_cannot_work_stops_the_start(
    default: str, keys: list[str], admin: str, message: str
) -> None:
    with pytest.raises(BudgetError, match=message):
        load_accounts(default, None, keys, admin=admin)


def test_the_budgets_file_names_keys_and_sets_their_budgets(tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text(
        f'"{A[:8]}": 5k/minute\n'  # a budget alone
        f'"{B[:12]}": {{name: ci-bot, budget: 2M/month}}\n'  # a longer prefix of the hash
        f'"{C[:8].upper()}": {{name: batch, budget: ""}}\n'  # no limit, counted
    )
    accounts = load_accounts("100/minute", path, KEYS)
    assert accounts is not None
    by_key = {a.key_id: (a.name, a.limits) for a in accounts.values()}
    assert by_key == {
        A[:8]: (None, (Limit("minute", 5_000),)),
        B[:8]: ("ci-bot", (Limit("month", 2_000_000),)),
        C[:8]: ("batch", ()),
    }
    path.write_text(f'"{A[:8]}": {{name: alice}}\n')  # without budget: the default
    accounts = load_accounts("100/minute", path, KEYS)
    assert accounts is not None
    assert accounts[caller_of("key-team-a")].limits == (Limit("minute", 100),)
    assert accounts[caller_of("key-team-a")].label == "alice"
    # a file alone turns budgets on: the keys it does not name are counted, not limited
    accounts = load_accounts("", path, KEYS)
    assert accounts is not None
    assert accounts[caller_of("key-team-b")].limits == ()
    path.write_text("{}\n")  # JSON is YAML too
    assert load_accounts("", path, KEYS) is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "must be a mapping"),
        ("{unclosed", "cannot read it"),
        ('"zz12zz12": 1k/day', "not a key id"),
        ('"abc": 1k/day', "not a key id"),
        ("12345678: 1k/day", "write the key id as a string"),  # YAML read it as a number
        ('"00000000": 1k/day', "matches no inbound key"),
        (f'"{A[:8]}": 1k/day\n"{A[:10]}": 2k/day', "a second entry for the key"),
        (f'"{A[:8]}": 10/fortnight', "not a budget"),
        (f'"{A[:8]}": {{budget: 5}}', "'budget' must be text"),
        (f'"{A[:8]}": {{name: a, limit: 5}}', "must be a budget"),
        (f'"{A[:8]}": {{name: "bad name"}}', "'name' must be"),
        (f'"{A[:8]}": {{name: x}}\n"{B[:8]}": {{name: x}}', "is taken by the key"),
        (f'"{A[:8]}": {{name: "{B[:8]}"}}', "is another key's id"),
    ],
)
def test_a_bad_budgets_file_stops_the_start(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    with pytest.raises(BudgetError, match=message) as caught:
        load_accounts("", path, KEYS)
    assert str(path) in str(caught.value)  # the operator sees which file


def test_settings_validate_budgets_at_start(tmp_path: Path) -> None:
    base: dict[str, Any] = {"_env_file": None, "proxy_api_keys": "key-team-a"}
    with pytest.raises(ConfigError, match=r"TOKEN_BUDGET: .*'lots' is not a budget"):
        load_settings(**base, token_budget="lots")
    with pytest.raises(ConfigError, match=r"USAGE_ADMIN_KEY: .*at least 16 characters"):
        load_settings(**base, usage_admin_key="short")
    with pytest.raises(ConfigError, match="set PROXY_API_KEYS"):
        load_settings(_env_file=None, token_budget="1k/day")
    settings = load_settings(_env_file=None, proxy_api_keys="key-team-a", token_budget="1k/day")
    assert settings.budget_uri() == "memory://"
    redis = "redis://:pw-0123456789@redis:6379/0"
    settings = Settings(**base, rate_limit_storage_uri=redis)
    assert settings.budget_uri() == redis  # the rate limits' Redis, unless set apart
    settings = Settings(
        **base,
        usage_admin_key=SecretStr("admin-key-0123456789"),
        token_budget_storage_uri="redis://:other-pw-0123@redis:6379/2",
    )
    assert {"admin-key-0123456789", "other-pw-0123"} <= set(settings.secrets())
