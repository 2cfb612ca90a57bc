"""The ``/v1`` stream relay: a backend's SSE bytes passed on as they arrive, event by event.

:class:`SSERelay` is fed network reads and returns the bytes to send, knowing nothing of HTTP.
It passes on only whole events -- an SSE client acts on nothing before an event's blank line
(WHATWG "dispatch the event"), so holding back a partial event delays nothing a client can see --
which lets it check each piece as a unit:

- secrets (the backend key a backend may quote in an error) are redacted, even when the read
  boundary fell inside one;
- the backend's own error events are collected, so the proxy can log and count them (the openai
  SDKs raise APIError on them, openai-python ``_streaming.py``);
- invalid UTF-8 is refused, not relayed (SSE is UTF-8 by definition);
- a stream that ends without OpenAI's ``data: [DONE]`` was cut short, and must not end silently.

The common read -- one or more whole events -- costs a few substring searches and no copy.

With token budgets (TOKEN_BUDGET), :class:`UsageTap` reads the ``usage`` out of the events
passed on, and the characters they carry, so that the stream is counted against the caller's
key -- as an estimate when no usage comes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

from ollama_openai_bridge.errors import Redactor, UpstreamProtocolError, malformed
from ollama_openai_bridge.sse import MAX_EVENT_BYTES, SSEParser

MAX_PENDING = MAX_EVENT_BYTES  # bytes of one incomplete event held back at most
UNFINISHED = "upstream stream ended early: no [DONE]"
_SEPARATORS = (b"\r\n\r\n", b"\r\r")  # besides b"\n\n": CRLF and CR line ends (rare)
_BLOCKS = re.compile(rb"(\r\n\r\n|\n\n|\r\r)")  # event ends, kept by split()


def event_end(data: bytes) -> int:
    """The index just after the last complete event in ``data`` (0 if there is none)."""
    i = data.rfind(b"\n\n")
    end = i + 2 if i >= 0 else 0
    if b"\r" in data:
        for sep in _SEPARATORS:
            i = data.rfind(sep)
            if i >= 0 and i + len(sep) > end:
                end = i + len(sep)
    return end


class SSERelay:
    """Feed it each read; it returns the whole events to send (bytes, maybe empty).

    ``errors`` collects the ``error`` objects of the backend's error events (or their text);
    ``done`` tells whether ``[DONE]`` has passed. Raises
    :class:`~ollama_openai_bridge.errors.UpstreamProtocolError` for invalid UTF-8, an event over
    ``max_pending`` bytes, or (from :meth:`end`) a stream that ended without ``[DONE]``."""

    __slots__ = ("_held", "_max", "_parts", "_redact", "done", "errors")

    def __init__(self, redact: Redactor, max_pending: int = MAX_PENDING) -> None:
        self._redact = redact
        self._max = max_pending
        self._parts: list[bytes] = []  # an incomplete event, as read
        self._held = 0
        self.done = False
        self.errors: list[Any] = []

    def feed(self, chunk: bytes) -> bytes:
        parts = self._parts
        if not parts:
            cut = event_end(chunk)
            if cut == len(chunk):
                return self._checked(chunk)  # the common case: whole events, no copy
        else:
            # a separator may straddle the previous read and this one
            tail = parts[-1][-3:]
            cut = event_end(tail + chunk)
            cut = cut - len(tail) if cut else 0
        if cut <= 0:
            parts.append(chunk)
            self._held += len(chunk)
            if self._held > self._max:
                raise malformed(f"an event larger than {self._max} bytes", b"".join(parts))
            return b""
        whole = b"".join((*parts, chunk[:cut])) if parts else chunk[:cut]
        rest = chunk[cut:]
        self._parts = [rest] if rest else []
        self._held = len(rest)
        return self._checked(whole)

    def end(self) -> bytes:
        """The stream ended cleanly: what is left (an event without its blank line); raises if
        ``[DONE]`` never came."""
        out = b""
        if self._parts:
            out = self._checked(b"".join(self._parts))
            self._parts = []
        if not self.done:
            raise UpstreamProtocolError(UNFINISHED)
        return out

    def _checked(self, data: bytes) -> bytes:
        if not data.isascii():
            try:
                data.decode()
            except UnicodeDecodeError as exc:
                raise malformed(
                    "bytes that are not UTF-8", data[max(0, exc.start - 40) :]
                ) from None
        if b'"error"' in data or b"event: error" in data or b"event:error" in data:
            self._collect_errors(data)
        if not self.done and (b"data: [DONE]" in data or b"data:[DONE]" in data):
            self.done = True
        return self._redact.bytes(data)

    def _collect_errors(self, data: bytes) -> None:
        parser = SSEParser()
        for event in [*parser.feed(data), *parser.close()]:
            if event.data == "[DONE]":
                continue
            try:
                obj = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                obj = event.data
            if isinstance(obj, dict) and "error" in obj:
                self.errors.append(obj["error"])
            elif event.event == "error":
                self.errors.append(obj)


class UsageTap:
    """Fed the whole events :class:`SSERelay` passes on, it keeps the last ``usage`` object one
    of them carries (OpenAI's last chunk with ``stream_options.include_usage``; vLLM's every
    chunk with continuous usage stats), counts the characters of text, reasoning and tool calls
    the chunks carry (``chars``: the completion's estimate when no usage comes -- a stream left
    early, a backend that takes no ``stream_options``), and returns the events to send.

    ``strip``: the proxy asked for the usage on the client's behalf, which did not ask for it;
    the usage-only chunk (``choices: []``) is then not passed on -- a client that did not ask
    for it may read ``choices[0]`` of every chunk. ``measure``: the characters of one decoded
    chunk (translate/estimate.output_chars). Only events that name ``"usage"`` or ``"choices"``
    are decoded."""

    __slots__ = ("_measure", "chars", "strip", "usage")

    def __init__(self, *, strip: bool, measure: Callable[[Any], int]) -> None:
        self.strip = strip
        self._measure = measure
        self.usage: dict[str, Any] | None = None
        self.chars = 0

    def __call__(self, data: bytes) -> bytes:
        if b'"usage"' not in data and b'"choices"' not in data:
            return data
        parts = _BLOCKS.split(data)  # event, end, event, end, ..., what follows the last end
        kept: list[bytes] = []
        dropped = False
        for i in range(0, len(parts), 2):
            block = parts[i]
            end = parts[i + 1] if i + 1 < len(parts) else b""
            named = b'"usage"' in block
            if named or b'"choices"' in block:
                obj = _data_of(block)
                self.chars += self._measure(obj)
                usage = obj.get("usage") if named and isinstance(obj, dict) else None
                if isinstance(usage, dict):
                    self.usage = usage
                    if self.strip and obj.get("choices") == []:
                        dropped = True
                        continue
            kept.append(block)
            kept.append(end)
        return b"".join(kept) if dropped else data


def _data_of(block: bytes) -> Any:
    """The decoded JSON of one event's ``data:`` lines (None if it is not JSON)."""
    lines = [line[5:] for line in block.splitlines() if line.startswith(b"data:")]
    data = b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
