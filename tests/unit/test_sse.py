from __future__ import annotations

import itertools
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_openai_bridge.sse import MAX_EVENT_BYTES, EventTooLarge, SSEEvent, SSEParser

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


def feed_all(pieces: list[bytes], **limit: int) -> list[SSEEvent]:
    parser = SSEParser(**limit)
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


def cut(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


LIMIT = 100
READ_SIZES = [1, 7, 64, LIMIT, 1000]


@pytest.mark.parametrize("size", READ_SIZES)
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_a_line_may_be_as_long_as_the_limit_not_longer(size: int, newline: bytes) -> None:
    # the line's end is not counted; however the reads cut it, the outcome is the same
    line = b"data: " + b"x" * (LIMIT - 6)
    assert len(line) == LIMIT
    events = [SSEEvent("message", "x" * (LIMIT - 6))]
    assert feed_all(cut(line + newline * 2, size), max_event_bytes=LIMIT) == events
    assert feed_all(cut(line, size), max_event_bytes=LIMIT) == events  # the last, ended by close
    with pytest.raises(EventTooLarge):
        feed_all(cut(line + b"x" + newline * 2, size), max_event_bytes=LIMIT)
    with pytest.raises(EventTooLarge):
        feed_all(cut(b": " + b"c" * (LIMIT - 1) + newline, size), max_event_bytes=LIMIT)


def test_a_line_too_long_fails_before_its_end_arrives() -> None:
    parser = SSEParser(max_event_bytes=LIMIT)
    assert parser.feed(b"data: " + b"x" * 50) == []
    assert parser.feed(b"x" * (LIMIT - 56)) == []
    with pytest.raises(EventTooLarge, match=rf"^an SSE line longer than {LIMIT} bytes$"):
        parser.feed(b"x")


def test_the_default_limit_stops_an_endless_line_at_16_mib() -> None:
    assert MAX_EVENT_BYTES == 16 * 1024 * 1024
    parser = SSEParser()
    read = 64 * 1024
    fed = 0
    with pytest.raises(EventTooLarge):
        while fed <= 2 * MAX_EVENT_BYTES:
            parser.feed(b"x" * read)
            fed += read
    assert MAX_EVENT_BYTES - read < fed <= MAX_EVENT_BYTES


def data_lines(*values: bytes) -> bytes:
    return b"".join(b"data: " + value + b"\n" for value in values) + b"\n"


@pytest.mark.parametrize("size", READ_SIZES)
def test_an_events_data_may_be_as_long_as_the_limit_not_longer(size: int) -> None:
    # data: the UTF-8 bytes of the joined lines, the "\n" joining them counted
    fits = data_lines(*[b"x" * 9] * 9, b"x" * 10)  # 9 * 9 + 10 + 9 = 100
    assert feed_all(cut(fits, size), max_event_bytes=LIMIT) == [
        SSEEvent("message", "\n".join(["x" * 9] * 9 + ["x" * 10]))
    ]
    with pytest.raises(EventTooLarge, match=r"^an SSE event with data longer than 100 bytes$"):
        feed_all(cut(data_lines(*[b"x" * 9] * 9, b"x" * 11), size), max_event_bytes=LIMIT)
    # empty lines: only the "\n" joining them
    assert feed_all(cut(b"data\n" * 101 + b"\n", size), max_event_bytes=LIMIT) == [
        SSEEvent("message", "\n" * 100)
    ]
    with pytest.raises(EventTooLarge):
        feed_all(cut(b"data\n" * 102 + b"\n", size), max_event_bytes=LIMIT)
    # bytes, not characters: 10 lines of 5 "é" joined are 109 bytes but 59 characters
    with pytest.raises(EventTooLarge):
        feed_all(cut(data_lines(*["é".encode() * 5] * 10), size), max_event_bytes=LIMIT)
    # each event has the whole limit; the last one is ended by close
    assert len(feed_all(cut(fits * 3 + fits[:-1], size), max_event_bytes=LIMIT)) == 4


def test_event_too_large_is_a_value_error() -> None:
    # the proxy reports a ValueError from the parser as an upstream protocol error
    assert issubclass(EventTooLarge, ValueError)


def test_a_long_line_in_small_reads_costs_linear_time() -> None:
    # Copying the partial line again at each read took 290 s of CPU for this (20 MB, 1 kB
    # reads); the pieces are now joined once, at the line's end: well under a second.
    parser = SSEParser(max_event_bytes=32 * 1024 * 1024)
    start = time.process_time()
    assert parser.feed(b"data: ") == []
    for _ in range(20_000):
        assert parser.feed(b"x" * 1000) == []
    events = parser.feed(b"\n\n")
    elapsed = time.process_time() - start
    assert [len(event.data) for event in events] == [20_000_000]
    assert elapsed < 5


# atoms of a stream; each is valid UTF-8, whatever cuts the stream
PIECES = [b"data", b"data:", b"data: ", b"x", b"\xc3\xa9", b"\r", b"\n", b"\r\n", b": c", b"event:"]


def outcome(pieces: list[bytes], limit: int) -> list[SSEEvent] | type[EventTooLarge]:
    try:
        return feed_all(pieces, max_event_bytes=limit)
    except EventTooLarge:
        return EventTooLarge


@settings(max_examples=300, deadline=None)
@given(
    raw=st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    limit=st.integers(min_value=1, max_value=40),
)
def test_the_limit_holds_however_reads_cut_the_stream(
    raw: bytes, cuts: list[int], limit: int
) -> None:
    bounds = sorted({0, len(raw), *(c for c in cuts if c < len(raw))})
    pieces = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    events = feed_all([raw])
    too_large = max(map(len, re.split(rb"\r\n|\r|\n", raw))) > limit or any(
        len(event.data.encode()) > limit for event in events
    )
    assert outcome(pieces, limit) == (EventTooLarge if too_large else events)
