from __future__ import annotations

import re
from typing import Any

import pytest

from ollama_openai_bridge.errors import BadRequest
from ollama_openai_bridge.translate.keepalive import load_response, parse_keep_alive
from tests.conftest import contract


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        (0, 0.0),
        ("0", 0.0),
        (-1, -1.0),
        ("-1", -1.0),
        (300, 300.0),
        (1.5, 1.5),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("2s", 2.0),
        ("-1m", -60.0),
        ("1.5h", 5400.0),
        ("10us", 1e-5),
        ("-0", 0.0),
        ("+0", 0.0),
        ("2562047h", 2562047 * 3600.0),
        (9_223_372_036, 9_223_372_036.0),
        (-1e300, -1.0),  # negative is forever, however large
        (-(10**400), -1.0),
        (-5, -1.0),
    ],
)
def test_parse(value: Any, seconds: float | None) -> None:
    assert (
        parse_keep_alive(value) == pytest.approx(seconds)
        if seconds is not None
        else parse_keep_alive(value) is None
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("300", 'time: missing unit in duration "300"'),
        ("5x", 'time: invalid duration "5x"'),
        (True, "invalid keep_alive"),
        (False, "invalid keep_alive"),
        # Go's time.Duration holds 2562047h at most: ParseDuration refuses more, and a number
        # of seconds beyond it would overflow (was an OverflowError after the backend call)
        ("99999999999h", 'time: invalid duration "99999999999h"'),
        ("2562048h", 'time: invalid duration "2562048h"'),
        (1e300, "invalid keep_alive: out of range"),
        (10**400, "invalid keep_alive: out of range"),
        (9_223_372_037, "invalid keep_alive: out of range"),
        (float("inf"), "invalid keep_alive: out of range"),
        (float("-inf"), "invalid keep_alive: out of range"),
        (float("nan"), "invalid keep_alive: out of range"),
        # Go's syntax exactly: one sign, no spaces, ASCII digits
        ("+", 'time: invalid duration "+"'),
        ("+-5m", 'time: invalid duration "+-5m"'),
        (" 5m", 'time: invalid duration " 5m"'),
        ("\u0665m", "time: invalid duration"),
    ],
)
def test_invalid(value: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)) as info:
        parse_keep_alive(value)
    assert info.value.param == "keep_alive"


@pytest.mark.parametrize(
    ("name", "generate"),
    [
        ("chat_load_empty_messages.json", False),
        ("chat_unload_keep_alive_0.json", False),
        ("generate_load.json", True),
        ("generate_unload.json", True),
    ],
)
def test_golden_load_unload(name: str, generate: bool) -> None:
    fx = contract(name)
    body = fx["response"]["body"]
    out = load_response(
        fx["request"]["model"],
        parse_keep_alive(fx["request"].get("keep_alive")),
        0,
        generate=generate,
    )
    assert {k: v for k, v in out.items() if k != "created_at"} == {
        k: v for k, v in body.items() if k != "created_at"
    }
