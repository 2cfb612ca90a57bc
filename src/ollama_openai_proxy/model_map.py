"""Client model names -> upstream ids: the operator's model map (MODEL_MAPPING_FILE) and the
rules Ollama clients' names need (``:latest``). Plain data and pure functions, used by the
configuration, routing and translation alike."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CAPABILITIES = frozenset({"completion", "tools", "insert", "vision", "embedding", "thinking"})


@dataclass(frozen=True, slots=True)
class ModelMeta:
    """Operator-supplied facts about one model (MODEL_MAPPING_FILE)."""

    upstream: str
    context_length: int | None = None
    capabilities: tuple[str, ...] | None = None
    think_style: str | None = None


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
