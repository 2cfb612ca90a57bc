from __future__ import annotations

import json

import pytest

from ollama_openai_bridge.translate.ndjson import dumps, escape_line_separators, line, rfc3339


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\u0085"])
def test_line_separators_are_escaped(char: str) -> None:
    out = line({"content": f"a{char}b"})
    # httpx iter_lines (ollama-python) splits like str.splitlines: the line must survive it.
    text = out.decode()
    assert text.splitlines() == [text[:-1]]
    assert json.loads(text)["content"] == f"a{char}b"


def test_control_characters_are_escaped_by_json() -> None:
    text = line({"c": "\x0b\x0c\x1c\x1d\x1e\n"}).decode()
    assert len(text.splitlines()) == 1
    assert json.loads(text)["c"] == "\x0b\x0c\x1c\x1d\x1e\n"


def test_other_multibyte_text_untouched() -> None:
    # U+2020 (dagger) shares the E2 80 lead bytes with U+2028 but must stay raw.
    assert dumps("†日本é") == '"†日本é"'.encode()
    assert escape_line_separators(b"plain") == b"plain"


def test_line_is_compact_and_newline_terminated() -> None:
    assert line({"a": 1, "b": [1, 2]}) == b'{"a":1,"b":[1,2]}\n'


@pytest.mark.parametrize(
    ("ns", "expected"),
    [
        (1_767_225_600_000_000_000, "2026-01-01T00:00:00Z"),
        (1_767_225_600_500_000_000, "2026-01-01T00:00:00.5Z"),
        (1_767_225_600_184_789_000, "2026-01-01T00:00:00.184789Z"),
        (1_767_225_600_000_000_001, "2026-01-01T00:00:00.000000001Z"),
    ],
)
def test_rfc3339_nanoseconds_trimmed_like_go(ns: int, expected: str) -> None:
    assert rfc3339(ns) == expected
