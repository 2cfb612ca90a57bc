"""What an operator can tune in the translation, as plain frozen data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Policy:
    # Ollama option name -> upstream parameter name, sent as-is (PASSTHROUGH_OPTIONS).
    passthrough: Mapping[str, str] = field(default_factory=dict)
