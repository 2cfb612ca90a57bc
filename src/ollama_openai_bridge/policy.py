"""What an operator can tune in the translation, as plain frozen data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ollama_openai_bridge.profiles import DEFAULT, THINK_STYLES, BackendProfile, Family

__all__ = ["THINK_STYLES", "Policy", "Target"]


@dataclass(frozen=True, slots=True)
class Policy:
    """Settings that apply to every request."""

    # Ollama option name -> upstream parameter name, sent as-is (PASSTHROUGH_OPTIONS).
    passthrough: Mapping[str, str] = field(default_factory=dict)
    # max_tokens for /v1/completions when the client sets no num_predict: legacy completion
    # endpoints (OpenAI, vLLM) default to 16 tokens, Ollama to "until done".
    completions_max_tokens: int = 2048
    # How this upstream's backend wants requests shaped (profiles.py).
    profile: BackendProfile = DEFAULT
    # Fields the operator adds to every request body sent to this upstream (extra_body).
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    # The most output tokens a request may ask for when the model's own limit is unknown
    # (MAX_OUTPUT_TOKENS, or the upstream's max_output_tokens in UPSTREAMS_FILE); None: no cap.
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """The upstream model a request goes to, and what we know of it."""

    model: str
    think_style: str = "reasoning_effort"
    thinking: bool = False  # known to support reasoning
    efforts: tuple[str, ...] = ("low", "medium", "high")  # reasoning_effort values it takes
    think_off: Mapping[str, Any] | None = None  # body fields that switch its reasoning off
    family: Family | None = None  # its family in the backend profile, if one matched
    # Parameters this backend refused for this model before, per (endpoint path, reasoning on):
    # name -> (the name it wants or None to leave it out, expiry) -- refusals.Refusals, learned
    # by exchange.adapt, applied by translate/shape.py.
    learned: Mapping[tuple[str, bool], Mapping[str, tuple[str | None, float]]] | None = None
    # The most output tokens the model allows, and who says so (for the DEBUG log): the
    # operator's MODEL_MAPPING_FILE or the backend's model list (Context.target).
    max_output: int | None = None
    max_output_from: str = ""

    @classmethod
    def of(
        cls,
        model: str,
        profile: BackendProfile,
        *,
        style: str = "auto",
        thinking: bool = False,
        listed: bool = False,
        learned: Mapping[tuple[str, bool], Mapping[str, tuple[str | None, float]]] | None = None,
        max_output: tuple[int, str] | None = None,
    ) -> Target:
        """The target ``model`` on a backend of ``profile``. ``style``: the operator's
        THINK_STYLE (or the mapping file's), ``auto`` for the profile's. ``thinking``: what the
        model list or the mapping file says of it; ``listed``: the mapping file lists its
        capabilities, which then win over the profile's model family. ``learned``: what the
        backend refused for this model before. ``max_output``: the model's output-token limit
        and where it comes from, when known."""
        family = profile.family(model)
        if style == "auto":
            style = (family.think if family else None) or profile.think
        if family is not None and family.thinking is not None and not listed:
            thinking = family.thinking
        elif not listed:
            thinking = thinking or profile.assume_thinking
        think_off = profile.think_off
        if family is not None and family.think_off is not None:
            think_off = family.think_off
        efforts = (family.efforts if family else None) or profile.efforts
        limit, source = max_output or (None, "")
        return cls(model, style, thinking, efforts, think_off, family, learned, limit, source)
