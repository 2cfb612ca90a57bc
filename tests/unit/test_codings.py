"""Compressed request bodies (codings.py): real zstd, gzip and deflate bytes in, the JSON out;
bombs stopped at the limit without taking more memory than it; corrupt bodies 400, unknown
codings 415."""

from __future__ import annotations

import gzip
import os
import time
import tracemalloc
import zlib

import pytest
import zstandard

from ollama_openai_bridge.codings import MAX_WINDOW, decode
from ollama_openai_bridge.errors import BadRequest, PayloadTooLarge, UnsupportedEncoding

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"hello " * 5000 + b'"}]}'
LIMIT = 1 << 20


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODED = {
    "zstd": zstandard.ZstdCompressor(level=3).compress(BODY),  # Codex's level
    "gzip": gzip.compress(BODY),
    "x-gzip": gzip.compress(BODY),
    "deflate": zlib.compress(BODY),  # RFC 9110's deflate: the zlib format
}


@pytest.mark.parametrize("coding", sorted(ENCODED))
def test_each_coding_decodes_to_the_body(coding: str) -> None:
    assert decode(ENCODED[coding], coding, LIMIT) == BODY
    assert decode(ENCODED[coding], f" {coding.upper()} ", LIMIT) == BODY  # case, spaces


@pytest.mark.parametrize(
    ("name", "encoded", "header"),
    [
        ("raw deflate under deflate's name", raw_deflate(BODY), "deflate"),
        ("identity", BODY, "identity"),
        ("identity then zstd", ENCODED["zstd"], "identity, zstd"),
        ("two gzip members", gzip.compress(BODY[:100]) + gzip.compress(BODY[100:]), "gzip"),
        (
            "two zstd frames",
            *(
                (
                    zstandard.ZstdCompressor().compress(BODY[:100])
                    + zstandard.ZstdCompressor().compress(BODY[100:]),
                    "zstd",
                )
            ),
        ),
        (
            "a zstd stream without the content size in its header",
            zstandard.ZstdCompressor(write_content_size=False).compress(BODY),
            "zstd",
        ),
    ],
)
def test_the_shapes_clients_send(name: str, encoded: bytes, header: str) -> None:
    assert decode(encoded, header, LIMIT) == BODY, name


def test_the_limit_is_the_decoded_size() -> None:
    for coding, encoded in ENCODED.items():
        assert decode(encoded, coding, len(BODY)) == BODY  # exactly the limit: accepted
        with pytest.raises(PayloadTooLarge) as info:
            decode(encoded, coding, len(BODY) - 1)
        assert info.value.status == 413
        assert f"once decompressed ({coding.removeprefix('x-')})" in info.value.message


@pytest.mark.parametrize("coding", ["zstd", "gzip", "deflate"])
def test_a_bomb_takes_no_more_memory_than_the_limit(coding: str) -> None:
    # 256 MiB of zeros, compressed to a few kilobytes (zstd: ~8 KB; gzip/deflate: ~256 KB)
    zeros = bytes(1 << 24)
    if coding == "zstd":
        c = zstandard.ZstdCompressor(level=3).compressobj()
        bomb = b"".join(c.compress(zeros) for _ in range(16)) + c.flush()
    else:
        wbits = zlib.MAX_WBITS | (16 if coding == "gzip" else 0)
        z = zlib.compressobj(9, zlib.DEFLATED, wbits)
        bomb = b"".join(z.compress(zeros) for _ in range(16)) + z.flush()
    del zeros
    assert len(bomb) < (1 << 19)
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            decode(bomb, coding, LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * LIMIT, peak  # what was decoded before the limit, not a gigabyte


@pytest.mark.parametrize(
    ("encoded", "header", "fragment"),
    [
        (b"definitely not zstd", "zstd", "invalid zstd request body"),
        (ENCODED["zstd"][:-3], "zstd", "ends inside a frame"),  # truncated
        (ENCODED["zstd"] + b"junk", "zstd", "invalid zstd request body"),
        (b"", "zstd", "ends inside a frame"),
        (b"\x1f\x8b not gzip", "gzip", "invalid gzip request body"),
        (ENCODED["gzip"][:-8], "gzip", "ends before its end marker"),
        (ENCODED["gzip"] + b"junk", "gzip", "invalid gzip request body"),
        (ENCODED["deflate"] + b"junk", "deflate", "bytes after its end"),
        (BODY, "gzip", "invalid gzip request body"),  # a plain body that says it is gzip
    ],
)
def test_a_body_that_does_not_decode_is_400(encoded: bytes, header: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode(encoded, header, LIMIT)
    assert info.value.status == 400
    assert fragment in info.value.message


@pytest.mark.parametrize("header", ["br", "compress", "zstd, gzip", "gzip, gzip", "lzma"])
def test_other_codings_are_415(header: str) -> None:
    with pytest.raises(UnsupportedEncoding) as info:
        decode(ENCODED["gzip"], header, LIMIT)
    assert info.value.status == 415
    assert "zstd, gzip, deflate or identity" in info.value.message


def test_a_zstd_frame_may_not_ask_for_a_larger_window() -> None:
    # a streamed frame (no content size) declares its window: 64 MiB here, more than MAX_WINDOW
    params = zstandard.ZstdCompressionParameters.from_level(19, window_log=26)
    c = zstandard.ZstdCompressor(compression_params=params).compressobj()
    encoded = c.compress(os.urandom(1 << 10)) + c.flush()
    assert zstandard.get_frame_parameters(encoded).window_size > MAX_WINDOW
    with pytest.raises(BadRequest) as info:
        decode(encoded, "zstd", 1 << 30)
    assert "invalid zstd request body" in info.value.message


@pytest.mark.parametrize("coding", ["zstd", "gzip"])
def test_a_large_body_decodes_in_linear_time(coding: str) -> None:
    # 24 MiB of JSON-like text in many frames or members: no step copies the rest of the input.
    text = b'{"role": "user", "content": "' + os.urandom(1 << 20).hex().encode() + b'"}'
    if coding == "zstd":
        encoded = b"".join(zstandard.ZstdCompressor().compress(text) for _ in range(12))
    else:
        encoded = b"".join(gzip.compress(text, 1) for _ in range(12))
    started = time.perf_counter()
    assert decode(encoded, coding, 1 << 26) == text * 12
    assert time.perf_counter() - started < 5  # ~0.1 s here; quadratic copying takes minutes
