"""Client model names -> upstream ids: the operator's model map (MODEL_MAPPING_FILE) and the
rules Ollama clients' names need (``:latest``), and the output-token limit a backend's model
list gives (:func:`published_output`). Plain data and pure functions, used by the
configuration, routing and translation alike."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CAPABILITIES = frozenset({"completion", "tools", "insert", "vision", "embedding", "thinking"})


@dataclass(frozen=True, slots=True)
class ModelMeta:
    """Operator-supplied facts about one model (MODEL_MAPPING_FILE)."""

    upstream: str
    context_length: int | None = None
    capabilities: tuple[str, ...] | None = None
    think_style: str | None = None
    # The most output tokens the model allows (max_tokens is lowered to it: translate/chat.py).
    max_output_tokens: int | None = None


class ModelMap:
    """Client-facing names <-> upstream ids, and per-model metadata.

    Ollama names carry a tag (``llama3`` means ``llama3:latest``, contract §1.3); an alias matches
    with or without ``:latest``.
    """

    def __init__(self, entries: Mapping[str, ModelMeta] | None = None) -> None:
        self.entries: dict[str, ModelMeta] = dict(entries or {})
        self._aliases: dict[str, list[str]] = {}
        for alias, meta in self.entries.items():
            if alias != meta.upstream:
                self._aliases.setdefault(meta.upstream, []).append(alias)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def lookup(self, name: str) -> ModelMeta | None:
        meta = self.entries.get(name)
        if meta is None and name.endswith(":latest"):
            meta = self.entries.get(name[:-7])
        if meta is None and ":" not in name:
            meta = self.entries.get(name + ":latest")
        return meta

    def aliases_of(self, upstream_id: str) -> list[str]:
        return self._aliases.get(upstream_id, [])

    def is_alias(self, name: str) -> bool:
        meta = self.lookup(name)
        return meta is not None and meta.upstream != name


def resolve(name: str, model_map: ModelMap, known: Iterable[str] | None = None) -> str:
    """The upstream id for a client's model name.

    An alias wins; then the name itself if the backend lists it; then the name without
    ``:latest``, since clients append the default tag that backends never use.
    """
    meta = model_map.lookup(name)
    if meta is not None:
        return meta.upstream
    if name.endswith(":latest"):
        if known is not None and name in known:
            return name
        return name[:-7]
    return name


def positive_int(value: Any) -> int | None:
    """``value`` if it is a positive JSON integer (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def published_output(entry: Mapping[str, Any] | None) -> int | None:
    """The most output tokens one answer may have, as a backend's ``/v1/models`` entry says:
    OpenRouter's ``top_provider.max_completion_tokens`` (openrouter.ai/docs, models API; null
    when the provider sets none), Groq's ``max_completion_tokens`` (its models API, as
    console.groq.com/docs/models' "max completion tokens"), Anthropic's ``max_tokens`` beside
    ``max_input_tokens`` (its Models API: "maximum value for the max_tokens parameter"), or a
    ``max_output_tokens``. None when it says nothing: LiteLLM's model info (catalog.py) or the
    operator's MAX_OUTPUT_TOKENS applies then."""
    if not entry:
        return None
    provider = entry.get("top_provider")
    top = provider.get("max_completion_tokens") if isinstance(provider, dict) else None
    return (
        positive_int(top)
        or positive_int(entry.get("max_completion_tokens"))
        or positive_int(entry.get("max_output_tokens"))
        # A bare max_tokens is ambiguous (some lists mean the context window by it); Anthropic's
        # entry has max_input_tokens beside it, which says which one it is.
        or (positive_int(entry.get("max_tokens")) if "max_input_tokens" in entry else None)
    )
