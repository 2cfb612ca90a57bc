"""Incremental Server-Sent Events parser.

Network reads cut SSE frames (and multi-byte UTF-8 characters) anywhere; peers we tested drop or
garble such frames. This parser buffers bytes, only decodes complete lines, and follows the
WHATWG event-stream rules that matter for OpenAI-compatible backends: lines end in CRLF, LF or CR;
``data:`` lines of one event are joined with ``\\n``; an empty line dispatches the event; lines
starting with ``:`` are comments (keep-alives); one optional space after the colon is removed.
"""

from __future__ import annotations

from typing import NamedTuple


class SSEEvent(NamedTuple):
    event: str
    data: str


class SSEParser:
    """Feed it bytes as they arrive; it returns the events completed by each feed. Raises
    UnicodeDecodeError for a line that is not UTF-8."""

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF split across reads.
            tail = b""
            if buf.endswith(b"\r"):
                buf, tail = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = buf.split(b"\n")
            self._buf = lines.pop() + tail
        else:
            lines = buf.split(b"\n")
            self._buf = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            self._line(line, events)
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: a final event without its blank line is still delivered."""
        events: list[SSEEvent] = []
        if self._buf:
            self._line(self._buf.rstrip(b"\r"), events)
            self._buf = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
            self._data = []
            self._event = ""
            return
        if line[0] == 0x3A:  # ":" comment / keep-alive
            return
        field, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        # Strict: invalid UTF-8 raises UnicodeDecodeError. Replacing it with U+FFFD would hand the
        # client corrupted text as if it were the answer; the caller reports it as an error.
        if field == b"data":
            self._data.append(value.decode())
        elif field == b"event":
            self._event = value.decode()
        # "id" and "retry" are meaningless for a single HTTP response; ignore them.
