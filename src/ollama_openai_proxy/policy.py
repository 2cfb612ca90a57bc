"""What an operator can tune in the translation, as plain frozen data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# How a backend is told to reason or not (translate/think.py): OpenAI's reasoning_effort,
# OpenRouter's reasoning object, vLLM/SGLang's chat_template_kwargs, or nothing.
THINK_STYLES = ("reasoning_effort", "openrouter", "chat_template_kwargs", "none")


@dataclass(frozen=True, slots=True)
class Policy:
    """Settings that apply to every request."""

    # Ollama option name -> upstream parameter name, sent as-is (PASSTHROUGH_OPTIONS).
    passthrough: Mapping[str, str] = field(default_factory=dict)
    # max_tokens for /v1/completions when the client sets no num_predict: legacy completion
    # endpoints (OpenAI, vLLM) default to 16 tokens, Ollama to "until done".
    completions_max_tokens: int = 2048


@dataclass(frozen=True, slots=True)
class Target:
    """The upstream model a request goes to, and what we know of it."""

    model: str
    think_style: str = "reasoning_effort"
    thinking: bool = False  # known to support reasoning
