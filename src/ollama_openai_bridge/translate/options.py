"""Ollama ``options`` -> OpenAI sampling parameters (contract §4.8).

OpenAI (and strict compatible servers) answer 400 to unknown parameters, so only options with an
OpenAI equivalent are sent. The others (``top_k``, ``num_ctx``, ``mirostat``...) are dropped and
reported to the caller, which logs a warning once per name; operators can forward chosen ones to
backends that accept them (vLLM, llama.cpp) with ``PASSTHROUGH_OPTIONS``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ollama_openai_bridge.errors import BadRequest

# Same name and meaning on both sides.
_FLOATS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
# Options translated here, and the OpenAI parameter each becomes.
_NATIVE = {
    **{name: name for name in _FLOATS},
    "num_predict": "max_tokens",
    "seed": "seed",
    "stop": "stop",
}
# OpenAI accepts at most four stop sequences.
MAX_STOP = 4


# Ollama's integer options are Go ints (int64); OpenAI's seed is int64 too (openapi.yaml). A JSON
# number outside that range cannot reach a backend (nor be encoded: orjson stops at 64 bits).
INT64 = range(-(2**63), 2**63)


def _number(name: str, value: Any) -> float | int:
    # bool is an int subclass in Python; Ollama's decoder rejects it for numeric options.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f'option "{name}" must be of type number', param=name)
    number: float | int = value
    if isinstance(number, int) and number not in INT64:
        try:
            number = float(number)  # a float64, as Go reads a JSON number
        except OverflowError:
            number = math.inf
    if not math.isfinite(number):
        # JSON 1e400 parses as infinity, which JSON cannot carry on (orjson would send null);
        # Go's decoder refuses it.
        raise BadRequest(f'option "{name}" is out of range', param=name)
    return number


def _integer(name: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f'option "{name}" must be of type integer', param=name)
    if value not in INT64:
        raise BadRequest(
            f'option "{name}" is out of range (a 64-bit integer: at most {INT64.stop - 1})',
            param=name,
        )
    return value


def map_options(
    options: Mapping[str, Any],
    passthrough: Mapping[str, str],
    out: dict[str, Any],
) -> tuple[list[str], list[str]]:
    """Write the OpenAI parameters for ``options`` into ``out``.

    Returns ``(dropped, notes)``: option names not sent upstream, and notes about values that were
    changed (e.g. stop sequences truncated), both for the caller to log.
    """
    dropped: list[str] = []
    notes: list[str] = []
    for name, value in options.items():
        if value is None:
            continue
        if name in passthrough and name in _NATIVE:
            # The operator names the backend's parameter for an option we translate ourselves
            # (num_predict=max_completion_tokens, seed=random_seed): the value as we would send
            # it, under that name.
            native: dict[str, Any] = {}
            _, more = map_options({name: value}, {}, native)
            notes.extend(more)
            if _NATIVE[name] in native:
                out[passthrough[name]] = native[_NATIVE[name]]
            continue
        if name in _FLOATS:
            out[name] = _number(name, value)
        elif name == "num_predict":
            # -1 means "until done" and -2 "fill the context": no OpenAI equivalent but the default.
            n = _integer(name, value)
            if n > 0:
                out["max_tokens"] = n
        elif name == "seed":
            # Ollama's default seed is -1, meaning random.
            seed = _integer(name, value)
            if seed >= 0:
                out["seed"] = seed
        elif name == "stop":
            # Ollama wants a list; n8n and some scripts send a bare string, accept it.
            stops = [value] if isinstance(value, str) else value
            if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
                raise BadRequest('option "stop" must be a list of strings', param="stop")
            if len(stops) > MAX_STOP:
                notes.append(f"stop: {len(stops)} sequences, OpenAI accepts {MAX_STOP}; kept first")
                stops = stops[:MAX_STOP]
            if stops:
                out["stop"] = stops
        elif name in passthrough:
            out[passthrough[name]] = value
        else:
            dropped.append(name)
    return dropped, notes
