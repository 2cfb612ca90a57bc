"""``keep_alive`` values (contract §1.4) and the load/unload answers they select (§4.7).

A JSON number means seconds; a string is a Go duration (``"5m"``, ``"1h30m"``, ``"-1"``, ``"0"``).
A unit-less numeric string other than 0/-1 is rejected by Ollama (``time: missing unit in
duration "300"``), and so here.
"""

from __future__ import annotations

import re
from typing import Any

from ollama_openai_proxy.errors import BadRequest
from ollama_openai_proxy.translate.ndjson import rfc3339

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
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[-+]?(\d+(?:\.\d*)?|\.\d+)")

DEFAULT_KEEP_ALIVE = 300.0


def parse_keep_alive(value: Any) -> float | None:
    """Seconds, negative meaning forever; ``None`` when unset."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequest(f"invalid keep_alive: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text in ("", "0", "-1"):
        return {"": None, "0": 0.0, "-1": -1.0}[text]
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    pos, total = 0, 0.0
    while pos < len(body):
        m = _PART.match(body, pos)
        if m is None:
            if _NUMBER.fullmatch(text):
                raise BadRequest(f'time: missing unit in duration "{text}"')
            raise BadRequest(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
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
