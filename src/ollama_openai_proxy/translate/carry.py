"""What a backend needs back on the next turn, when the Ollama client drops it (issue #16).

Ollama clients send their history back without what they cannot hold: ollama-python's Message
model drops a tool call's ``id`` (contract §5.1), and no Ollama client has a place for provider
data such as Gemini 3's thought signature, which "must" come back with the call on the next turn
of a tool loop or the request fails with 400 "Function call is missing a thought_signature"
(ai.google.dev/gemini-api/docs/thought-signatures; the OpenAI-compatible endpoint carries it as
the call's ``extra_content``). The proxy keeps both per call (``tool_call_store.py``) under a key
the replayed call can be recognised by even without its id: the caller, the function name, its
canonical arguments and its place among identical calls of the same turn.

These are the pure halves: the keys of an answer's calls and of a history's calls, and the
record kept for each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from ollama_openai_proxy.translate.normalise import ToolCall


class Recalled(NamedTuple):
    """What was kept of one call: where it was made (``upstream`` name and backend ``model``:
    data is given back only to the backend that made it), its ``id`` and provider data."""

    upstream: str
    model: str
    id: str | None
    extra: dict[str, Any] | None


def _canonical(value: Any) -> Any:
    # A JS client re-encodes 1.0 as 1: integral floats compare as integers.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _arguments(value: Any) -> Any:
    if isinstance(value, str):  # some clients send the JSON text back
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return _canonical(value)


def call_key(caller: str, name: str, arguments: Any, nth: int) -> str:
    """The store key of a call: ``caller`` (who asked: the hash of the inbound key, "" without
    keys, so one client never gets another's data), the function ``name``, its ``arguments``
    (object or JSON text; keys sorted, integral floats as integers) and ``nth``, its place among
    calls of the same name and arguments in one turn. 32 hex digits."""
    try:
        blob = orjson.dumps([caller, name, _arguments(arguments), nth], option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson refuses non-string keys and integers beyond 64 bits
        blob = repr([caller, name, arguments, nth]).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _nth(seen: dict[tuple[str, str], int], name: str, arguments: Any) -> int:
    try:
        marker = orjson.dumps(_arguments(arguments), option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        marker = repr(arguments)
    n = seen.get((name, marker), 0)
    seen[(name, marker)] = n + 1
    return n


def answer_keys(
    made: Iterable[tuple[ToolCall, dict[str, Any]]], caller: str
) -> list[tuple[str, ToolCall]]:
    """The keys of an answer's calls worth keeping (a backend id or provider data), each with
    its call. ``made``: ``(call, its Ollama shape)`` in the turn's order, as sent to the client
    (whose ``arguments`` object is what the client will replay)."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for call, ollama in made:
        args = ollama["function"]["arguments"]
        nth = _nth(seen, call.name, args)
        if call.id or call.extra:
            out.append((call_key(caller, call.name, args, nth), call))
    return out


def current_turn(messages: Sequence[Any]) -> int:
    """The index of the first message after the last user message: the calls of the turn in
    progress, the only ones Gemini checks for signatures ("current turn")."""
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if isinstance(msg, dict) and str(msg.get("role", "")).lower() == "user":
            return i + 1
    return 0


def history_keys(messages: Sequence[Any], caller: str) -> list[tuple[tuple[int, int], str]]:
    """The keys of the assistant tool calls of the turn in progress, as ``((message index, call
    index), key)``; empty for a history without such calls (the usual request: no lookup)."""
    out: list[tuple[tuple[int, int], str]] = []
    for i in range(current_turn(messages), len(messages)):
        msg = messages[i]
        calls = msg.get("tool_calls") if str(msg.get("role", "")).lower() == "assistant" else None
        if not calls:
            continue
        seen: dict[tuple[str, str], int] = {}
        for j, tc in enumerate(calls):
            fn = tc.get("function") or {}
            name, args = fn.get("name") or "", fn.get("arguments")
            out.append(((i, j), call_key(caller, name, args, _nth(seen, name, args))))
    return out
