"""Compressed request bodies (``Content-Encoding``): decoded before anything reads them, bounded.

Codex compresses its ``/v1/responses`` bodies with zstd (level 3) when it talks to OpenAI's own
backend (openai/codex ``codex-rs/http-client/src/request.rs``, ``enable_request_compression``;
openai/codex#41662 asks for it per provider), and other OpenAI-SDK-based clients and gateways send
zstd or gzip (earendil-works/pi#8517); a proxy that does not decode them parses compressed bytes
as JSON. Ollama's own server does not decode request bodies. Here every POST route takes
``zstd``, ``gzip`` (``x-gzip``), ``deflate`` (zlib, or raw deflate as some clients send it) and
``identity``:

* the decoded body may not exceed the request-size limit: 413 (:class:`PayloadTooLarge`),
  decoded a piece at a time, so a bomb (a few kilobytes that decode to gigabytes) never takes
  more memory than the limit plus one zstd block (128 KiB) and a zstd window of at most
  :data:`MAX_WINDOW` bytes;
* a body that does not decode (corrupt, truncated, trailing bytes) is 400 (:class:`BadRequest`);
* any other coding (``br``, ``compress``) or more than one coding is 415
  (:class:`UnsupportedEncoding`).

Errors are rendered in the route's dialect like any other (render.py).
"""

from __future__ import annotations

import zlib

from ollama_openai_bridge.errors import BadRequest, PayloadTooLarge, UnsupportedEncoding

SUPPORTED = ("zstd", "gzip", "x-gzip", "deflate", "identity")
MAX_WINDOW = 1 << 24  # the largest zstd window (history) a frame may ask for, 16 MiB
_ZSTD_BLOCK = 1 << 17  # the most one zstd block decodes to (ZSTD_BLOCKSIZE_MAX)
_ZSTD_MIN_BLOCK = 4  # the fewest bytes one block takes (a header and one RLE byte)
_PIECE = 1 << 16  # output per zlib step


def decode(body: bytes, header: str, limit: int) -> bytes:
    """``body`` decoded as ``header`` (the request's ``Content-Encoding`` value) says, at most
    ``limit`` bytes. Raises :class:`UnsupportedEncoding` (415), :class:`BadRequest` (400) or
    :class:`PayloadTooLarge` (413)."""
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return body
    if len(codings) > 1 or codings[0] not in SUPPORTED:
        raise UnsupportedEncoding(
            f"unsupported Content-Encoding {header.strip()[:64]!r}: send one of zstd, gzip, "
            "deflate or identity"
        )
    coding = codings[0]
    if coding == "zstd":
        return _zstd(body, limit)
    if coding in ("gzip", "x-gzip"):
        return _zlib(body, limit, zlib.MAX_WBITS | 16, "gzip")
    # RFC 9110's deflate is zlib's format, but some clients send raw deflate under that name
    # (why browsers and curl take both): raw unless the first two bytes are a zlib header.
    wrapped = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
    return _zlib(body, limit, zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS, "deflate")


def _too_large(coding: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body too large once decompressed ({coding}): the limit is {limit} bytes"
    )


def _zlib(body: bytes, limit: int, wbits: int, coding: str) -> bytes:
    """gzip (every member: a gzip stream may hold several) or deflate. Input goes in pieces of
    :data:`_PIECE` bytes and output comes ``max_length`` at a time, so no step decodes more than
    the room left, nor copies more than a piece of the input."""
    out: list[bytes] = []
    size, pos = 0, 0
    view = memoryview(body)
    d = zlib.decompressobj(wbits)
    pending = b""  # input given to the decoder and not yet consumed
    try:
        while True:
            if not pending and pos < len(body):
                pending = view[pos : pos + _PIECE].tobytes()
                pos += len(pending)
            piece = d.decompress(pending, min(_PIECE, limit - size + 1))
            size += len(piece)
            if size > limit:
                raise _too_large(coding, limit)
            out.append(piece)
            pending = d.unconsumed_tail
            if d.eof:
                pending = d.unused_data
                if not pending and pos >= len(body):
                    return b"".join(out)
                if coding != "gzip":
                    raise BadRequest(f"invalid {coding} request body: bytes after its end")
                d = zlib.decompressobj(wbits)  # the next gzip member
            elif not (pending or piece) and pos >= len(body):
                raise BadRequest(f"invalid {coding} request body: it ends before its end marker")
    except zlib.error as exc:
        raise BadRequest(f"invalid {coding} request body: {exc}") from None


def _zstd(body: bytes, limit: int) -> bytes:
    """Every zstd frame of ``body``. The decoder gives all the output a piece of input makes, so
    the input goes in pieces small enough that even the densest blocks (128 KiB from four bytes)
    cannot decode to more than the room left and one block. (zstandard is imported here, with
    the first zstd body: most processes never see one, issue #18.)"""
    import zstandard  # noqa: PLC0415 -- see the docstring

    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
    out: list[bytes] = []
    size, pos = 0, 0
    view = memoryview(body)
    obj = dctx.decompressobj()
    pending = b""  # what followed the end of a frame in the last piece: the next frame's start
    try:
        while pending or pos < len(body):
            if pending:
                piece_in, pending = pending, b""
            else:
                step = max(_ZSTD_MIN_BLOCK, (limit - size) * _ZSTD_MIN_BLOCK // _ZSTD_BLOCK)
                piece_in = view[pos : pos + step].tobytes()
                pos += len(piece_in)
            piece = obj.decompress(piece_in)
            size += len(piece)
            if size > limit:
                raise _too_large("zstd", limit)
            out.append(piece)
            if obj.eof:
                pending = obj.unused_data
                if not pending and pos >= len(body):
                    return b"".join(out)
                obj = dctx.decompressobj()  # another frame follows
    except zstandard.ZstdError as exc:
        raise BadRequest(f"invalid zstd request body: {exc}") from None
    raise BadRequest("invalid zstd request body: it ends inside a frame")
