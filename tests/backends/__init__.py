"""Fakes of real OpenAI-compatible backends, each enforcing its documented rules (issue #15).

``backend("mistral")`` is a started-on-demand :class:`FakeBackend` that refuses what Mistral
refuses, in Mistral's status and error shape, and answers the rest like Mistral. The rule sets:

=========================  ======================================================================
openai                     gpt-4o family: JSON mode needs "json" in a message; no reasoning_effort
openai-reasoning           o-series/gpt-5: max_completion_tokens only, default sampling, efforts
embeddings-no-dimensions   text-embedding-ada-002 refuses ``dimensions``
azure-classic              /openai/deployments/{d}/...?api-version=..., ``api-key`` header
azure-v1                   /openai/v1/..., ``api-key`` or Bearer, ``model`` = deployment
mistral                    422 extra_forbidden: ``random_seed`` not ``seed``, no stream_options
groq                       ``<think>`` tags or ``reasoning`` (reasoning_format), effort none|default
gemini                     streamed tool calls without ``index``; effort none|low|medium|high
deepseek                   ``reasoning_content``; thinking-mode tool turns must send it back
anthropic-compat           reasoning_effort ignored; ``thinking.budget_tokens`` >= 1024
lmstudio                   response_format.type json_schema or text only
llamacpp / llamacpp-raw    ``reasoning_content`` / ``<think>`` tags (--reasoning-format)
ollama-v1                  ``reasoning`` field; reasoning_effort "none" stops thinking
strict-unknown[-legacy|-vllm|-litellm]  refuses ``parallel_tool_calls``, in four wordings
openrouter                 the ``reasoning`` object; mandatory reasoning cannot be switched off
together                   ``reasoning`` field; reasoning_effort low|medium|high; samplers taken
fireworks                  unknown fields refused; max_tokens > 4096 only when streaming
vllm / vllm-raw            ``reasoning`` field / ``<think>`` tags (--reasoning-parser or not)
sglang / sglang-raw        ``reasoning_content`` / ``<think>`` tags (--reasoning-parser or not)
tgi                        response_format needs ``value``; top_p in (0, 1); 422s
=========================  ======================================================================
"""

from __future__ import annotations

from tests.backends import engines, hosted, local, openai_family, platforms
from tests.backends.fake import FakeBackend, Refusal, Request, RuleSet, serving

RULE_SETS: dict[str, RuleSet] = {
    rs.name: rs
    for rs in (
        *openai_family.RULE_SETS,
        *hosted.RULE_SETS,
        *platforms.RULE_SETS,
        *local.RULE_SETS,
        *engines.RULE_SETS,
    )
}


def backend(name: str, api_key: str = "sk-test-upstream") -> FakeBackend:
    """A FakeBackend for the rule set ``name`` (call ``.start()``, or use :func:`serving`)."""
    return FakeBackend(RULE_SETS[name], api_key)


__all__ = ["RULE_SETS", "FakeBackend", "Refusal", "Request", "RuleSet", "backend", "serving"]
