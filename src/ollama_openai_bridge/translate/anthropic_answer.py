"""OpenAI chat completions -> Anthropic Messages answers, whole or streamed (issue #17).

:func:`message_response` turns a non-streamed completion into an Anthropic ``message``;
:class:`AnthropicStream` turns a chat-completion stream into the Messages event stream. Both read
the backend's shapes with normalise.py (typed parts, reasoning fields, tool-call fragments of
every backend) and share :func:`stop_reason`, :func:`tool_use` and :func:`usage`, so the two
paths cannot drift apart. The requests are translate/anthropic.py's.

The event stream is what the anthropic SDKs accumulate and Claude Code requires (Anthropic's
streaming docs; ollama/ollama ``anthropic.StreamConverter``): ``event:`` lines on every event --
without them, or without ``content_block_stop``, Claude Code throws the stream away and asks
again without streaming -- ``message_start`` (then a ``ping``), per content block
``content_block_start`` / ``content_block_delta`` / ``content_block_stop`` with consecutive
indices from 0 (the SDK accumulates deltas into ``content[index]``), thinking before the text
that follows it, each tool call as a ``tool_use`` block whose whole input is one
``input_json_delta`` once the call is complete (``ToolCallAssembler``), then one
``message_delta`` (stop reason, usage) and exactly one ``message_stop``.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from typing import Any

import orjson

from ollama_openai_bridge.translate.answer import done_reason, first_choice, tool_call_to_ollama
from ollama_openai_bridge.translate.chunks import ChunkReader, matched_stop
from ollama_openai_bridge.translate.normalise import (
    ToolCall,
    content_parts,
    expect,
    reasoning_of,
    tool_calls_of,
)
from ollama_openai_bridge.translate.thinktags import split_think

_ALPHABET = string.ascii_letters + string.digits


def message_id() -> str:
    """A message id in Anthropic's form: ``msg_`` and 24 letters and digits."""
    return "msg_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def stop_reason(finish: str | None, calls: bool, matched: str | None) -> str:
    """A backend's ``finish_reason`` as Anthropic's ``stop_reason``: ``max_tokens`` for a
    length stop (a call cut short must not be run), ``tool_use`` when the answer made calls
    (whatever the backend said, as anthropic.go decides), ``refusal`` for a content filter,
    ``stop_sequence`` when the backend names the stop sequence that matched, else
    ``end_turn``. Raises UpstreamStatusError for an
    ``error`` finish (answer.done_reason): a cut answer must not look complete."""
    reason = done_reason(finish)
    if reason == "length":
        # A call cut by the token limit is no call to run: Anthropic says max_tokens too.
        return "max_tokens"
    if calls:
        return "tool_use"
    if finish == "content_filter":
        return "refusal"
    return "stop_sequence" if matched is not None else "end_turn"


def tool_use(call: ToolCall, index: int, notes: list[str]) -> tuple[dict[str, Any], Any]:
    """A whole call as a ``tool_use`` block -- ``input`` an object, the backend's id or one in
    Ollama's form (answer.tool_call_to_ollama) -- and the call's Ollama shape (carry.py keys)."""
    ollama = tool_call_to_ollama(call, index, notes)
    fn = ollama["function"]
    block = {"type": "tool_use", "id": ollama["id"], "name": fn["name"], "input": fn["arguments"]}
    return block, ollama


def usage(raw: Mapping[str, Any] | None, estimate: int = 0) -> dict[str, int]:
    """OpenAI's ``usage`` as Anthropic's. Anthropic counts cached input apart
    (``cache_read_input_tokens``) where OpenAI's ``prompt_tokens`` includes it
    (``prompt_tokens_details.cached_tokens``). ``estimate``: the input count when the backend
    gave none."""
    prompt = raw.get("prompt_tokens") if raw else None
    completion = raw.get("completion_tokens") if raw else None
    details = raw.get("prompt_tokens_details") if raw else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    out = {
        "input_tokens": prompt if type(prompt) is int else estimate,  # not a bool
        "output_tokens": completion if type(completion) is int else 0,
    }
    if type(cached) is int and cached > 0 and type(prompt) is int:
        out["input_tokens"] = max(prompt - cached, 0)
        out["cache_read_input_tokens"] = cached
    return out


def message_response(
    resp: Mapping[str, Any],
    model: str,
    *,
    msg_id: str,
    think: bool,
    stops: tuple[str, ...] = (),
    notes: list[str],
    think_tags: bool = False,
    adapted: list[str] | None = None,
    estimate: int = 0,
    made: list[tuple[ToolCall, Any]] | None = None,
) -> dict[str, Any]:
    """A non-streamed chat completion as an Anthropic message: thinking, text and tool_use
    blocks, in that order; ``model`` is the client's name (Ollama echoes it too). A thinking
    block has an empty ``signature``: the SDKs' ThinkingBlock requires the field, and nothing
    here signs reasoning (Ollama's own leaves the field out). ``think``: False leaves reasoning
    out (thinking disabled); ``estimate``: the input count if the backend gives none; ``made``
    gets each call with its Ollama shape (for the tool-call store, translate/carry.py).

    A field of the wrong type raises TypeError (the caller reads inside ``errors.reading``)."""
    choice = first_choice(resp, model)  # an answer that is only an error: that error
    msg = expect(choice.get("message"), dict) or {}
    raw = msg.get("content")
    parted = None
    if raw is not None and not isinstance(raw, str):
        raw, parted = content_parts(raw)  # Magistral's typed parts
    text, tagged = raw or "", None
    if think_tags and text:
        text, tagged = split_think(text)
        if tagged is not None and adapted is not None:
            adapted.append("reasoning split out of <think> tags in the content")
    content: list[dict[str, Any]] = []
    thinking = (reasoning_of(msg) or parted or tagged) if think else None
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})
    if text:
        content.append({"type": "text", "text": text})
    calls = tool_calls_of(expect(msg.get("tool_calls"), list))
    for i, call in enumerate(calls):
        block, ollama = tool_use(call, i, notes)
        content.append(block)
        if made is not None:
            made.append((call, ollama))
    matched = matched_stop(choice, stops)
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(expect(choice.get("finish_reason"), str), bool(calls), matched),
        "stop_sequence": matched,
        "usage": usage(expect(resp.get("usage"), dict), estimate),
    }


def event(name: str, data: Mapping[str, Any]) -> bytes:
    """One SSE event with its ``event:`` line (the anthropic SDKs dispatch on it)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_PING = event("ping", {"type": "ping"})
_STOP = event("message_stop", {"type": "message_stop"})
# The empty block each kind starts with; deltas fill it (anthropic-sdk-python accumulate_event).
_STARTS = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
}
_DELTAS = {"text": (b"text_delta", b"text"), "thinking": (b"thinking_delta", b"thinking")}


class AnthropicStream(ChunkReader):
    """The Messages event writer over :class:`~ollama_openai_bridge.translate.chunks.ChunkReader`
    (which reads every backend's event shapes, type-checking each field it reads: a wrong type
    is refused quoting its event, never relayed)."""

    __slots__ = ("_block", "_estimate", "_id", "_index", "_started", "_tool_calls")

    def __init__(
        self,
        model: str,
        msg_id: str,
        *,
        think: bool = True,
        stops: tuple[str, ...] = (),
        estimate: int = 0,
        think_tags: bool = False,
    ) -> None:
        """``model``: the client's name, echoed; ``think``: False leaves reasoning out;
        ``stops``: the request's stop sequences; ``estimate``: the input token count for
        ``message_start`` until the backend's arrives (at the end, in ``message_delta``)."""
        super().__init__(model, think=think, think_tags=think_tags, stops=stops)
        self._id = msg_id
        self._estimate = estimate
        self._tool_calls = 0  # tool_use blocks sent
        self._started = False  # message_start sent
        self._block: str | None = None  # the kind of the open block ("text", "thinking")
        self._index = -1  # the index of the last block started

    def _write(
        self,
        content: str | None,
        thinking: str | None,
        ready: list[ToolCall] | None,
        calls: list[Any] | None,
    ) -> bytes:
        out = b""
        if thinking:
            out += self._piece("thinking", thinking)
        if content:
            out += self._piece("text", content)
        if ready:
            out += self._tool_blocks(ready)
        return out

    # --- output -----------------------------------------------------------------------------

    def _start(self) -> bytes:
        self._started = True
        counts = usage(self._usage, self._estimate)
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**counts, "output_tokens": 0},
        }
        return event("message_start", {"type": "message_start", "message": message}) + _PING

    def _close(self) -> bytes:
        if self._block is None:
            return b""
        self._block = None
        return event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _open(self, block: Mapping[str, Any]) -> bytes:
        out = b"" if self._started else self._start()
        out += self._close()
        self._index += 1
        return out + event(
            "content_block_start",
            {"type": "content_block_start", "index": self._index, "content_block": block},
        )

    def _piece(self, kind: str, text: str) -> bytes:
        """A text or thinking delta, in a block of its kind (opened after closing another)."""
        out = b""
        if self._block != kind:
            out = self._open(_STARTS[kind])
            self._block = kind
        name, key = _DELTAS[kind]
        return (
            out
            + b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
            + str(self._index).encode()
            + b',"delta":{"type":"'
            + name
            + b'","'
            + key
            + b'":'
            + orjson.dumps(text)
            + b"}}\n\n"
        )

    def _tool_blocks(self, calls: list[ToolCall]) -> bytes:
        """Each whole call as a block of its own: start (input {}), its whole input as one
        ``input_json_delta``, stop."""
        out = b""
        for call in calls:
            block, ollama = tool_use(call, self._tool_calls, self.notes)
            self.made.append((call, ollama))
            self._tool_calls += 1
            args = block["input"]
            out += self._open({**block, "input": {}})
            delta = {"type": "input_json_delta", "partial_json": orjson.dumps(args).decode()}
            out += event(
                "content_block_delta",
                {"type": "content_block_delta", "index": self._index, "delta": delta},
            )
            out += event("content_block_stop", {"type": "content_block_stop", "index": self._index})
        return out

    def _end(self) -> bytes:
        """The calls not sent yet, the open block's stop, ``message_delta`` and the one
        ``message_stop``."""
        content, thinking, rest = self._held()
        out = self._write(content, thinking, rest, None)
        reason = stop_reason(self._finish, self._tool_calls > 0, self._matched)
        if not self._started:
            out += self._start()
        out += self._close()
        delta = {"stop_reason": reason, "stop_sequence": self._matched}
        counts = usage(self._usage, self._estimate)
        out += event("message_delta", {"type": "message_delta", "delta": delta, "usage": counts})
        return out + _STOP
