"""Rule sets for hosted open-model platforms: OpenRouter, Together AI, Fireworks AI.

Each routes one OpenAI-compatible API to many models, so what is accepted depends on the model:
whether it reasons, whether that can be switched off, which reasoning efforts it takes. Every rule
names its source next to it: "documented" is the platform's docs, "observed" a public report
quoting its answer; where neither gave the exact wording the message is marked "wording assumed".
"""

from __future__ import annotations

from typing import Any

from tests.backends.fake import Refusal, Request, RuleSet, openai_error
from tests.fake_upstream import CHAT_PARAMS

# --- OpenRouter (openrouter.ai/api/v1) --------------------------------------------------------

OPENROUTER_R1 = "deepseek/deepseek-r1"  # reasoning is mandatory
OPENROUTER_QWEN3 = "qwen/qwen3-14b"  # reasons by default, can be switched off
OPENROUTER_PLAIN = "openai/gpt-4o-mini"
# Observed (dendrux/dendrux#44, sampling the live /models): entries carry supported_parameters
# and a reasoning object; deepseek/deepseek-r1 {"mandatory": true}, qwen/qwen3-14b {"mandatory":
# false}. The parameter lists here are abridged.
_REASONING_PARAMS = ["max_tokens", "temperature", "top_p", "reasoning", "include_reasoning"]
OPENROUTER_ENTRIES: dict[str, dict[str, Any]] = {
    OPENROUTER_R1: {
        "context_length": 163840,
        "supported_parameters": _REASONING_PARAMS,
        "reasoning": {"mandatory": True},
    },
    OPENROUTER_QWEN3: {
        "context_length": 40960,
        "supported_parameters": [*_REASONING_PARAMS, "tools", "tool_choice", "top_k"],
        "reasoning": {"mandatory": False},
    },
    OPENROUTER_PLAIN: {
        "context_length": 128000,
        "supported_parameters": ["max_tokens", "temperature", "tools", "response_format", "seed"],
    },
}
# Documented (openrouter.ai/docs/use-cases/reasoning-tokens; the SDKs' ReasoningEffort): the
# effort levels the reasoning object takes.
OPENROUTER_EFFORTS = ("xhigh", "high", "medium", "low", "minimal", "none")


def _openrouter_error(message: str, status: int = 400, **metadata: Any) -> Refusal:
    # Documented (openrouter.ai/docs/api-reference/errors): {"error": {"code", "message",
    # "metadata"?}}, the HTTP status equal to error.code.
    error: dict[str, Any] = {"message": message, "code": status}
    if metadata:
        error["metadata"] = metadata
    return Refusal(status, {"error": error})


def openrouter_reasoning(req: Request) -> Refusal | None:
    reasoning = req.params.get("reasoning")
    if not isinstance(reasoning, dict):
        return None
    if "effort" in reasoning and "max_tokens" in reasoning:
        # Observed: omeryasirkucuk/amx#66 (400, code 400, no metadata), though the docs only say
        # "one of the following (not both)".
        return _openrouter_error(
            'Only one of "reasoning.effort" and "reasoning.max_tokens" can be specified'
        )
    effort = reasoning.get("effort")
    if effort is not None and effort not in OPENROUTER_EFFORTS:
        return _openrouter_error(f"Invalid reasoning effort: {effort}")  # wording assumed
    off = reasoning.get("enabled") is False or effort == "none"
    mandatory = OPENROUTER_ENTRIES.get(req.model, {}).get("reasoning", {}).get("mandatory")
    if off and mandatory:
        # Observed: musistudio/claude-code-router#1238 (with metadata provider_name null),
        # elie222/rakazo#114 ({"enabled": false} -> 400, {"effort": "low"} -> 200),
        # earendil-works/pi#8454 ({"effort": "none"}).
        return _openrouter_error(
            "Reasoning is mandatory for this endpoint and cannot be disabled.",
            provider_name=None,
        )
    return None


def openrouter_thinks(req: Request) -> bool:
    entry = OPENROUTER_ENTRIES.get(req.model, {})
    if "reasoning" not in entry.get("supported_parameters", ()):
        return False  # a reasoning object is ignored by models that cannot reason
    if entry.get("reasoning", {}).get("mandatory"):
        return True
    # Documented (reasoning-tokens): "enabled" is inferred from effort or max_tokens; without a
    # reasoning object the model's default applies (qwen3 reasons, dendrux/dendrux#44).
    reasoning = req.params.get("reasoning")
    if not isinstance(reasoning, dict):
        return True
    return not (reasoning.get("enabled") is False or reasoning.get("effort") == "none")


def openrouter_style(req: Request) -> str:
    # Documented (reasoning-tokens): reasoning comes in the message's (and delta's) `reasoning`
    # field unless reasoning.exclude is true.
    reasoning = req.params.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("exclude") is True:
        return "hidden"
    return "reasoning"


def _openrouter_unknown_model(model: str) -> Refusal:
    return _openrouter_error(f"{model} is not a valid model ID")  # wording assumed


OPENROUTER = RuleSet(
    name="openrouter",
    summary="the reasoning object; mandatory reasoning cannot be disabled; usage always sent",
    models=(OPENROUTER_R1, OPENROUTER_QWEN3, OPENROUTER_PLAIN),
    base_path="/api/v1",
    # Parameters a model does not support are ignored, not refused (documented:
    # openrouter.ai/docs/api-reference/parameters), so the checks are about reasoning only.
    chat_checks=(openrouter_reasoning,),
    thinks=openrouter_thinks,
    reasoning=openrouter_style,
    # Documented (openrouter.ai/docs/use-cases/usage-accounting): usage is "included in the last
    # SSE message" of every stream; stream_options.include_usage is deprecated and has no effect.
    stream_usage="last",
    # Documented (openrouter.ai/docs/api-reference/streaming): SSE comments keep the connection
    # alive, ": OPENROUTER PROCESSING".
    stream_comments=("OPENROUTER PROCESSING",),
    model_entries=OPENROUTER_ENTRIES,
    unknown_model=_openrouter_unknown_model,
)

# --- Together AI (api.together.xyz/v1) ----------------------------------------------------------

TOGETHER_R1 = "deepseek-ai/DeepSeek-R1"  # reasoning only
TOGETHER_HYBRID = "Qwen/Qwen3.5-9B"  # hybrid, on by default
TOGETHER_GPT_OSS = "openai/gpt-oss-20b"  # adjustable effort
TOGETHER_PLAIN = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
# Documented (docs.together.ai/docs/inference/chat/reasoning): "Adjustable effort: supports the
# reasoning_effort parameter ... ("low", "medium", or "high")"; UKGovernmentBEIS/inspect_ai#4708
# clamps other values because Together's schema takes only these.
TOGETHER_EFFORTS = ("low", "medium", "high")


def together_effort(req: Request) -> Refusal | None:
    effort = req.params.get("reasoning_effort")
    if effort is not None and effort not in TOGETHER_EFFORTS:
        # Shape observed (harshitv804/LawGPT#4: OpenAI's error object); wording assumed.
        return openai_error(
            f"reasoning_effort must be one of {', '.join(TOGETHER_EFFORTS)}", "reasoning_effort"
        )
    return None


def together_thinks(req: Request) -> bool:
    # Documented (same page): "Reasoning only: always produces reasoning tokens. Cannot be toggled
    # off"; "Hybrid: ... reasoning={"enabled": True/False}" (on by default for Qwen3.5).
    if req.model in (TOGETHER_R1, TOGETHER_GPT_OSS):
        return True
    if req.model == TOGETHER_HYBRID:
        reasoning = req.params.get("reasoning")
        return not (isinstance(reasoning, dict) and reasoning.get("enabled") is False)
    return False


TOGETHER = RuleSet(
    name="together",
    summary="reasoning in the `reasoning` field; reasoning_effort low|medium|high; samplers",
    models=(TOGETHER_R1, TOGETHER_HYBRID, TOGETHER_GPT_OSS, TOGETHER_PLAIN),
    # top_k, min_p and repetition_penalty are its own parameters (documented: the chat
    # completions API reference); unknown fields are not known to be refused (FlowiseAI/
    # Flowise#2866: stream_options worked on Together while Fireworks refused it).
    chat_checks=(together_effort,),
    thinks=together_thinks,
    # Documented (same page): "a separate reasoning field alongside content".
    reasoning=lambda _: "reasoning",
)

# --- Fireworks AI (api.fireworks.ai/inference/v1) ---------------------------------------------

FIREWORKS_QWEN3 = "accounts/fireworks/models/qwen3-235b-a22b"
FIREWORKS_R1 = "accounts/fireworks/models/deepseek-r1-0528"
FIREWORKS_PLAIN = "accounts/fireworks/models/llama-v3p3-70b-instruct"
# OpenAI's parameters and Fireworks' own (documented: docs.fireworks.ai/api-reference/
# post-chatcompletions; the extensions ReqLLM's Fireworks provider lists: prompt_truncate_len,
# min_p, repetition_penalty, typical_p, mirostat_*, prompt_cache_*, perf_metrics_in_response,
# raw_output, speculation...; guides/reasoning: the Anthropic-style `thinking`).
FIREWORKS_PARAMS = CHAT_PARAMS | {
    "top_k",
    "min_p",
    "typical_p",
    "repetition_penalty",
    "mirostat_target",
    "mirostat_lr",
    "prompt_truncate_len",
    "context_length_exceeded_behavior",
    "echo",
    "raw_output",
    "perf_metrics_in_response",
    "prompt_cache_key",
    "prompt_cache_isolation_key",
    "safe_tokenization",
    "speculation",
    "thinking",
}
# Documented (guides/reasoning, interleaved thinking): assistant turns may carry
# reasoning_content back.
FIREWORKS_MESSAGE_FIELDS = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content"}
)
# Reasoning levels across its models (ReqLLM: none, low, medium, high, xhigh, max; a Fireworks
# extension also takes booleans, true = medium -- quoted in bubblelabai/BubbleLab#360).
FIREWORKS_EFFORTS = ("none", "low", "medium", "high", "xhigh", "max")


def _fireworks_error(message: str, param: str | None = None) -> Refusal:
    # Observed (nullclaw/nullclaw#231, 2026): {"error": {"message", "param", "code":
    # "BAD_REQUEST", "type": "error"}}.
    return Refusal(
        400, {"error": {"message": message, "param": param, "code": "BAD_REQUEST", "type": "error"}}
    )


def _extra(field: str, value: Any) -> Refusal:
    # Observed: web-infra-dev/midscene#1322 (2025: "Extra inputs are not permitted, field:
    # 'vl_high_resolution_images', value: True."), FlowiseAI/Flowise#2866 (2024, then for
    # stream_options, which it takes now: langchain-ai/langchain#36977). The value is Python's
    # repr, as in those reports; the error object's shape is assumed to be the one above.
    return _fireworks_error(f"Extra inputs are not permitted, field: '{field}', value: {value!r}.")


def fireworks_fields(req: Request) -> Refusal | None:
    for key, value in req.params.items():
        if key not in FIREWORKS_PARAMS:
            return _extra(key, value)
    for i, m in enumerate(req.messages()):
        for key, value in m.items():
            if key not in FIREWORKS_MESSAGE_FIELDS:
                # Observed: microsoft/vscode#335780 (messages[2].cot_id refused); wording as above.
                return _extra(f"messages[{i}].{key}", value)
    return None


def fireworks_rules(req: Request) -> Refusal | None:
    p = req.params
    max_tokens = p.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens > 4096 and not p.get("stream"):
        # Observed: nullclaw/nullclaw#231, nextlevelbuilder/goclaw#660 (streams take any value).
        return _fireworks_error(
            "Requests with max_tokens > 4096 must have stream=true", "max_tokens"
        )
    if p.get("response_format") and p.get("tools"):
        # Observed: umbraco/Umbraco.AI#137; shape assumed.
        return _fireworks_error(
            "You cannot specify response format and function call at the same time"
        )
    effort = p.get("reasoning_effort")
    if effort is not None and not isinstance(effort, bool) and effort not in FIREWORKS_EFFORTS:
        return _fireworks_error(
            f"Invalid reasoning_effort: {effort}", "reasoning_effort"
        )  # assumed
    return None


def fireworks_thinks(req: Request) -> bool:
    if req.model == FIREWORKS_R1:
        return True
    if req.model != FIREWORKS_QWEN3:
        return False
    # Quoted from Fireworks' docs in bubblelabai/BubbleLab#360: "none" (or false) disables
    # reasoning on the models that can stop.
    return req.params.get("reasoning_effort") not in ("none", False)


def fireworks_style(req: Request) -> str:
    # Documented (guides/reasoning): reasoning is the `reasoning_content` field, "for some models,
    # the reasoning content may instead be included directly in the content field itself". Which
    # ones is not said; this fake shows deepseek-r1 that way to exercise the tags.
    return "tags" if req.model == FIREWORKS_R1 else "reasoning_content"


FIREWORKS = RuleSet(
    name="fireworks",
    summary="unknown fields refused; max_tokens > 4096 needs stream; reasoning_content",
    models=(FIREWORKS_QWEN3, FIREWORKS_R1, FIREWORKS_PLAIN),
    base_path="/inference/v1",
    chat_checks=(fireworks_fields, fireworks_rules),
    thinks=fireworks_thinks,
    reasoning=fireworks_style,
)

RULE_SETS = (OPENROUTER, TOGETHER, FIREWORKS)
