"""Ollama ``images`` (raw base64, no MIME type) -> OpenAI ``image_url`` data URLs."""

from __future__ import annotations

import binascii

from ollama_openai_proxy.errors import BadRequest

# The base64 of each format's magic bytes (contract §4.1): PNG \x89PNG, JPEG \xff\xd8\xff,
# GIF "GIF8", WebP "RIFF"...."WEBP".
_SIGNATURES = (
    ("iVBORw0KGgo", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
)


def sniff_mime(b64: str) -> str:
    for prefix, mime in _SIGNATURES:
        if b64.startswith(prefix):
            return mime
    # Ollama accepts any format its vision encoder can read; JPEG is the safe guess.
    return "image/jpeg"


def data_url(image: str) -> str:
    """A ``data:`` URL for one Ollama image; already-prefixed data URLs pass through."""
    if image.startswith("data:"):
        return image
    b64 = image.strip()
    try:
        # Strict, like Go's base64.StdEncoding that Ollama decodes images with: padding required,
        # no characters outside the alphabet. C speed: ~1 ms per MB.
        binascii.a2b_base64(b64, strict_mode=True)
    except binascii.Error as exc:
        raise BadRequest(f"invalid image: not valid base64 data ({exc})") from None
    return f"data:{sniff_mime(b64)};base64,{b64}"
