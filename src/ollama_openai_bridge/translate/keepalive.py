"""``keep_alive`` values (contract §1.4) and the load/unload answers they select (§4.7).

A JSON number means seconds; a string is a Go duration (``"5m"``, ``"1h30m"``, ``"-1"``, ``"0"``).
A unit-less numeric string other than 0/-1 is rejected by Ollama (``time: missing unit in
duration "300"``), and so here.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ollama_openai_bridge.errors import BadRequest, echo
from ollama_openai_bridge.translate.ndjson import rfc3339

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[-+]?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)")

DEFAULT_KEEP_ALIVE = 300.0
# Go's time.Duration is int64 nanoseconds: 2562047h47m16.854775807s at most. Ollama's
# time.ParseDuration refuses a longer duration string; a longer number of seconds overflows the
# conversion (api/types.go Duration.UnmarshalJSON), so it is refused here too.
MAX_KEEP_ALIVE_S = 9_223_372_036
_MAX_NS = 2**63 - 1


def parse_keep_alive(value: Any) -> float | None:
    """``keep_alive`` (contract §1.4) in seconds, negative meaning forever; ``None`` when unset.

    A number is seconds: negative is forever (however large), more than
    :data:`MAX_KEEP_ALIVE_S` or not finite is a 400. A string is a Go duration; one that does not
    fit in a Go ``time.Duration`` is a 400 in Go's words. Source: ollama api/types.go
    (Duration.UnmarshalJSON) and Go's time.ParseDuration. Raises BadRequest naming the field.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequest(f"invalid keep_alive: {value!r}", param="keep_alive")
    if isinstance(value, int | float):
        if value < 0 and (isinstance(value, int) or math.isfinite(value)):
            return -1.0  # forever, however long (Ollama: math.MaxInt64)
        if not 0 <= value <= MAX_KEEP_ALIVE_S:  # also NaN and the infinities (a JSON 1e400)
            raise BadRequest(
                "invalid keep_alive: out of range (at most "
                f"{MAX_KEEP_ALIVE_S} seconds, a Go time.Duration)",
                param="keep_alive",
            )
        return float(value)
    text = str(value)
    if text in ("", "-1"):  # unset; and Ollama's documented "forever"
        return None if not text else -1.0
    # Go's time.ParseDuration: one optional sign, then "0" or number-unit pairs, nothing else.
    sign = -1.0 if text[0] == "-" else 1.0
    body = text[1:] if text[0] in "+-" else text
    if body == "0":
        return 0.0
    if not body:
        raise BadRequest(f'time: invalid duration "{echo(text)}"', param="keep_alive")
    pos, total = 0, 0.0
    while pos < len(body):
        m = _PART.match(body, pos)
        if m is None:
            if _NUMBER.fullmatch(text):
                raise BadRequest(
                    f'time: missing unit in duration "{echo(text)}"', param="keep_alive"
                )
            raise BadRequest(f'time: invalid duration "{echo(text)}"', param="keep_alive")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if total * 1e9 > _MAX_NS:
        raise BadRequest(f'time: invalid duration "{echo(text)}"', param="keep_alive")
    return sign * total


def load_response(
    model: str, keep_alive: float | None, now_ns: int, *, generate: bool
) -> dict[str, Any]:
    """Ollama's answer to a chat without messages / a generate without prompt: no inference."""
    reason = "unload" if keep_alive == 0 else "load"
    out: dict[str, Any] = {"model": model, "created_at": rfc3339(now_ns)}
    if generate:
        out["response"] = ""
    else:
        out["message"] = {"role": "assistant", "content": ""}
    out["done"] = True
    out["done_reason"] = reason
    return out
