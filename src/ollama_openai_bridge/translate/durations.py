"""The metrics of a final answer line, as Ollama reports them (api/types.go ``Metrics``): token
counts from the backend's usage, durations in integer nanoseconds measured here. Shared by the
streamed (stream.py) and unstreamed (chat.py, embed.py) answers, so both report alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def metrics(
    usage: Mapping[str, Any] | None,
    total_ns: int,
    prompt_eval_ns: int = 0,
    eval_ns: int = 0,
    load_ns: int = 0,
) -> dict[str, int]:
    """Final-line metrics, in Ollama's order (api/types.go Metrics), durations in nanoseconds.
    Zero values are omitted, as Ollama's ``omitempty`` does; ``load_ns`` -- arrival to the
    request leaving for the backend, the proxy's counterpart of loading the model -- is never
    zero in practice, so ``load_duration`` is always there, as in Ollama's answers."""
    out: dict[str, int] = {}
    if total_ns > 0:
        out["total_duration"] = total_ns
    if load_ns > 0:
        out["load_duration"] = load_ns
    if usage:
        prompt_tokens = usage.get("prompt_tokens")
        if type(prompt_tokens) is int and prompt_tokens > 0:  # not a bool: it would relay true
            out["prompt_eval_count"] = prompt_tokens
    if prompt_eval_ns > 0:
        out["prompt_eval_duration"] = prompt_eval_ns
    if usage:
        completion_tokens = usage.get("completion_tokens")
        if type(completion_tokens) is int and completion_tokens > 0:
            out["eval_count"] = completion_tokens
    if eval_ns > 0:
        out["eval_duration"] = eval_ns
    return out
