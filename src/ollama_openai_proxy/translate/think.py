"""Ollama ``think`` -> the backend's reasoning controls.

Backends differ, so the operator picks a style (``THINK_STYLE``, or per model in the mapping file):

* ``reasoning_effort`` -- OpenAI, Azure, OpenRouter, LiteLLM: ``reasoning_effort: low|medium|high``.
  Sent only to models known to think: OpenAI answers 400 to it on other models, and clients send
  ``think`` freely (n8n's Ollama Chat Model defaults it to true when the option is added).
* ``openrouter`` -- OpenRouter's ``reasoning`` object, which can also switch thinking off.
* ``chat_template_kwargs`` -- vLLM and SGLang serving Qwen3/DeepSeek-style templates:
  ``chat_template_kwargs: {"enable_thinking": true|false}``. Always sent: the operator chose it.
* ``none`` -- nothing is sent.

Whatever the style, ``think: false`` also removes reasoning from the answers (stream.py, chat.py).
Ollama treats ``true`` as ``medium`` and maps ``max`` to ``high`` for models without a max level
(api/types.go); we do the same.
"""

from __future__ import annotations

from typing import Any


def _effort(think: bool | str) -> str:
    if think is True:
        return "medium"
    return "high" if think == "max" else str(think)


def think_params(
    think: bool | str | None, style: str, capable: bool, notes: list[str]
) -> dict[str, Any]:
    """Request parameters expressing ``think`` for a backend of ``style``."""
    if think is None or style == "none":
        return {}
    if style == "chat_template_kwargs":
        if isinstance(think, str):
            notes.append(f"think level {think!r} sent as enable_thinking=true (no levels here)")
        return {"chat_template_kwargs": {"enable_thinking": think is not False}}
    if think is False:
        return {"reasoning": {"enabled": False}} if style == "openrouter" and capable else {}
    if not capable:
        notes.append("think requested for a model not known to think; no reasoning parameter sent")
        return {}
    if style == "openrouter":
        return {"reasoning": {"effort": _effort(think)}}
    return {"reasoning_effort": _effort(think)}
