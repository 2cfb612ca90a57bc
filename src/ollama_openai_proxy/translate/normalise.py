"""Backends' answer shapes -> one internal form, for every dialect the proxy answers in.

OpenAI-compatible backends differ from OpenAI's reference in documented ways (issue #16): Gemini
streams parallel tool calls whole, one per chunk, without ``index``; Ollama's own ``/v1`` stamps
every call ``index: 0``; Magistral answers ``content`` as a list of typed parts; reasoning comes
as ``reasoning_content`` (DeepSeek, vLLM, llama.cpp) or ``reasoning`` (OpenRouter, newer vLLM);
Gemini 3 attaches provider data (``extra_content``, its thought signature) to a tool call that
must come back with it. The readers here take each of those shapes and give one form --
:class:`ToolCall`, ``(content, thinking)`` pairs -- to the Ollama stream and non-stream
translators alike (and to any other dialect rendered from a chat completion), so a shape handled
in one path cannot be mishandled in the other.

Every reader is pure: fed decoded JSON, it returns plain values or raises TypeError for a field
of the wrong type (the callers' guard turns that into an error quoting the backend's answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

ARGUMENTS = (str, dict)  # tool-call arguments: a JSON string, or an object as some backends send


def expect(value: Any, kind: type | tuple[type, ...]) -> Any:
    """A field read from a backend answer: ``value`` if it is null or a ``kind``, else TypeError.

    Called where an answer's fields are read, inside the guard that turns the TypeError into
    :func:`~ollama_openai_proxy.errors.malformed` quoting the answer (``StreamTranslator.feed``,
    the handlers' reading guard): a wrong-typed value is refused, never relayed to a client that
    would fail to validate it (ollama-python). Per-chunk code skips the call for the usual null
    or absent field: ``if x is not None and expect(x, kind):``."""
    if value is None or isinstance(value, kind):
        return value
    raise TypeError(f"{type(value).__name__} where {kind} was expected")


# vLLM/DeepSeek/llama.cpp say reasoning_content; OpenRouter and newer vLLM say reasoning.
_REASONING = ("reasoning_content", "reasoning")


def reasoning_of(obj: Mapping[str, Any]) -> str | None:
    """The first non-empty reasoning field of a message or delta (each checked to be a string
    when present)."""
    for key in _REASONING:
        value: str | None = obj.get(key)
        if value is not None and expect(value, str):
            return value
    return None


def content_parts(value: Any) -> tuple[str, str | None]:
    """``(text, thinking)`` of a content given as a list of typed parts, as Mistral's Magistral
    answers (``[{"type": "thinking", "thinking": [{"type": "text", "text": ...}]},
    {"type": "text", "text": ...}]``, docs.mistral.ai reasoning; issue #16). Parts of other
    types (references, ...) carry no text for Ollama. TypeError if it is not such a list."""
    if not isinstance(value, list):
        raise TypeError(f"{type(value).__name__} where content text or parts were expected")
    text: list[str] = []
    thinking: list[str] = []
    for part in value:
        if not isinstance(part, dict):
            raise TypeError("a content part that is not an object")
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            text.append(part["text"])
        elif kind == "thinking":
            inner = part.get("thinking")
            if isinstance(inner, str):
                thinking.append(inner)
            elif isinstance(inner, list):
                thinking.extend(
                    p["text"]
                    for p in inner
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
    return "".join(text), "".join(thinking) or None


class ToolCall(NamedTuple):
    """One whole tool call as the backend made it.

    ``arguments`` is the backend's JSON text (an object some backends send is dumped to text);
    ``extra`` is the provider data attached to the call that must come back with it on the next
    turn (Gemini 3's ``extra_content``: ``{"google": {"thought_signature": ...}}``,
    ai.google.dev/gemini-api/docs/thought-signatures), else None."""

    id: str | None
    name: str
    arguments: str
    extra: dict[str, Any] | None = None


def tool_call_of(call: Mapping[str, Any]) -> ToolCall:
    """A whole call of a non-streamed answer (``message.tool_calls[i]``) as a :class:`ToolCall`.
    TypeError for a field of the wrong type."""
    fn = expect(call.get("function"), dict) or {}
    args = expect(fn.get("arguments"), ARGUMENTS)
    return ToolCall(
        expect(call.get("id"), str) or None,
        expect(fn.get("name"), str) or "",
        "" if args is None else args if isinstance(args, str) else orjson.dumps(args).decode(),
        expect(call.get("extra_content"), dict) or None,
    )


class ToolCallAssembler:
    """Streamed tool-call fragments -> whole :class:`ToolCall` s, in order, each given out as soon
    as it is known to be complete.

    Ollama sends each call on its own line as soon as it is recognised (ollama/ollama#7836) and
    Haystack's streaming accumulator counts one call per line; so a call is given out when a
    later call begins and its own arguments are already a whole JSON value, and the rest when
    the answer ends (:meth:`drain`). Calls are given out in the order they began, never one
    before an earlier one: a backend that interleaves fragments of two calls (OpenAI's format
    allows it) holds the second back until the first is whole.

    Which call a fragment belongs to: by ``index`` when the backend numbers its calls, else by
    ``id`` (see :meth:`_slot`)."""

    __slots__ = ("_calls", "_last", "_next", "_remap", "notes")

    def __init__(self) -> None:
        # index -> [id, name, [argument fragments], extra, given out]
        self._calls: dict[int, list[Any]] = {}
        self._last = -1  # the index of the call begun last
        self._next = 0  # how many calls were given out
        self._remap = False  # indices were reused by another call: they say nothing from now on
        self.notes: list[str] = []

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, fragments: list[Any]) -> list[ToolCall]:
        """Take one delta's ``tool_calls`` list; returns the calls it completed (often none).
        TypeError for a fragment of the wrong shape."""
        began = False
        for position, frag in enumerate(fragments):
            index = frag.get("index")
            fn = expect(frag.get("function"), dict) or {}
            call_id = expect(frag.get("id"), str)
            name = expect(fn.get("name"), str)
            args = expect(fn.get("arguments"), ARGUMENTS)
            extra = frag.get("extra_content")
            if call_id or not isinstance(index, int) or self._remap:
                index = self._slot(index, position, call_id, name)
            slot = self._calls.get(index)
            if slot is None:
                slot = self._calls[index] = [None, "", [], None, False]
                self._last = index
                began = True
            elif slot[4]:
                if args:
                    self.notes.append(
                        f"tool call {slot[1]!r}: arguments streamed after the call was complete"
                        " and sent; ignored"
                    )
                continue
            if call_id:
                slot[0] = call_id
            if name and not slot[1]:
                # Some backends repeat the name on every fragment; the first one is the name.
                slot[1] = name
            if args:
                slot[2].append(args if isinstance(args, str) else orjson.dumps(args).decode())
            if extra is not None and expect(extra, dict):
                slot[3] = extra
        return self._ready() if began and len(self._calls) > 1 else []

    def _ready(self) -> list[ToolCall]:
        out: list[ToolCall] = []
        for index in sorted(self._calls):
            slot = self._calls[index]
            if slot[4]:
                continue
            if index == self._last or not slot[2] or not _complete("".join(slot[2])):
                break  # in order: a later call waits for this one
            out.append(self._give(slot))
        return out

    def _give(self, slot: list[Any]) -> ToolCall:
        slot[4] = True
        self._next += 1
        return ToolCall(slot[0], slot[1], "".join(slot[2]), slot[3])

    def drain(self) -> list[ToolCall]:
        """Every call not given out yet, in order: the answer has ended."""
        return [self._give(slot) for _, slot in sorted(self._calls.items()) if not slot[4]]

    @property
    def given(self) -> int:
        """How many calls were given out: the next call's position in the turn."""
        return self._next

    def state(self) -> dict[int, list[Any]]:
        """The buffered calls, for an error that quotes what could not be translated."""
        return self._calls

    def _slot(self, index: Any, position: int, call_id: str | None, name: str | None) -> int:
        """Which call a fragment belongs to when its ``index`` alone cannot say. Gemini streams
        parallel calls whole, one per chunk, with no ``index``; Ollama's own /v1 stamps every
        call ``index: 0`` (both: issue #16, with the calls' ids distinct). So a fragment with
        an id already seen continues that call, and a new id starts a new call whatever its
        index says; with neither id nor index, a name after a call whose arguments are complete
        JSON starts a new one, and anything else continues the last (a complete call of a
        non-streamed answer: its position)."""
        calls = self._calls
        if call_id:
            for i, slot in calls.items():  # a few calls at most
                if slot[0] == call_id:
                    return i
            if isinstance(index, int) and (index not in calls or calls[index][0] is None):
                return index
            if isinstance(index, int):
                self._remap = True  # the backend reuses indices: they say nothing from now on
            return max(calls, default=-1) + 1
        if isinstance(index, int) and not self._remap:
            return index
        if self._remap:
            return self._last  # an id-less fragment continues the call begun last
        if not calls:
            return position
        last = max(calls)
        if name and calls[last][1] and _complete("".join(calls[last][2])):
            return last + 1
        return last if position == 0 else max(position, last)


def _complete(arguments: str) -> bool:
    """Whether a call's argument text is already a whole JSON value."""
    try:
        orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return False
    return True
