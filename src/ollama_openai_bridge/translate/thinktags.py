"""Reasoning left inside ``content`` as ``<think>...</think>`` -> Ollama's ``thinking`` field.

Backends that serve reasoning models without a reasoning parser answer the model's raw text:
llama.cpp's ``llama-server`` without ``--reasoning-format``, vLLM without
``--reasoning-parser``, Groq's ``reasoning_format: "raw"``, Together and Fireworks for DeepSeek-R1
and Qwen3. Ollama itself separates it (its thinking parser, thinking/parser.go): the text between
a leading ``<think>`` and ``</think>`` is ``thinking``, whitespace around the tags is dropped, and
only a block at the very start counts (a model quoting the tag later is content).

:class:`ThinkSplitter` does it for a stream, fed one delta at a time (tags split across deltas
included), holding back only what could still be part of a tag; :func:`split_think` does it
for a whole answer. Pure: no I/O.
"""

from __future__ import annotations

OPEN = "<think>"
CLOSE = "</think>"

# states
_START, _LEAD, _INSIDE, _TRAIL, _AFTER = range(5)


def _partial(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that begins ``tag`` (a tag cut by the delta)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkSplitter:
    """Fed content deltas in order; :meth:`feed` gives ``(content, thinking)`` to send now,
    :meth:`flush` what it held back when the stream ends."""

    __slots__ = ("_buf", "_state")

    def __init__(self) -> None:
        self._state = _START
        self._buf = ""

    def feed(self, text: str) -> tuple[str, str]:
        """``(content, thinking)`` for one delta's text; either may be empty."""
        state = self._state
        if state == _AFTER:  # the usual case once the block is over
            return text, ""
        if state == _TRAIL:  # whitespace after </think> is not content
            text = text.lstrip()
            if text:
                self._state = _AFTER
            return text, ""
        buf = self._buf + text
        if state == _START:
            stripped = buf.lstrip()
            if stripped.startswith(OPEN):
                buf = stripped[len(OPEN) :]
                state = self._state = _LEAD
            elif not stripped or OPEN.startswith(stripped):
                self._buf = buf  # nothing yet, or a tag being cut: wait
                return "", ""
            else:
                self._buf = ""
                self._state = _AFTER
                return buf, ""
        if state == _LEAD:  # whitespace after <think> is not thinking
            buf = buf.lstrip()
            if not buf:
                self._buf = ""
                return "", ""
            self._state = _INSIDE
        end = buf.find(CLOSE)
        if end >= 0:
            thinking = buf[:end].rstrip()
            rest = buf[end + len(CLOSE) :].lstrip()
            self._buf = ""
            self._state = _AFTER if rest else _TRAIL
            return rest, thinking
        # Hold back what may be the start of </think>, and whitespace that may precede it.
        keep = _partial(buf, CLOSE)
        body = buf[: len(buf) - keep]
        thinking = body.rstrip()
        self._buf = buf[len(thinking) :]
        return "", thinking

    def flush(self) -> tuple[str, str]:
        """What was held back, once the answer ended: an unclosed block's last words are
        thinking (the answer was cut inside it); anything else was content."""
        buf, self._buf = self._buf, ""
        if self._state in (_LEAD, _INSIDE):
            return "", buf
        if self._state == _START:
            return buf, ""  # a "<thi" that never became a tag, or whitespace: content
        return "", ""


def split_think(text: str) -> tuple[str, str | None]:
    """``(content, thinking)`` of a whole answer's text; thinking None when it has no leading
    ``<think>`` block."""
    stripped = text.lstrip()
    if not stripped.startswith(OPEN):
        return text, None
    body = stripped[len(OPEN) :]
    end = body.find(CLOSE)
    if end < 0:  # cut inside the block (num_predict): all of it is thinking
        return "", body.strip()
    return body[end + len(CLOSE) :].lstrip(), body[:end].strip()
