"""Backend profiles: how each OpenAI-compatible backend wants a request shaped. Data only.

The translators build the OpenAI reference request; a backend's profile says what that backend
does differently -- parameter names, parameters it refuses, how reasoning is switched on, off and
sized, how JSON output is asked for, whether it takes ``stream_options``, which Ollama options it
takes natively -- and :func:`ollama_openai_bridge.translate.shape.shape` applies it. A profile is
chosen per upstream (``profile:`` in ``UPSTREAMS_FILE``, ``BACKEND_PROFILE``), else detected
from the base URL (:func:`detect`), else ``openai-reference``: the reference request, unchanged.

Each rule names the backend's documentation or the report it answers; docs/BACKENDS.md is the
same table for operators.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

# How reasoning is asked for (translate/think.py):
#   reasoning_effort      OpenAI's "reasoning_effort": low|medium|high (and what a family adds)
#   openrouter            OpenRouter's "reasoning" object, which can also switch it off
#   chat_template_kwargs  vLLM/SGLang/llama.cpp Qwen3-style templates: {"enable_thinking": bool}
#   thinking              Anthropic: {"thinking": {"type": "enabled", "budget_tokens": N}}
#   groq                  Groq: "reasoning_format" parsed|hidden
#   none                  nothing is sent
THINK_STYLES = (
    "reasoning_effort",
    "openrouter",
    "chat_template_kwargs",
    "thinking",
    "groq",
    "none",
)
ThinkStyle = Literal[
    "reasoning_effort", "openrouter", "chat_template_kwargs", "thinking", "groq", "none"
]
# How "format": "json" is asked for:
#   native      response_format {"type": "json_object"}
#   needs_word  the same, but refused unless a message mentions JSON (OpenAI, DeepSeek): a short
#               system instruction is added when none does
#   schema      only json_schema is accepted: {"type": "object"} as the schema (LM Studio)
#   ignored     response_format is accepted and ignored: sent, with a warning
#   instruction no schema-free JSON mode: the instruction only, with a warning (TGI)
JsonMode = Literal["native", "needs_word", "schema", "ignored", "instruction"]
# Where a system message that is not the conversation's first goes (Claude Code ends its first
# request with one; Anthropic's messages, Codex's developer items and Ollama clients may carry one
# anywhere):
#   keep  in place: the API takes system messages anywhere (OpenAI; Anthropic's compatibility
#         layer hoists them itself)
#   fold  into the leading system message, in order: the backend renders the model's own chat
#         template, and those take one system message, first -- Qwen3.5 and later raise "System
#         message must be at the beginning" (vllm-project/vllm#41114, QwenLM/Qwen3.8#244,
#         ollama/ollama#17774), Gemma 3 "Conversation roles must alternate" (vLLM,
#         suitenumerique/conversations#197). Not a user turn with a marker: two user turns in a
#         row break the templates that check alternation (Gemma, Mistral's), and Mistral's API
#         refuses a conversation ending in one that is not user or tool.
SystemTurns = Literal["keep", "fold"]
# Where requests go: OpenAI's <base>/chat/completions with a Bearer key; Azure's classic
# <resource>/openai/deployments/<name>/chat/completions?api-version=... with an api-key header;
# Azure's v1 <resource>/openai/v1/chat/completions with an api-key header.
Layout = Literal["openai", "azure-classic", "azure-v1"]
LAYOUTS = ("openai", "azure-classic", "azure-v1")

_EFFORTS = ("low", "medium", "high")
_REMEMBERED = 4096
# Sampling parameters OpenAI's reasoning models refuse: platform.openai.com/docs/guides/reasoning
# ("unsupported parameters"); microsoft/vscode-copilot-release#8065 (temperature on gpt-5).
_OPENAI_REASONING_REFUSES = frozenset(
    {
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "logprobs",
        "top_logprobs",
        "logit_bias",
    }
)
# What the sampler-rich servers take under these names (vLLM's SamplingParams, SGLang's
# sampling params, Together's and Fireworks' chat APIs): Ollama's option -> their parameter.
_SAMPLERS = {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repetition_penalty"}


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Family:
    """Rules for one backend's models whose id matches ``pattern`` (``re.match``: from the start
    of the id). Unset fields fall back to the profile's."""

    pattern: str
    thinking: bool | None = None  # known to reason (None: as the model list says)
    renames: Mapping[str, str] = field(default_factory=_frozen)
    refuses: frozenset[str] = frozenset()
    efforts: tuple[str, ...] | None = None  # reasoning_effort values these models take
    think_off: Mapping[str, Any] | None = None  # body fields that switch reasoning off
    think: ThinkStyle | None = None
    # ``refuses`` holds only while the model reasons: gpt-5.1 and later take sampling again
    # with reasoning_effort "none", their default (vercel/ai#10932, quoting OpenAI's docs).
    refuses_while_reasoning: bool = False


@dataclass(frozen=True)
class BackendProfile:
    """How one kind of backend wants its requests (see the module docstring)."""

    name: str
    title: str
    hosts: tuple[str, ...] = ()  # host names, or suffixes starting with "."
    renames: Mapping[str, str] = field(default_factory=_frozen)  # reference name -> its name
    refuses: frozenset[str] = frozenset()  # parameters it refuses: not sent
    accepts: frozenset[str] | None = None  # if set, the only fields a chat body may carry
    embed_renames: Mapping[str, str] = field(default_factory=_frozen)  # the same, embeddings
    stream_usage: bool = True  # takes stream_options {"include_usage": true}
    think: ThinkStyle = "reasoning_effort"
    think_off: Mapping[str, Any] | None = None  # body fields that switch reasoning off
    efforts: tuple[str, ...] = _EFFORTS
    # Send reasoning controls to models nothing describes (no family, no capabilities in the
    # model list): where the backend accepts them for any model, or most of its models reason.
    assume_thinking: bool = False
    json_object: JsonMode = "native"
    think_tags: bool = False  # may answer reasoning as <think>...</think> inside content
    # A JSON schema as TGI's grammar, {"type": "json", "value": schema}, not OpenAI's json_schema
    tgi_grammar: bool = False
    top_p_below_one: bool = False  # top_p must be < 1 (1 means no filtering: not sent)
    max_tokens_unstreamed: int | None = None  # the most a non-streamed request may ask for
    nine_char_call_ids: bool = False  # tool-call ids must be 9 letters and digits (Mistral)
    thinking_back: str | None = None  # the field an assistant turn's reasoning goes back in
    # The provider data a replayed tool call of the turn in progress carries when none was kept
    # for it (translate/carry.py): Gemini refuses such a call without a thought signature.
    signature_stand_in: Mapping[str, Any] | None = None
    # Its /v1/completions takes `suffix` (fill-in-the-middle, where /api/generate's suffix goes):
    # the `insert` capability (translate/models.py). True unless its documentation says it has
    # no /v1/completions for chat models, or refuses suffix there.
    fim: bool = True
    system_turns: SystemTurns = "keep"  # non-leading system messages (see SystemTurns)
    options: Mapping[str, str] = field(default_factory=_frozen)  # Ollama option -> parameter
    layout: Layout = "openai"
    families: tuple[Family, ...] = ()
    _compiled: tuple[tuple[re.Pattern[str], Family], ...] = field(
        init=False, repr=False, compare=False
    )
    # Nothing to reshape in a request for a model of no family: the translator's request is
    # this backend's (the per-request shaping is skipped: translate/chat.py, for_backend).
    plain: bool = field(init=False, repr=False, compare=False)

    _found: dict[str, Family | None] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        compiled = tuple((re.compile(f.pattern), f) for f in self.families)
        object.__setattr__(self, "_compiled", compiled)
        plain = (
            not self.renames
            and not self.embed_renames
            and not self.refuses
            and self.accepts is None
            and self.stream_usage
            and self.json_object == "native"
            and self.think != "thinking"  # its budget is checked against max_tokens
            and not self.tgi_grammar
            and not self.top_p_below_one
            and self.max_tokens_unstreamed is None
            and not self.nine_char_call_ids
        )
        object.__setattr__(self, "plain", plain)

    def family(self, model: str) -> Family | None:
        """The first family whose pattern matches the backend's model id, if any (remembered:
        this runs per request; at most :data:`_REMEMBERED` ids, as clients choose names)."""
        found = self._found
        if model in found:
            return found[model]
        fam = next((f for pattern, f in self._compiled if pattern.match(model)), None)
        if len(found) >= _REMEMBERED:
            found.clear()
        found[model] = fam
        return fam


# OpenAI's model families (platform.openai.com/docs/models; /docs/guides/reasoning):
# gpt-5.1 and later take reasoning_effort "none" (and xhigh from 5.2), gpt-5 "minimal" but not
# "none", the o-series low|medium|high only; gpt-5-chat and the gpt-4 family do not reason.
_OPENAI_FAMILIES = (
    Family(r"gpt-5(\.\d+)?-chat", thinking=False),
    Family(
        r"gpt-5\.[2-9]",
        thinking=True,
        refuses=_OPENAI_REASONING_REFUSES,
        efforts=("none", "low", "medium", "high", "xhigh"),
        think_off={"reasoning_effort": "none"},
        refuses_while_reasoning=True,
    ),
    Family(
        r"gpt-5\.1",
        thinking=True,
        refuses=_OPENAI_REASONING_REFUSES,
        efforts=("none", "low", "medium", "high"),
        think_off={"reasoning_effort": "none"},
        refuses_while_reasoning=True,
    ),
    Family(
        r"gpt-5",
        thinking=True,
        refuses=_OPENAI_REASONING_REFUSES,
        efforts=("minimal", "low", "medium", "high"),
        think_off={"reasoning_effort": "minimal"},
    ),
    Family(r"o[1-9]|codex-mini", thinking=True, refuses=_OPENAI_REASONING_REFUSES),
    # 400 "This model does not support specifying dimensions." (only text-embedding-3-* take it,
    # API reference, embeddings/create); the proxy then computes it (translate/embed.py).
    Family(r"text-embedding-ada", thinking=False, refuses=frozenset({"dimensions"})),
    Family(r"gpt-|chatgpt-", thinking=False),
)
# Azure serves the same models; its reasoning models need max_completion_tokens, which older
# api-versions do not know for the others (learn.microsoft.com/azure/ai-foundry/openai/how-to/
# reasoning, "API & feature support"): renamed per family, not for every model.
_AZURE_FAMILIES = tuple(
    replace(
        f, renames=_frozen({"max_tokens": "max_completion_tokens"}) if f.thinking else f.renames
    )
    for f in _OPENAI_FAMILIES
)

PROFILES: Mapping[str, BackendProfile] = MappingProxyType(
    {
        p.name: p
        for p in (
            # What the proxy always sent: the OpenAI reference request, unchanged.
            BackendProfile("openai-reference", "any OpenAI-compatible server (reference request)"),
            BackendProfile(
                "openai",
                "OpenAI",
                hosts=("api.openai.com", ".api.openai.com"),  # eu.api.openai.com too
                # /v1/completions serves only the legacy instruct models, not chat models
                # ("This is a chat model and not supported in the v1/completions endpoint").
                fim=False,
                # max_tokens is deprecated and refused by reasoning models; every chat model
                # takes max_completion_tokens (API reference, chat/create).
                renames=_frozen({"max_tokens": "max_completion_tokens"}),
                json_object="needs_word",  # 400 "'messages' must contain the word 'json'"
                families=_OPENAI_FAMILIES,
            ),
            BackendProfile(
                "azure",
                "Azure OpenAI (deployment URLs, api-version)",
                fim=False,  # as OpenAI: no chat model on /completions
                hosts=(
                    ".openai.azure.com",
                    ".cognitiveservices.azure.com",
                    ".services.ai.azure.com",
                ),
                json_object="needs_word",
                layout="azure-classic",
                families=_AZURE_FAMILIES,
            ),
            BackendProfile(
                "azure-v1",
                "Azure OpenAI v1 API (/openai/v1)",
                fim=False,
                json_object="needs_word",
                layout="azure-v1",
                families=_AZURE_FAMILIES,
            ),
            BackendProfile(
                "openrouter",
                "OpenRouter",
                hosts=("openrouter.ai",),
                think="openrouter",  # openrouter.ai/docs/use-cases/reasoning-tokens
                # reasoning.effort takes xhigh too (same page; its SDKs' ReasoningEffort): the
                # strongest level, Ollama's think "max".
                efforts=("minimal", "low", "medium", "high", "xhigh"),
                # stream_options is accepted and has no effect: usage always comes
                # (openrouter.ai/docs, ChatStreamOptions.include_usage "deprecated").
                stream_usage=False,
            ),
            BackendProfile(
                "groq",
                "Groq",
                hosts=("api.groq.com",),
                fim=False,  # console.groq.com/docs/openai: chat completions only
                # 400 for these (console.groq.com/docs/openai, "unsupported features").
                refuses=frozenset({"logprobs", "top_logprobs", "logit_bias"}),
                think="groq",  # console.groq.com/docs/reasoning: reasoning_format
                think_tags=True,  # reasoning_format "raw" leaves <think> in content
                families=(
                    Family(r"deepseek-r1", thinking=True),
                    # qwen3 switches reasoning off with reasoning_effort "none".
                    Family(r"qwen/qwen3", thinking=True, think_off={"reasoning_effort": "none"}),
                    # gpt-oss takes reasoning_effort, not reasoning_format; include_reasoning
                    # false hides it.
                    Family(
                        r"openai/gpt-oss",
                        thinking=True,
                        think="reasoning_effort",
                        think_off={"include_reasoning": False},
                    ),
                ),
            ),
            BackendProfile(
                "mistral",
                "Mistral AI",
                hosts=("api.mistral.ai", ".mistral.ai"),  # codestral.mistral.ai
                fim=False,  # its FIM is /v1/fim/completions; there is no /v1/completions
                renames=_frozen({"seed": "random_seed"}),  # docs.mistral.ai/api, chat
                # Unknown fields are a 422 extra_forbidden: only the documented ones are sent.
                accepts=frozenset(
                    {
                        "model",
                        "messages",
                        "temperature",
                        "top_p",
                        "max_tokens",
                        "stream",
                        "stop",
                        "random_seed",
                        "response_format",
                        "tools",
                        "tool_choice",
                        "presence_penalty",
                        "frequency_penalty",
                        "n",
                        "prediction",
                        "parallel_tool_calls",
                        "prompt_mode",
                        "safe_prompt",
                    }
                ),
                stream_usage=False,  # usage comes in the last chunk anyway
                think="none",  # Magistral models reason by themselves
                # Embeddings: output_dimension (mistralai/client-python, EmbeddingRequest).
                embed_renames=_frozen({"dimensions": "output_dimension"}),
                # 400 "Tool call id was call_1_0 but must be a-z, A-Z, 0-9, with a length of 9"
                nine_char_call_ids=True,
                # "Expected last role User or Tool (or Assistant with prefix True) for serving
                # but got system" for Claude Code's trailing system turn; a system message after
                # the first turns is refused too (SillyTavern/SillyTavern#1558).
                system_turns="fold",
            ),
            BackendProfile(
                "deepseek",
                "DeepSeek",
                hosts=("api.deepseek.com",),
                # FIM completion is only under the /beta base URL (api-docs.deepseek.com, FIM
                # Completion): list "insert" in MODEL_MAPPING_FILE when OPENAI_API_BASE_URL is it.
                fim=False,
                think="none",  # the model decides: deepseek-chat or deepseek-reasoner
                # "Include the word json in the system or user prompt" (api-docs.deepseek.com,
                # JSON Output).
                json_object="needs_word",
                # Thinking mode with tools: every assistant turn's reasoning_content must come
                # back ("Missing `reasoning_content` field in the assistant message", DeepSeek's
                # thinking-mode docs); the client's `thinking` is it.
                thinking_back="reasoning_content",
                families=(
                    # deepseek-reasoner: logprobs/top_logprobs "will trigger an error"
                    # (api-docs.deepseek.com, reasoning model).
                    Family(
                        r"deepseek-reasoner",
                        thinking=True,
                        refuses=frozenset({"logprobs", "top_logprobs"}),
                    ),
                ),
            ),
            BackendProfile(
                "gemini",
                "Google Gemini (OpenAI-compatible endpoint)",
                fim=False,  # ai.google.dev/gemini-api/docs/openai: no /completions
                hosts=("generativelanguage.googleapis.com",),
                # ai.google.dev/gemini-api/docs/openai, "thinking": reasoning_effort, and
                # "none" switches thinking off where it can be. The API refuses "minimal"
                # though its docs list it ("Valid values are: high, low, medium, none",
                # discuss.ai.google.dev t/117875).
                efforts=("none", "low", "medium", "high"),
                think_off={"reasoning_effort": "none"},
                assume_thinking=True,  # the 2.5 and later models reason
                # Gemini 3 answers 400 "Function call is missing a thought_signature" for a
                # replayed call without one; its docs give this value for calls it did not
                # make (ai.google.dev/gemini-api/docs/thought-signatures, FAQ).
                signature_stand_in={
                    "google": {"thought_signature": "skip_thought_signature_validator"}
                },
                families=(
                    # Gemini 3 Pro takes low and high only (discuss.ai.google.dev t/112648),
                    # and neither Pro model can stop thinking (ai.google.dev, thinking).
                    Family(
                        r"gemini-3(\.\d+)?-pro",
                        thinking=True,
                        efforts=("low", "high"),
                        think_off={},
                    ),
                    Family(
                        r"gemini-2\.5-pro",
                        thinking=True,
                        efforts=("low", "medium", "high"),
                        think_off={},
                    ),
                ),
            ),
            BackendProfile(
                "anthropic",
                "Anthropic (OpenAI SDK compatibility)",
                fim=False,  # docs.anthropic.com/en/api/openai-sdk: chat completions only
                hosts=("api.anthropic.com",),
                # docs.anthropic.com/en/api/openai-sdk: reasoning_effort is ignored; extended
                # thinking is the "thinking" parameter; response_format is ignored.
                think="thinking",
                json_object="ignored",
                assume_thinking=True,  # Claude 3.7 and every Claude 4 model
            ),
            BackendProfile(
                "together",
                "Together AI",
                hosts=("api.together.xyz", "api.together.ai"),
                think_tags=True,  # older DeepSeek-R1 deployments answer <think> in content
                # Hybrid models reason by default; reasoning {enabled: false} stops them
                # (docs.together.ai/docs/inference/chat/reasoning).
                think_off={"reasoning": {"enabled": False}},
                assume_thinking=True,
                options=_frozen(_SAMPLERS),
            ),
            BackendProfile(
                "fireworks",
                "Fireworks AI",
                hosts=("api.fireworks.ai",),
                think_tags=True,
                options=_frozen(_SAMPLERS),
                # "Requests with max_tokens > 4096 must have stream=true" (400, observed in
                # nullclaw#231, goclaw#660).
                max_tokens_unstreamed=4096,
            ),
            BackendProfile(
                "vllm",
                "vLLM",
                # serving_completion.py: "suffix (the language models we currently support
                # do not support suffix)" -- refused.
                fim=False,
                think="chat_template_kwargs",  # docs.vllm.ai, reasoning outputs
                think_tags=True,  # without --reasoning-parser, reasoning stays in content
                system_turns="fold",  # the model's chat template (SystemTurns)
                options=_frozen(_SAMPLERS),
            ),
            BackendProfile(
                "sglang",
                "SGLang",
                think="chat_template_kwargs",
                think_tags=True,
                system_turns="fold",
                options=_frozen(_SAMPLERS),
            ),
            BackendProfile(
                "llamacpp",
                "llama.cpp llama-server",
                think="chat_template_kwargs",  # tools/server/README.md
                think_tags=True,
                system_turns="fold",  # --jinja renders the GGUF's template (QwenLM/Qwen3.8#244)
                # llama-server's /v1/chat/completions takes its native sampling fields.
                options=_frozen(
                    {
                        "top_k": "top_k",
                        "min_p": "min_p",
                        "typical_p": "typical_p",
                        "repeat_penalty": "repeat_penalty",
                        "repeat_last_n": "repeat_last_n",
                        "mirostat": "mirostat",
                        "mirostat_tau": "mirostat_tau",
                        "mirostat_eta": "mirostat_eta",
                    }
                ),
            ),
            BackendProfile(
                "lmstudio",
                "LM Studio",
                # lmstudio.ai/docs: response_format.type must be json_schema or text.
                json_object="schema",
                think_tags=True,
                system_turns="fold",
                options=_frozen(
                    {"top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repeat_penalty"}
                ),
            ),
            BackendProfile(
                "tgi",
                "Hugging Face TGI",
                think="none",
                think_tags=True,
                # router/src/lib.rs GrammarType: response_format is {type: json, value: schema};
                # there is no JSON mode without a schema (text-generation-inference#2899).
                json_object="instruction",
                tgi_grammar=True,
                top_p_below_one=True,  # validation.rs: "`top_p` must be > 0.0 and < 1.0"
                system_turns="fold",
            ),
            BackendProfile(
                "litellm",
                "LiteLLM proxy",
                # It relays OpenAI's own refusal of json_object without the word "json"
                # (tests/clients/test_litellm.py); the instruction is harmless elsewhere.
                json_object="needs_word",
            ),
            BackendProfile(
                "ollama",
                "Ollama's /v1",
                # ollama/ollama openai/openai.go: reasoning_effort "none" turns thinking off
                # (a bare think:false sends nothing and the model keeps thinking).
                think_off={"reasoning_effort": "none"},
                # Its /v1 takes "max" since 0.22.0 (thinkFromReasoningEffort), and lowers it
                # itself for models without it (server/routes.go, harmony: "high").
                efforts=("low", "medium", "high", "max"),
                # Ollama answers think:true on a model that cannot think with its own error,
                # as the client would get from Ollama itself; think:false is always accepted.
                assume_thinking=True,
                # Its renderers refuse a late system message for some models: 500 "system
                # message must be at the beginning" (qwen3.8, ollama/ollama#17774).
                system_turns="fold",
            ),
        )
    }
)
DEFAULT = PROFILES["openai-reference"]


def reasoning_on(payload: Mapping[str, Any]) -> bool:
    """Whether a request body asks for reasoning (some backends refuse a parameter only then:
    what they refused with it on is not refused with it off, exchange.adapt)."""
    effort = payload.get("reasoning_effort")
    if effort is not None and effort != "none":
        return True
    reasoning = payload.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("enabled", True) is not False:
        return True
    return "thinking" in payload


def detect(base_url: str) -> BackendProfile:
    """The profile a base URL names: by host (``api.mistral.ai`` -> mistral; Azure's
    ``/openai/v1`` path -> azure-v1), Ollama's port 11434 or LM Studio's 1234, else
    ``openai-reference``."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    for profile in PROFILES.values():
        for name in profile.hosts:
            if host == name or (name.startswith(".") and host.endswith(name)):
                if profile.name == "azure" and "/deployments/" not in parts.path:
                    return PROFILES["azure-v1"]
                return profile
    if parts.port in _PORTS:  # default ports nothing else listens on by default
        return PROFILES[_PORTS[parts.port]]
    return DEFAULT


# Ollama's and LM Studio's default ports (vLLM's 8000, llama.cpp's 8080 and LiteLLM's 4000 are
# too common to tell anything: name those profiles).
_PORTS = {11434: "ollama", 1234: "lmstudio"}


def named(name: str, base_url: str) -> BackendProfile:
    """``auto`` -> :func:`detect`; a known name -> that profile. KeyError for an unknown one
    (configuration validates names at start)."""
    return detect(base_url) if name == "auto" else PROFILES[name]
