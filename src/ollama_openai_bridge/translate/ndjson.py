"""NDJSON framing and Ollama timestamps.

Ollama streams one compact JSON object per ``\\n``-terminated line. ollama-python reads lines with
httpx's ``iter_lines()``, which splits like ``str.splitlines`` -- also at U+2028, U+2029 and U+0085
(contract §3.2). orjson writes those code points raw, so we escape them; JSON's mandatory
escaping of control characters already covers ``\\x0b``, ``\\x0c`` and ``\\x1c``-``\\x1e``.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import orjson

# UTF-8 encodings of U+2028, U+2029, U+0085. Each byte sequence can only be that code point.
_LS = b"\xe2\x80\xa8"
_PS = b"\xe2\x80\xa9"
_NEL = b"\xc2\x85"


def escape_line_separators(data: bytes) -> bytes:
    """Escape the code points that line-splitting clients treat as line breaks."""
    if b"\xe2\x80" in data:
        data = data.replace(_LS, b"\\u2028").replace(_PS, b"\\u2029")
    if _NEL in data:
        data = data.replace(_NEL, b"\\u0085")
    return data


def dumps(obj: Any) -> bytes:
    """Compact JSON, safe to embed in an NDJSON line."""
    return escape_line_separators(orjson.dumps(obj))


def line(obj: Any) -> bytes:
    """One NDJSON line, newline included."""
    return escape_line_separators(orjson.dumps(obj)) + b"\n"


@lru_cache(maxsize=4)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def rfc3339(ns: int) -> str:
    """UTC RFC 3339 with nanoseconds, trailing zeros trimmed, as Go's time.Time marshals it."""
    sec, frac = divmod(ns, 1_000_000_000)
    if frac:
        return f"{_second(sec)}.{frac:09d}".rstrip("0") + "Z"
    return _second(sec) + "Z"
