from __future__ import annotations

import pytest

from ollama_openai_proxy.sse import SSEEvent, SSEParser

STREAM = (
    'data: {"a":1}\n\n'
    ": keep-alive comment\n\n"
    'event: error\ndata: {"error":"x"}\n\n'
    "data: line1\ndata: line2\n\n"
    "data:no-space\n\n"
    "id: 7\nretry: 100\ndata: é 日本 🎉\n\n"
    "data: [DONE]\n\n"
).encode()

EXPECTED = [
    SSEEvent("message", '{"a":1}'),
    SSEEvent("error", '{"error":"x"}'),
    SSEEvent("message", "line1\nline2"),
    SSEEvent("message", "no-space"),
    SSEEvent("message", "é 日本 🎉"),
    SSEEvent("message", "[DONE]"),
]


def feed_all(pieces: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    events.extend(parser.close())
    return events


def test_whole_stream() -> None:
    assert feed_all([STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64])
def test_any_split_reassembles_frames_and_utf8(size: int) -> None:
    # Splitting every `size` bytes cuts frames, "data:" prefixes and multi-byte characters.
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert feed_all(pieces) == EXPECTED


@pytest.mark.parametrize("newline", [b"\r\n", b"\r", b"\n"])
def test_line_endings(newline: bytes) -> None:
    raw = STREAM.replace(b"\n", newline)
    assert feed_all([raw]) == EXPECTED
    # CRLF split between the CR and the LF across two reads.
    assert feed_all([raw[i : i + 1] for i in range(len(raw))]) == EXPECTED


def test_final_event_without_blank_line_is_delivered_on_close() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"x":1}') == []
    assert parser.close() == [SSEEvent("message", '{"x":1}')]


def test_invalid_utf8_is_an_error_not_replaced() -> None:
    # U+FFFD in place of the bytes would hand the client corrupted text as the answer.
    with pytest.raises(UnicodeDecodeError):
        feed_all([b"data: \xff\xfe ok\n\n"])
    # a multi-byte character split across reads is still fine
    assert feed_all([b"data: \xc3", b"\xa9\n\n"]) == [SSEEvent("message", "\u00e9")]


def test_empty_data_lines_and_fields_without_colon() -> None:
    assert feed_all([b"data\n\n"]) == [SSEEvent("message", "")]
    assert feed_all([b"event: ping\n\n"]) == []  # no data: no event
