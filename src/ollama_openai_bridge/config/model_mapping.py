"""MODEL_MAPPING_FILE read and checked: a JSON object of alias -> upstream model id, or alias ->
``{model, context_length, capabilities, think_style, max_output_tokens}`` (docs/CONFIGURATION.md,
"Model mapping file"), as the plain :class:`~ollama_openai_bridge.model_map.ModelMap` that
routing and translation use. The file is read here, not in model_map.py, so that the module
translate/ imports reads no file."""

from __future__ import annotations

from pathlib import Path

import orjson

from ollama_openai_bridge.config.parsing import ConfigError
from ollama_openai_bridge.model_map import CAPABILITIES, ModelMap, ModelMeta
from ollama_openai_bridge.policy import THINK_STYLES


def load_model_map(path: Path) -> ModelMap:
    """The mapping file at ``path`` as a ModelMap (an alias given as a bare string maps to that
    upstream id, with no other facts). Raises ConfigError naming the file, and the entry when
    one is wrong: unreadable or non-JSON text, not an object, an empty ``model``, a
    ``context_length`` or ``max_output_tokens`` that is not a positive integer, an unknown
    capability or ``think_style``."""
    try:
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"MODEL_MAPPING_FILE {path}: cannot read JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"MODEL_MAPPING_FILE {path}: must be a JSON object of alias -> model")
    entries: dict[str, ModelMeta] = {}
    for alias, value in raw.items():
        where = f"MODEL_MAPPING_FILE {path}: entry {alias!r}"
        if isinstance(value, str) and value:
            entries[alias] = ModelMeta(upstream=value)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be an upstream model id or an object")
        upstream = value.get("model", alias)
        ctx = value.get("context_length")
        caps = value.get("capabilities")
        think = value.get("think_style")
        if think is not None and think not in THINK_STYLES:
            raise ConfigError(f"{where}: 'think_style' must be one of {list(THINK_STYLES)}")
        if not isinstance(upstream, str) or not upstream:
            raise ConfigError(f"{where}: 'model' must be a non-empty string")
        for key in ("context_length", "max_output_tokens"):
            n = value.get(key)
            if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n <= 0):
                raise ConfigError(f"{where}: {key!r} must be a positive integer")
        if caps is not None and (
            not isinstance(caps, list) or not all(c in CAPABILITIES for c in caps)
        ):
            raise ConfigError(f"{where}: 'capabilities' must be a list of {sorted(CAPABILITIES)}")
        entries[alias] = ModelMeta(
            upstream,
            ctx,
            tuple(caps) if caps is not None else None,
            think,
            value.get("max_output_tokens"),
        )
    return ModelMap(entries)
