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

import contextlib
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from ollama_openai_bridge.translate.normalise import ToolCall


class Recalled(NamedTuple):
    """What was kept of one call: where it was made (``upstream`` name and backend ``model``:
    data is given back only to the backend that made it), its ``id`` and provider data."""

    upstream: str
    model: str
    id: str | None
    extra: dict[str, Any] | None


# Arguments nested deeper than this are not canonicalised (a hostile history must not cost a
# deep recursion; orjson itself refuses more than 255 levels).
MAX_DEPTH = 64


def _canonical(value: Any, depth: int = 0) -> Any:
    # A JS client re-encodes 1.0 as 1: integral floats compare as integers.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if depth >= MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: _canonical(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v, depth + 1) for v in value]
    return value


def _marker(name: str, arguments: Any) -> bytes | None:
    """The canonical JSON of a call (name and arguments as object or JSON text: keys sorted,
    integral floats as integers); None for arguments that cannot be encoded (too deep,
    non-string keys, integers beyond 64 bits): such a call is not kept."""
    if isinstance(arguments, str):  # some clients send the JSON text back
        with contextlib.suppress(orjson.JSONDecodeError):
            arguments = orjson.loads(arguments)
    try:
        return orjson.dumps([name, _canonical(arguments)], option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson's JSONEncodeError
        return None


def call_key(caller: str, name: str, arguments: Any, nth: int) -> str | None:
    """The store key of a call: ``caller`` (who asked: the hash of the inbound key, "" without
    keys, so one client never gets another's data), the function ``name``, its ``arguments``
    and ``nth``, its place among calls of the same name and arguments in one turn; 32 hex
    digits, or None for arguments that cannot be encoded (:func:`_marker`)."""
    marker = _marker(name, arguments)
    return None if marker is None else _key(caller, marker, nth)


def _key(caller: str, marker: bytes, nth: int) -> str:
    digest = hashlib.sha256(caller.encode("utf-8", "replace"))
    digest.update(b"\0" + marker + b"\0" + str(nth).encode())
    return digest.hexdigest()[:32]


Seen = dict[bytes, int]  # how many calls of each canonical (name, arguments) the turn had


def _nth(seen: Seen, marker: bytes) -> int:
    n = seen.get(marker, 0)
    seen[marker] = n + 1
    return n


def answer_keys(
    made: Iterable[tuple[ToolCall, dict[str, Any]]], caller: str, seen: Seen | None = None
) -> list[tuple[str, ToolCall]]:
    """The keys of an answer's calls worth keeping (a backend id or provider data), each with
    its call. ``made``: ``(call, its Ollama shape)`` in the turn's order, as sent to the client
    (whose ``arguments`` object is what the client will replay); ``seen``: the calls the turn
    had before this answer (:func:`history_keys`), so that a call repeated in a later step of
    the turn gets a key of its own."""
    seen = dict(seen or {})
    out = []
    for call, ollama in made:
        marker = _marker(call.name, ollama["function"]["arguments"])
        if marker is None:
            continue
        nth = _nth(seen, marker)
        if call.id or call.extra:
            out.append((_key(caller, marker, nth), call))
    return out


def current_turn(messages: Sequence[Any]) -> int:
    """The index of the first message after the last user message: the calls of the turn in
    progress, the only ones Gemini checks for signatures ("current turn")."""
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if isinstance(msg, dict) and str(msg.get("role", "")).lower() == "user":
            return i + 1
    return 0


def history_keys(
    messages: Sequence[Any], caller: str
) -> tuple[list[tuple[tuple[int, int], str]], Seen]:
    """The keys of the assistant tool calls of the turn in progress, as ``((message index, call
    index), key)`` (empty for a history without such calls: the usual request, no lookup), and
    how many calls of each kind the turn had (for :func:`answer_keys`). A call repeated in a
    later step of the turn is the next of its kind: each step's call has its own key."""
    out: list[tuple[tuple[int, int], str]] = []
    seen: Seen = {}
    for i in range(current_turn(messages), len(messages)):
        msg = messages[i]
        calls = msg.get("tool_calls") if str(msg.get("role", "")).lower() == "assistant" else None
        if not calls:
            continue
        for j, tc in enumerate(calls):
            fn = tc.get("function") or {}
            marker = _marker(fn.get("name") or "", fn.get("arguments"))
            if marker is not None:
                out.append(((i, j), _key(caller, marker, _nth(seen, marker))))
    return out, seen
