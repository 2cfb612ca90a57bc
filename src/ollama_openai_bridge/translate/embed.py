"""``/api/embed`` and ``/api/embeddings`` <-> OpenAI ``/v1/embeddings`` (contract §2.8, §2.9, §4.4).

``/api/embed`` takes a string or a list, answers a 2-D ``embeddings`` array in input order,
L2-normalised as Ollama normalises (routes.go), with ``prompt_eval_count`` and durations.
``/api/embeddings`` (legacy) takes one ``prompt`` and answers only ``{"embedding": [...]}``, not
normalised. Both are one upstream call, however many inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ollama_openai_bridge.errors import BadRequest, TooMany


def embed_inputs(value: Any, max_inputs: int) -> list[str]:
    """The inputs of an ``/api/embed`` request (a string or a list of strings, ollama
    server/routes.go EmbedHandler); ``[]`` means answer locally with no vectors.

    Raises TooMany beyond ``max_inputs`` (EMBED_MAX_INPUTS, counted before anything else),
    BadRequest for another type (Ollama's "invalid input type") or an empty string in a list
    (OpenAI refuses those)."""
    if value is None or value == "":
        return []
    inputs = [value] if isinstance(value, str) else value
    if isinstance(inputs, list) and len(inputs) > max_inputs:
        raise TooMany("input", len(inputs), max_inputs, "EMBED_MAX_INPUTS", "input")
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise BadRequest("invalid input type", param="input")  # Ollama's wording
    for i, text in enumerate(inputs):
        if not text:
            # OpenAI rejects empty strings; name the input rather than relay "'$.input' is invalid"
            raise BadRequest(f"input {i} is an empty string; it cannot be embedded", param="input")
    return inputs


def embeddings_request(model: str, inputs: list[str], dimensions: int | None) -> dict[str, Any]:
    """OpenAI's embeddings body. ``dimensions`` 0, negative or None: the model's own (Ollama
    cuts only for a positive one, server/routes.go)."""
    payload: dict[str, Any] = {"model": model, "input": inputs, "encoding_format": "float"}
    if dimensions is not None and dimensions > 0:  # Ollama ignores 0 and below (routes.go)
        payload["dimensions"] = dimensions
    return payload


def _vectors(resp: Mapping[str, Any], expected: int) -> list[list[float]]:
    data = resp.get("data")
    if not isinstance(data, list) or len(data) != expected:
        raise ValueError(
            f"expected {expected} embeddings, got {len(data) if isinstance(data, list) else 0}"
        )
    # OpenAI returns them in order with an index; sort anyway, some servers do not keep order.
    items = sorted(data, key=lambda d: d.get("index", 0)) if expected > 1 else data
    vectors = [item.get("embedding") for item in items]
    if not all(isinstance(v, list) for v in vectors):
        raise ValueError("an embedding is not a list of numbers (encoding_format float ignored?)")
    return vectors


def normalise(vector: list[float]) -> list[float]:
    """L2-normalise. OpenAI's vectors already have unit length: those are returned unchanged."""
    norm = math.hypot(*vector)
    if norm == 0 or abs(norm - 1.0) < 1e-6:
        return vector
    return [x / norm for x in vector]


def shorten(vector: list[float], dimensions: int | None) -> list[float]:
    """``vector`` L2-normalised, then cut to its first ``dimensions`` and normalised again when
    longer: what Ollama does for ``dimensions`` (EmbedHandler, server/routes.go), and what
    Matryoshka-trained models (text-embedding-3-*) are meant for. A backend that refused
    ``dimensions`` (it was not sent) answers full-length vectors: they are cut here."""
    vector = normalise(vector)
    if dimensions and 0 < dimensions < len(vector):
        vector = normalise(vector[:dimensions])
    return vector


def embed_response(
    resp: Mapping[str, Any],
    model: str,
    count: int,
    total_ns: int,
    dimensions: int | None = None,
    load_ns: int = 0,
) -> dict[str, Any]:
    """An OpenAI embeddings answer -> Ollama's ``/api/embed`` body (api/types.go EmbedResponse):
    ``total_duration`` and ``load_duration`` (arrival to now / to the request leaving, in
    nanoseconds) and ``prompt_eval_count``, always: the Vercel AI SDK's Ollama provider
    (ollama-ai-provider-v2, ollama-embedding-model.ts) requires all three as numbers and refuses
    the answer without them. Ollama's counts are never 0 for a real input; a backend that
    reports no usage gives 0 here (the count is unknown, and nothing is made up)."""
    usage = resp.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, Mapping) else None
    return {
        "model": model,
        "embeddings": [shorten(v, dimensions) for v in _vectors(resp, count)],
        "total_duration": total_ns,
        "load_duration": max(load_ns, 1),
        "prompt_eval_count": tokens if type(tokens) is int and tokens > 0 else 0,
    }


def embeddings_response(resp: Mapping[str, Any]) -> dict[str, Any]:
    return {"embedding": _vectors(resp, 1)[0]}
