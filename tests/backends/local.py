"""Rule sets for local servers: LM Studio, llama.cpp's llama-server, Ollama's /v1.

They need no key (any Authorization is accepted) and ignore parameters they do not know, so
the OpenAI reference request mostly passes; what differs is what they refuse outright and how
reasoning comes back. Sources are named next to each rule.
"""

from __future__ import annotations

from typing import Any

from tests.backends.fake import Refusal, Request, RuleSet, openai_error


def no_auth(req: Request, key: str) -> Refusal | None:
    return None


# --- LM Studio ------------------------------------------------------------------------------


def lmstudio_response_format(req: Request) -> Refusal | None:
    fmt = req.params.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in ("json_schema", "text"):
        # Observed: LoadShine/tada#16 (2026-01), whiteguo233/OpenBiliClaw#12 -- a bare string
        # under "error"; older builds said "must be 'json_schema'" (lmstudio-bug-tracker#169,
        # #189, #307).
        return Refusal(400, {"error": "'response_format.type' must be 'json_schema' or 'text'"})
    return None


LMSTUDIO = RuleSet(
    name="lmstudio",
    summary="response_format.type must be json_schema or text (no json_object)",
    models=("qwen/qwen3-8b", "google/gemma-3-4b", "text-embedding-nomic-embed-text-v1.5"),
    auth=no_auth,
    chat_checks=(lmstudio_response_format,),
)

# --- llama.cpp (tools/server) ---------------------------------------------------------------


def _llamacpp_error(message: str) -> Refusal:
    # Documented: server-common format_error_response -- ERROR_TYPE_INVALID_REQUEST is 400,
    # {"error": {"code": 400, "message", "type": "invalid_request_error"}}.
    return Refusal(
        400, {"error": {"code": 400, "message": message, "type": "invalid_request_error"}}
    )


def llamacpp_params(req: Request) -> Refusal | None:
    # Documented: ggml-org/llama.cpp tools/server/server-common.cpp (006639c)
    # oaicompat_chat_params_parse throws std::invalid_argument, which server.cpp's ex_wrapper
    # turns into 400 invalid_request_error, for these; everything else in the body is copied
    # through and unknown keys are ignored. (Older builds also refused n != 1.)
    fmt = req.params.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (
        None,
        "text",
        "json_object",
        "json_schema",
    ):
        return _llamacpp_error(
            'response_format type must be one of "text" or "json_object", but got: '
            f"{fmt.get('type')}"
        )
    if req.params.get("logprobs"):
        if req.params.get("tools") and req.params.get("stream"):
            return _llamacpp_error("logprobs is not supported with tools + stream")
    elif req.params.get("top_logprobs") is not None:
        return _llamacpp_error("top_logprobs requires logprobs to be set to true")
    if isinstance(_kwargs(req).get("enable_thinking"), str):
        return _llamacpp_error('invalid type for "enable_thinking" (expected boolean, got string)')
    return None


def _kwargs(req: Request) -> dict[str, Any]:
    kwargs = req.params.get("chat_template_kwargs")
    return kwargs if isinstance(kwargs, dict) else {}


def llamacpp_thinks(req: Request) -> bool:
    # Documented (README, /v1/chat/completions): chat_template_kwargs {"enable_thinking": false}
    # reaches the template (Qwen3-style models then skip thinking).
    return _kwargs(req).get("enable_thinking") is not False


def llamacpp_style(server_default: str) -> Any:
    """How reasoning is shown for a request: the request's ``reasoning_format`` overrides the
    server's ``--reasoning-format`` (README: "none: leaves thoughts unparsed in message.content";
    "deepseek: puts thoughts in message.reasoning_content"; "deepseek-legacy: keeps <think> tags
    in message.content while also populating message.reasoning_content"; default auto)."""

    def style(req: Request) -> str:
        fmt = req.params.get("reasoning_format", server_default)
        return {
            "none": "tags",
            "deepseek-legacy": "tags+reasoning_content",
        }.get(str(fmt), "reasoning_content")

    return style


LLAMACPP = RuleSet(
    name="llamacpp",
    summary="llama-server --reasoning-format auto: reasoning_content; lenient about the rest",
    models=("qwen3-8b",),
    auth=no_auth,
    chat_checks=(llamacpp_params,),
    thinks=llamacpp_thinks,
    reasoning=llamacpp_style("auto"),
)
LLAMACPP_RAW = RuleSet(
    name="llamacpp-raw",
    summary="llama-server --reasoning-format none: <think>...</think> at the start of content",
    models=("qwen3-8b",),
    auth=no_auth,
    chat_checks=(llamacpp_params,),
    thinks=llamacpp_thinks,
    reasoning=llamacpp_style("none"),
)

# --- Ollama's /v1 (ollama/ollama openai/openai.go, middleware/openai.go) -----------------------

OLLAMA_THINKING_MODELS = ("qwen3:8b", "gpt-oss:20b", "deepseek-r1:8b")
# openai.go thinkFromReasoningEffort: "none" -> think false; minimal -> low; low/medium/high/max
# as they are; xhigh and "ultra" -> max; "" -> the model's default.
OLLAMA_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "ultra", "max")


def _ollama_error(message: str) -> Refusal:
    # openai.go NewError: 400 -> {"error": {"message", "type": "invalid_request_error",
    # "param": null, "code": null}}.
    return openai_error(message)


def ollama_rules(req: Request) -> Refusal | None:
    if not req.messages():
        return _ollama_error("[] is too short - 'messages'")  # middleware/openai.go
    effort = req.params.get("reasoning_effort")
    reasoning = req.params.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        effort = reasoning["effort"]  # openai.go: `reasoning.effort` wins over reasoning_effort
    if effort in (None, ""):
        return None
    if effort not in OLLAMA_EFFORTS:
        return _ollama_error(
            f'invalid reasoning value: "{effort}" (must be "minimal", "low", "medium", "high", '
            '"xhigh", "ultra", "max", or "none")'
        )
    if effort != "none" and req.model not in OLLAMA_THINKING_MODELS:
        # server/routes.go ChatHandler: think requested from a model without the thinking
        # capability -> 400 "%q does not support thinking", re-shaped by the /v1 middleware.
        return _ollama_error(f'"{req.model}" does not support thinking')
    return None


def ollama_thinks(req: Request) -> bool:
    # server/routes.go: a thinking-capable model thinks when the request does not say
    # (req.Think defaults to true); reasoning_effort "none" sends think=false.
    if req.model not in OLLAMA_THINKING_MODELS:
        return False
    reasoning = req.params.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    return (effort or req.params.get("reasoning_effort")) != "none"


OLLAMA_V1 = RuleSet(
    name="ollama-v1",
    summary="Ollama's /v1: reasoning_effort incl. none; reasoning in the `reasoning` field",
    models=(*OLLAMA_THINKING_MODELS, "llama3.2", "nomic-embed-text"),
    auth=no_auth,
    chat_checks=(ollama_rules,),
    thinks=ollama_thinks,
    # openai.go Message/Delta: `Reasoning string json:"reasoning,omitempty"`; ToStreamChunks
    # sends a chunk's reasoning and its content/tool calls as two chunks.
    reasoning=lambda _: "reasoning",
)

RULE_SETS = (LMSTUDIO, LLAMACPP, LLAMACPP_RAW, OLLAMA_V1)
