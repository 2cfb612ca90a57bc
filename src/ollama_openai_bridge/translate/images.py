"""Ollama ``images`` (raw base64, no MIME type) -> OpenAI ``image_url`` data URLs."""

from __future__ import annotations

import binascii
import re

from ollama_openai_bridge.errors import BadRequest

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


_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,")


def data_url(image: str, where: str = "images") -> str:
    """A ``data:`` URL for one Ollama image (raw base64); an image's base64 data URL (which
    Ollama itself would refuse) passes through once its data is checked. ``where`` names the
    image in the request (``messages.0.images.1``) for the error.

    Raises BadRequest if the image is empty or not base64 -- any character outside the alphabet
    (white space and non-ASCII included) or wrong padding -- as Ollama's decoder (Go's
    base64.StdEncoding) refuses it, or a data: URL of something else."""
    prefix = _DATA_URL.match(image) if image.startswith("data:") else None
    if image.startswith("data:") and prefix is None:
        raise BadRequest(
            f"invalid image at {where}: a data: URL must be data:image/<type>;base64,<data>",
            param=where,
        )
    b64 = image[prefix.end() :] if prefix else image
    if not b64:
        # Go would decode it to no bytes, which no vision encoder reads.
        raise BadRequest(f"invalid image at {where}: empty", param=where)
    try:
        # Strict, like Go's base64.StdEncoding that Ollama decodes images with: padding required,
        # no characters outside the alphabet. C speed: ~1 ms per MB. A non-ASCII character is a
        # ValueError, not binascii.Error (its subclass).
        binascii.a2b_base64(b64, strict_mode=True)
    except ValueError as exc:
        raise BadRequest(
            f"invalid image at {where}: not valid base64 data ({exc})", param=where
        ) from None
    return image if prefix else f"data:{sniff_mime(b64)};base64,{b64}"


def check_images(images: list[str], where: str) -> None:
    """Validate images that are not sent on (a non-user message's, a raw prompt's): a request
    is refused for an invalid image whatever becomes of it. Raises as :func:`data_url`."""
    for i, image in enumerate(images):
        data_url(image, f"{where}.{i}")
