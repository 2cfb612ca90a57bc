"""Incremental Server-Sent Events parser.

Network reads cut SSE frames (and multi-byte UTF-8 characters) anywhere; peers we tested drop or
garble such frames. This parser buffers bytes, only decodes complete lines, and follows the
WHATWG event-stream rules that matter for OpenAI-compatible backends: lines end in CRLF, LF or CR;
``data:`` lines of one event are joined with ``\\n``; an empty line dispatches the event; lines
starting with ``:`` are comments (keep-alives); one optional space after the colon is removed.

What it buffers is bounded (:data:`MAX_EVENT_BYTES`) and costs linear time: a line arriving in
many reads is kept as its pieces and joined once, when its end arrives.
"""

from __future__ import annotations

from typing import NamedTuple, NoReturn

# The most bytes one line, and the data of one event, may hold. A backend sending a line with no
# end would otherwise make us buffer it all (a 200 MB one took 465 MB of RSS before failing).
# 16 MiB is far above what streams carry in practice (deltas of a few bytes to a few kB) and still
# fits what a backend may send in one event: a tool call's whole arguments (a file written by an
# agent), or a base64 image (a 10 MiB image is 13.3 MiB of base64). At its peak a parser holds
# about three times this (measured): the line's pieces, the line joined, the event's data.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class EventTooLarge(ValueError):
    """A line, or the data of one event, longer than the parser's ``max_event_bytes``. A
    ValueError, as a stream that is not valid SSE is: the caller reports a protocol error."""


class SSEEvent(NamedTuple):
    event: str
    data: str


class SSEParser:
    """Feed it bytes as they arrive; it returns the events completed by each feed. Raises
    UnicodeDecodeError for a line that is not UTF-8, and :class:`EventTooLarge` for a line (its
    end not counted) or an event's data (its UTF-8 bytes, the ``\\n`` joining its lines counted)
    longer than ``max_event_bytes``; the over-long line is not buffered to its end."""

    __slots__ = ("_buf", "_data", "_event", "_max", "_more", "_pending", "_size")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        # The partial line: its first piece, then (a line arriving in several reads) the others,
        # never copied until its end arrives. _buf ends with a CR only if a read did: that CR
        # may be the first half of a CRLF split across reads.
        self._buf = b""
        self._more: list[bytes] = []
        self._pending = 0  # bytes in _buf and _more, while _more is not empty
        self._data: list[str] = []
        self._size = 0  # bytes of "\n".join(_data) encoded, once it has two lines
        self._event = ""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf
        if b"\r" in chunk or (buf and buf[-1] == 0x0D):
            lines = self._split_cr(chunk)
        else:
            lines = chunk.split(b"\n")
            if buf:  # the partial line goes on in this read
                if len(lines) == 1:  # and does not end in it
                    self._grow(chunk)
                    return []
                more = self._more
                if more:
                    first = b"".join((buf, *more, lines[0]))
                    more.clear()
                else:
                    first = buf + lines[0]
                if len(first) > self._max:
                    self._too_large("an SSE line")
                lines[0] = first
            if len(chunk) > self._max:
                self._check(lines)
            self._buf = lines.pop()
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(SSEEvent(self._event or "message", "\n".join(data)))
                    data = self._data = []
                self._event = ""
                continue
            if line[0] == 0x3A:  # ":" comment / keep-alive
                continue
            field, sep, value = line.partition(b":")
            if sep and value[:1] == b" ":
                value = value[1:]
            # Strict: invalid UTF-8 raises UnicodeDecodeError. Replacing it with U+FFFD would hand
            # the client corrupted text as if it were the answer; the caller reports it as an error.
            if field == b"data":
                if data:  # one line is within the limit; several joined may not be
                    self._count(data, value)
                data.append(value.decode())
            elif field == b"event":
                self._event = value.decode()
            # "id" and "retry" are meaningless for a single HTTP response; ignore them.
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: a final event without its blank line is still delivered."""
        return self.feed(b"\n\n")  # ends the partial line (after its CR, if any), then the event

    def _grow(self, piece: bytes) -> None:
        """A read inside a line: kept as it is, after the line's pieces so far."""
        more = self._more
        pending = (self._pending if more else len(self._buf)) + len(piece)
        if pending > self._max:
            self._too_large("an SSE line")
        more.append(piece)
        self._pending = pending

    def _split_cr(self, chunk: bytes) -> list[bytes]:
        """The complete lines when a CR is about; the rest stays pending. All that was pending
        is joined here, once: a CR ends a line, so the partial line does end in this read."""
        more = self._more
        buf = b"".join((self._buf, *more, chunk)) if more else self._buf + chunk
        more.clear()
        cr = buf.endswith(b"\r")
        if cr:
            buf = buf[:-1]
        lines = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        if len(buf) > self._max:
            self._check(lines)
        self._buf = (lines.pop() + b"\r") if cr else lines.pop()
        return lines

    def _check(self, lines: list[bytes]) -> None:
        """For a read longer than the limit (rare): no line in it may be longer."""
        if max(map(len, lines)) > self._max:
            self._too_large("an SSE line")

    def _too_large(self, what: str) -> NoReturn:
        # Let go of what was buffered at once: the parser may outlive the failed stream a while.
        self._buf = b""
        self._more = []
        self._data = []
        self._event = ""
        raise EventTooLarge(f"{what} longer than {self._max} bytes")

    def _count(self, data: list[str], value: bytes) -> None:
        """Before ``value`` joins an event's ``data`` lines: their size stays within the limit."""
        size = (self._size if len(data) > 1 else len(data[0].encode())) + 1 + len(value)
        if size > self._max:
            self._too_large("an SSE event with data")
        self._size = size
