"""The /v1 stream relay, fed reads as a network would cut them."""

from __future__ import annotations

import orjson
import pytest

from ollama_openai_bridge.errors import Redactor, UpstreamProtocolError
from ollama_openai_bridge.relay import SSERelay, UsageTap, event_end
from ollama_openai_bridge.translate.estimate import output_chars

KEY = "sk-secret-123456"
CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
DONE = b"data: [DONE]\n\n"


def relay() -> SSERelay:
    return SSERelay(Redactor([KEY]))


def run(r: SSERelay, reads: list[bytes]) -> bytes:
    return b"".join(r.feed(x) for x in reads) + r.end()


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"", 0),
        (b"data: x", 0),
        (b"data: x\n\n", 9),
        (b"data: x\n\ndata: y", 9),
        (b"data: x\r\n\r\ndata: y", 11),
        (b"data: x\r\rdata: y\n\n", 18),
    ],
)
def test_event_end(data: bytes, end: int) -> None:
    assert event_end(data) == end


def test_whole_events_pass_untouched_and_uncopied() -> None:
    r = relay()
    assert r.feed(CHUNK) is CHUNK
    assert r.feed(DONE) == DONE
    assert r.end() == b""


@pytest.mark.parametrize("step", [1, 2, 3, 7, 50])
def test_any_cut_gives_the_same_bytes(step: int) -> None:
    blob = CHUNK * 3 + b"data: x\r\n\r\n" + DONE
    reads = [blob[i : i + step] for i in range(0, len(blob), step)]
    r = relay()
    out = []
    for read in reads:
        piece = r.feed(read)
        if piece:
            assert event_end(piece) == len(piece)  # only whole events go out
        out.append(piece)
    assert b"".join(out) + r.end() == blob


def test_a_key_split_across_reads_is_redacted() -> None:
    error = b'data: {"error":{"message":"invalid api key ' + KEY.encode() + b'"}}\n\n'
    cut = error.index(b"123")
    r = relay()
    out = run(r, [CHUNK + error[:cut], error[cut:], DONE])
    assert KEY.encode() not in out
    assert b"invalid api key [redacted]" in out
    assert r.errors == [{"message": f"invalid api key {KEY}"}]


def test_error_events_of_both_kinds_are_collected() -> None:
    r = relay()
    run(r, [b"event: error\ndata: overloaded\n\n", b'data: {"error":"x"}\n\n', DONE])
    assert r.errors == ["overloaded", "x"]


def test_no_done_is_an_error_at_the_end() -> None:
    r = relay()
    assert r.feed(CHUNK) == CHUNK
    with pytest.raises(UpstreamProtocolError, match=r"no \[DONE\]"):
        r.end()


def test_done_inside_content_is_not_the_end() -> None:
    r = relay()
    r.feed(b'data: {"choices":[{"delta":{"content":"[DONE]"}}]}\n\n')
    assert not r.done


def test_final_event_without_blank_line_is_passed_on() -> None:
    assert run(relay(), [CHUNK, b"data: [DONE]"]) == CHUNK + b"data: [DONE]"


def test_invalid_utf8_is_refused_even_split() -> None:
    r = relay()
    r.feed(b'data: {"x":"\xc3')  # half a character: held, not judged
    with pytest.raises(UpstreamProtocolError, match="not UTF-8"):
        r.feed(b'\xff"}\n\n')
    assert relay().feed(b'data: {"x":"\xc3\xa9"}\n\n') == b'data: {"x":"\xc3\xa9"}\n\n'


def test_an_endless_event_is_bounded() -> None:
    r = SSERelay(Redactor(), max_pending=100)
    r.feed(b"data: " + b"x" * 90)
    with pytest.raises(UpstreamProtocolError, match="larger than 100 bytes"):
        r.feed(b"x" * 20)


USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
USAGE_ONLY = b'data: {"id":"c","choices":[],"usage":' + orjson.dumps(USAGE) + b"}\n\n"
LAST = b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'


def test_the_usage_tap_keeps_the_usage_and_passes_everything_else_untouched() -> None:
    tap = UsageTap(strip=False, measure=output_chars)
    assert tap(CHUNK) is CHUNK
    assert tap.usage is None
    data = LAST + USAGE_ONLY + DONE
    assert tap(data) is data  # the client asked for the usage: it gets it
    assert tap.usage == USAGE


def test_the_usage_chunk_the_client_did_not_ask_for_is_kept_from_it() -> None:
    tap = UsageTap(strip=True, measure=output_chars)
    assert tap(LAST + USAGE_ONLY + DONE) == LAST + DONE
    assert tap.usage == USAGE
    # CRLF event ends, data split over two lines, the usage on a chunk with choices (vLLM's
    # continuous usage stats): read, and that chunk is sent (it carries content)
    split = b'data: {"choices":[],\r\ndata: "usage":{"prompt_tokens":1}}\r\n\r\n'
    assert tap(split + DONE) == DONE
    assert tap.usage == {"prompt_tokens": 1}
    with_content = (
        b'data: {"choices":[{"index":0,"delta":{"content":"x"}}],"usage":{"prompt_tokens":3}}\n\n'
    )
    assert tap(with_content) == with_content
    assert tap.usage == {"prompt_tokens": 3}
    # what is not JSON, or names "usage" without being one, passes as it is
    odd = b'data: {"usage": oops\n\ndata: {"choices":[],"usage":null}\n\n'
    assert tap(odd) == odd
    assert tap.usage == {"prompt_tokens": 3}


def test_the_usage_tap_counts_the_characters_the_chunks_carry() -> None:
    # for the budget's estimate when no usage comes (issue #20 review, M1): text, reasoning and
    # tool-call fragments, whatever the read boundaries; a keep-alive comment or [DONE] is no text
    tap = UsageTap(strip=False, measure=output_chars)
    reasoning = b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}\n\n'
    call = (
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
        b'"function":{"name":"get","arguments":"{\\"a\\":1}"}}]}}]}\n\n'
    )
    for data in (b": ping\n\n", CHUNK, reasoning, call, LAST, DONE):
        assert tap(data) is data
    assert tap.chars == output_chars(orjson.loads(CHUNK[6:])) + 3 + 3 + 7
    assert tap.usage is None
