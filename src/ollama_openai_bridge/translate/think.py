"""Ollama ``think`` -> the backend's reasoning controls.

The style comes from the upstream's backend profile (profiles.py), unless the operator chose one
(``THINK_STYLE``, or per model in the mapping file):

* ``reasoning_effort`` -- OpenAI, Azure, Gemini, Ollama's /v1, LiteLLM: ``reasoning_effort``.
  Sent only to models known to think: OpenAI answers 400 to it on other models, and clients send
  ``think`` freely (n8n's Ollama Chat Model defaults it to true when the option is added).
* ``openrouter`` -- OpenRouter's ``reasoning`` object, which can also switch thinking off.
* ``chat_template_kwargs`` -- vLLM, SGLang, llama.cpp serving Qwen3/DeepSeek-style templates:
  ``chat_template_kwargs: {"enable_thinking": true|false}``. Always sent: the operator chose it.
* ``thinking`` -- Anthropic: ``thinking: {"type": "enabled", "budget_tokens": N}``.
* ``groq`` -- Groq: ``reasoning_format: "parsed"`` (reasoning in its own field) or ``"hidden"``.
* ``none`` -- nothing is sent.

``think: false`` sends what the model's profile says switches reasoning off (``reasoning_effort:
"none"`` on Ollama and gpt-5.1, ``"minimal"`` on gpt-5); whatever the style, it also removes
reasoning from the answers (stream.py, chat.py). Ollama treats ``true`` as ``medium``, and
``max`` (Ollama 0.22.0) as the strongest level a model has -- ``high`` for a model without more
(server/routes.go, harmony) -- so ``max`` is the strongest level the profile lists for the
model: ``max`` on an Ollama backend, ``xhigh`` on gpt-5.2 and OpenRouter, else ``high``. A level
the model does not take is sent as its nearest one, and said in the DEBUG ``backend_adapted``
log line.
"""

from __future__ import annotations

from typing import Any

from ollama_openai_bridge.policy import Target

# Anthropic's extended thinking budgets per effort; 1,024 is its documented minimum
# (docs.anthropic.com, extended thinking, "budget_tokens").
THINKING_BUDGETS = {
    "minimal": 1024,
    "low": 1024,
    "medium": 4096,
    "high": 16384,
    "xhigh": 32768,
    "max": 32768,
}


_ORDER = ("minimal", "low", "medium", "high", "xhigh", "max")


def _effort(think: bool | str, efforts: tuple[str, ...]) -> str:
    """The level to send: Ollama's (true is medium, max the strongest the model takes), or the
    model's nearest one (Gemini 3 Pro has no medium: true is high there)."""
    effort = "medium" if think is True else str(think)
    levels = [e for e in efforts if e in _ORDER]
    if effort == "max":
        return max(levels, key=_ORDER.index) if levels else "high"
    if effort in efforts or effort not in _ORDER or not levels:
        return effort
    want = _ORDER.index(effort)
    # the nearest level, the higher one on a tie (more reasoning, not less, than asked)
    return min(levels, key=lambda e: (abs(_ORDER.index(e) - want), -_ORDER.index(e)))


def think_params(
    think: bool | str | None,
    target: Target,
    notes: list[str],
    adapted: list[str] | None = None,
) -> dict[str, Any]:
    """Request parameters expressing ``think`` for ``target``'s backend and model family.
    ``notes``: what the client asked for and will not get; ``adapted``: a level sent as another
    (``max`` as ``high``), for the DEBUG log."""
    style = target.think_style
    if think is None or style == "none":
        return {}
    if style == "chat_template_kwargs":
        if isinstance(think, str):
            notes.append(f"think level {think!r} sent as enable_thinking=true (no levels here)")
        return {"chat_template_kwargs": {"enable_thinking": think is not False}}
    if think is False:
        if not target.thinking:
            return {}
        if target.think_off is not None:
            return dict(target.think_off)
        if style == "openrouter":
            return {"reasoning": {"enabled": False}}
        if style == "groq":
            return {"reasoning_format": "hidden"}
        return {}
    if not target.thinking:
        notes.append("think requested for a model not known to think; no reasoning parameter sent")
        return {}
    effort = _effort(think, target.efforts)
    asked = "medium" if think is True else think
    if effort != asked and adapted is not None and style != "groq":  # groq: no levels
        adapted.append(
            f"think {asked!r} sent as {effort!r}, the "
            + ("strongest" if asked == "max" else "nearest")
            + " level this backend takes for this model"
        )
    if style == "openrouter":
        return {"reasoning": {"effort": effort}}
    if style == "thinking":
        budget = THINKING_BUDGETS.get(effort, THINKING_BUDGETS["medium"])
        return {"thinking": {"type": "enabled", "budget_tokens": budget}}
    if style == "groq":
        return {"reasoning_format": "parsed"}
    return {"reasoning_effort": effort}
