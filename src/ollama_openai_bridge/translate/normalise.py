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

from ollama_openai_bridge.errors import malformed
from ollama_openai_bridge.upstream_errors import not_a_completion

ARGUMENTS = (str, dict)  # tool-call arguments: a JSON string, or an object as some backends send


def expect(value: Any, kind: type | tuple[type, ...]) -> Any:
    """A field read from a backend answer: ``value`` if it is null or a ``kind``, else TypeError.

    Called where an answer's fields are read, inside the guard that turns the TypeError into
    :func:`~ollama_openai_bridge.errors.malformed` quoting the answer (``StreamTranslator.feed``,
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


def completion_of(resp: Any, model: str) -> dict[str, Any]:
    """A backend's JSON answer that should be a completion (a whole answer, or one that came
    instead of a stream), checked to have choices: otherwise the error it carries in the
    backend's words (Gemini's list-wrapped error, ``{"error"}``, vLLM's ``{"object":
    "error"}``, ``{"message"}``), or malformed quoting it; never an empty answer that looks
    complete (issue #16). Raises an UpstreamError."""
    if isinstance(resp, list) and resp and isinstance(resp[0], dict) and "error" in resp[0]:
        raise not_a_completion(resp[0], model)
    if not isinstance(resp, dict):
        raise malformed("an answer that is not a completion", resp)
    if not resp.get("choices"):
        raise not_a_completion(resp, model)
    return resp


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
        # Provider data the client never sees: a wrong type loses it, not the answer.
        extra if isinstance(extra := call.get("extra_content"), dict) and extra else None,
    )


def tool_calls_of(calls: list[Any] | None) -> list[ToolCall]:
    """The whole calls of a non-streamed answer (``message.tool_calls``), each id used once:
    DeepSeek and GLM give parallel calls one id (HKUDS/nanobot#3943), and a client answering
    two calls with one id has the backend refuse the next turn; a repeated id is left out, for
    the renderer to make one. TypeError for a field of the wrong type."""
    out = [tool_call_of(call) for call in calls or ()]
    seen: set[str] = set()
    for i, call in enumerate(out):
        if call.id is not None:
            if call.id in seen:
                out[i] = call._replace(id=None)
            seen.add(call.id)
    return out


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
    ``id`` (see :meth:`_slot`). Linear in the number of fragments: each call is looked up by
    index or id in a dict and checked for completeness at most once per later call begun."""

    __slots__ = (
        "_calls",
        "_given_ids",
        "_ids",
        "_last",
        "_next",
        "_order",
        "_remap",
        "_top",
        "notes",
    )

    def __init__(self) -> None:
        # key (the backend's index, or a number of ours) -> [id, name, [argument fragments],
        # extra, given out]
        self._calls: dict[int, list[Any]] = {}
        self._order: list[list[Any]] = []  # the calls in the order they began
        self._ids: dict[str, int] = {}  # a call's id -> its key
        self._last = -1  # the key of the call begun last
        self._next = 0  # how many calls were given out: _order[:_next]
        self._remap = False  # indices were reused by another call: they say nothing from now on
        self._top = -1  # the highest key in use
        # ids given out: each once (tool_calls_of). Made with the first: an empty set is 216 B
        # that most streams, without tool calls, would hold to their end (issue #18).
        self._given_ids: set[str] | None = None
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
            key = self._slot(index, position, call_id, name, args)
            slot = self._calls.get(key)
            if slot is None:
                slot = self._calls[key] = [None, "", [], None, False]
                self._order.append(slot)
                self._last = key
                self._top = max(self._top, key)
                began = True
            elif slot[4]:
                if args:
                    self.notes.append(
                        f"tool call {slot[1]!r}: arguments streamed after the call was complete"
                        " and sent; ignored"
                    )
                continue
            if call_id and slot[0] is None:
                # The first id is the call's: Poolside sends another one on later fragments of
                # the same call (poolsideai/pool#9).
                slot[0] = call_id
                self._ids.setdefault(call_id, key)
            if name and not slot[1]:
                # Some backends repeat the name on every fragment; the first one is the name.
                slot[1] = name
            if args:
                slot[2].append(args if isinstance(args, str) else orjson.dumps(args).decode())
            extra = frag.get("extra_content")
            if isinstance(extra, dict):
                slot[3] = extra
            elif extra is not None:
                self.notes.append(f"tool call {slot[1]!r}: extra_content is not an object; ignored")
        return self._ready() if began and len(self._order) > 1 else []

    def _ready(self) -> list[ToolCall]:
        out: list[ToolCall] = []
        last = self._calls[self._last]
        order = self._order
        while self._next < len(order):
            slot = order[self._next]
            if slot is last or not _whole(slot):
                break  # in order: a later call waits for this one
            out.append(self._give(slot))
        return out

    def _give(self, slot: list[Any]) -> ToolCall:
        slot[4] = True
        self._next += 1
        call_id = slot[0]
        if call_id is not None:
            given = self._given_ids
            if given is None:
                self._given_ids = {call_id}
            elif call_id in given:
                call_id = None  # a repeated id (DeepSeek, GLM): the renderer makes another
            else:
                given.add(call_id)
        return ToolCall(call_id, slot[1], "".join(slot[2]), slot[3])

    def drain(self) -> list[ToolCall]:
        """Every call not given out yet, in order: the answer has ended."""
        rest = self._order[self._next :]
        return [self._give(slot) for slot in rest]

    @property
    def given(self) -> int:
        """How many calls were given out: the next call's position in the turn."""
        return self._next

    def state(self) -> dict[int, list[Any]]:
        """The buffered calls, for an error that quotes what could not be translated."""
        return self._calls

    def _new_key(self) -> int:
        return self._top + 1

    def _slot(
        self, index: Any, position: int, call_id: str | None, name: str | None, args: Any
    ) -> int:
        """The key of the call a fragment belongs to.

        * A backend that numbers its calls is believed, also when it gives two calls one id
          (DeepSeek and GLM reuse ids across parallel calls: HKUDS/nanobot#3943) -- unless the
          fragment plainly starts another call on an index already taken (:func:`_starts_new`):
          Ollama's own /v1 stamps every call ``index: 0``, each with its own id (issue #16).
          From then on indices say nothing, and ids decide.
        * Without a usable index (Gemini streams parallel calls whole, one per chunk, with no
          ``index``): an id already seen continues its call, a new id starts one; with neither,
          a name after a call whose arguments are complete JSON starts a new call, and anything
          else continues the last (a complete call of a non-streamed answer: its position)."""
        calls = self._calls
        if isinstance(index, int) and not self._remap:
            slot = calls.get(index)
            if slot is None or not _starts_new(slot, call_id, name, args):
                return index
            self._remap = True
            return self._new_key()
        if call_id:
            known = self._ids.get(call_id)
            if known is not None:
                return known
            return self._new_key() if calls else position
        if not calls:
            return position
        last = calls[self._last]
        if self._remap:  # an id-less fragment continues the call begun last, unless it is new
            return self._new_key() if _starts_new(last, None, name, args) else self._last
        if name and last[1] and (last[4] or _whole(last)):
            return self._new_key()
        return self._last if position == 0 else max(position, self._last)


def _whole(slot: list[Any]) -> bool:
    """Whether a call's arguments are already a whole JSON value (an empty text is not: a
    backend may open several calls before it streams their arguments). The cheap test first:
    JSON text that is whole ends with a closing bracket, or a literal."""
    frags = slot[2]
    if not frags or (
        not frags[-1].rstrip().endswith(("}", "]", '"', "e", "l"))
        and not (frags[-1].rstrip()[-1:].isdigit())
    ):
        return False
    return _complete("".join(frags))


def _starts_new(slot: list[Any], call_id: str | None, name: str | None, args: Any) -> bool:
    """Whether a fragment on an index already taken begins another call. A call's first
    fragment always names its function, so only a named fragment can: one with another id than
    the call there (Ollama's /v1: every call ``index: 0``), or, without ids, one with arguments
    after a call that is whole or was sent (issue #16: "a new name after the previous call's
    arguments closed starts a new call"). A changed id alone continues the call (Poolside:
    poolsideai/pool#9); a repeated name alone, too (some backends name every fragment)."""
    if not name:
        return False
    if call_id and slot[0] and call_id != slot[0]:
        return True
    return bool(args) and (slot[4] or (bool(slot[1]) and _whole(slot)))


def _complete(arguments: str) -> bool:
    """Whether a call's argument text is already a whole JSON value."""
    try:
        orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return False
    return True


def logprobs_of(value: Any) -> list[dict[str, Any]]:
    """A choice's ``logprobs`` -> Ollama's ``[{"token", "logprob", "bytes"?, "top_logprobs"?}]``
    (api/types.go Logprob, which ollama-python validates). Read from OpenAI's chat shape,
    ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}``, and from the legacy
    ``/v1/completions`` shape, ``{"tokens", "token_logprobs", "top_logprobs": [{token:
    logprob}]}``. TypeError for a field of the wrong type."""
    if not isinstance(value, dict):
        raise TypeError(f"{type(value).__name__} where logprobs were expected")
    content = value.get("content")
    if content is not None:
        return [_logprob(entry, top=True) for entry in expect(content, list)]
    tokens = expect(value.get("tokens"), list) or []
    values = expect(value.get("token_logprobs"), list) or []
    tops = expect(value.get("top_logprobs"), list) or []
    out = []
    for i, token in enumerate(tokens):
        entry: dict[str, Any] = {
            "token": expect(token, str),
            "logprob": _number(values[i] if i < len(values) else None),
        }
        alternatives = tops[i] if i < len(tops) else None
        if alternatives:
            entry["top_logprobs"] = [
                {"token": expect(t, str), "logprob": _number(lp)}
                for t, lp in expect(alternatives, dict).items()
            ]
        out.append(entry)
    return out


def _logprob(entry: Any, *, top: bool) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise TypeError("a logprob that is not an object")
    out: dict[str, Any] = {
        "token": expect(entry.get("token"), str) or "",
        "logprob": _number(entry.get("logprob")),
    }
    raw = entry.get("bytes")
    if raw is not None:
        out["bytes"] = expect(raw, list)
    alternatives = entry.get("top_logprobs") if top else None
    if alternatives:
        out["top_logprobs"] = [_logprob(t, top=False) for t in expect(alternatives, list)]
    return out


def _number(value: Any) -> float:
    # A backend may send null for a token it cannot score (vLLM's first prompt token):
    # ollama-python requires a float; -inf is not JSON, so the least finite value stands in.
    if value is None:
        return -9999.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{type(value).__name__} where a log probability was expected")
    return float(value)
