"""Rule sets for self-hosted inference servers: vLLM, SGLang, Hugging Face TGI.

All three take a request body that the OpenAI SDK would send and ignore fields they do not know;
what they refuse are values (vLLM's and SGLang's validators, TGI's parameter checks) and, for
TGI, shapes its Rust types cannot deserialize. How reasoning comes back depends on how the
server was started: with a reasoning parser it is a field of its own, without one it stays in
the content as ``<think>...</think>`` -- hence two rule sets for vLLM and SGLang.

Every rule names its source next to it: "documented" is the server's own source or docs at the
commit named, "observed" a public report quoting the server's answer; where neither gave the
exact wording the message is marked "wording assumed" or "approximated".
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.backends.fake import Refusal, Request, RuleSet

# --- vLLM (vllm-project/vllm, vllm/entrypoints/openai/chat_completion/protocol.py, 002032e) ---

VLLM_QWEN3 = "Qwen/Qwen3-8B"  # a hybrid model: thinks unless its template is told not to
VLLM_R1 = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"  # always thinks
VLLM_PLAIN = "meta-llama/Llama-3.1-8B-Instruct"
# Its chat template (Qwen/Qwen3.5-27B chat_template.jinja, the same in 3.6) raises for a system
# message that is not the first.
VLLM_QWEN36 = "Qwen/Qwen3.6-27B"
# Documented (ChatCompletionRequest.reasoning_effort): a Literal of these values.
VLLM_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def vllm_auth(req: Request, key: str) -> Refusal | None:
    # Documented (vllm/entrypoints/serve/utils/server_utils.py, AuthenticationMiddleware): with
    # --api-key, a /v1 request without that Bearer token gets 401 {"error": "Unauthorized"}.
    if not key or req.headers.get("Authorization") == f"Bearer {key}":
        return None
    return Refusal(401, {"error": "Unauthorized"})


def _vllm_validation(message: str, param: str, body: Any) -> Refusal:
    """A model validator's VLLMValidationError as vLLM answers it.

    Documented (server_utils.py validation_exception_handler): 400, {"error": {"message",
    "type": "Bad Request", "param": the error's parameter, "code": 400}}; the message is
    "1 validation error:" and pydantic's error dict, whose "msg" carries str(VLLMValidationError)
    -- the text and " (parameter=...)" (vllm/exceptions.py). The dict's repr is approximated."""
    text = f"{message} (parameter={param})"
    detail = {"type": "value_error", "loc": ("body",), "msg": f"Value error, {text}", "input": body}
    return Refusal(
        400,
        {
            "error": {
                "message": f"1 validation error:\n  {detail}",
                "type": "Bad Request",
                "param": param,
                "code": 400,
            }
        },
    )


def _vllm_literal(param: str, value: Any, allowed: tuple[str, ...]) -> Refusal:
    # The same handler for a pydantic literal_error; without a VLLMValidationError the param is
    # the error's loc, cleaned ("body.reasoning_effort"). The expected list is pydantic's.
    expected = ", ".join(f"'{v}'" for v in allowed[:-1]) + f" or '{allowed[-1]}'"
    detail = {
        "type": "literal_error",
        "loc": ("body", param),
        "msg": f"Input should be {expected}",
        "input": value,
    }
    return Refusal(
        400,
        {
            "error": {
                "message": f"1 validation error:\n  {detail}",
                "type": "Bad Request",
                "param": f"body.{param}",
                "code": 400,
            }
        },
    )


def vllm_rules(req: Request) -> Refusal | None:
    p = req.params
    # Documented (ChatCompletionRequest.validate_stream_options): stream_options only with
    # stream=true. Observed: BerriAI/litellm#29431 (LiteLLM sent it with stream unset -> 400).
    if p.get("stream_options") and not p.get("stream"):
        return _vllm_validation(
            "Stream options can only be defined when `stream=True`.", "stream_options", p
        )
    # Documented (check_logprobs): top_logprobs > 0 (or -1) needs logprobs.
    top = p.get("top_logprobs")
    if isinstance(top, int) and (top > 0 or top == -1) and not p.get("logprobs"):
        return _vllm_validation(
            "when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs", p
        )
    # Documented (check_tool_usage): an empty tools list, and tool_choice without tools.
    if p.get("tools") == []:
        return _vllm_validation(
            "`tools` must not be an empty array. Either provide at least one tool or omit the "
            "field entirely.",
            "tools",
            p,
        )
    choice = p.get("tool_choice")
    if choice not in (None, "none") and not p.get("tools"):
        return _vllm_validation("When using `tool_choice`, `tools` must be set.", "tool_choice", p)
    effort = p.get("reasoning_effort")
    if effort is not None and effort not in VLLM_EFFORTS:
        return _vllm_literal("reasoning_effort", effort, VLLM_EFFORTS)
    # Everything else it does not know is accepted and ignored, with a warning in the server's
    # log (engine/protocol.py OpenAIBaseModel: extra="allow", "The following fields were present
    # in the request but ignored").
    return None


def vllm_template(req: Request) -> Refusal | None:
    # Observed (vllm-project/vllm#41114, Qwen3.6-27B): "System message must be at the
    # beginning." from the template's raise_exception; vLLM answers a template's exception as
    # 400 {"error": {"message", "type": "BadRequestError", "param": null, "code": 400}} (shape
    # observed for Gemma 3's "Conversation roles must alternate": suitenumerique/conversations#197).
    if req.model != VLLM_QWEN36:
        return None
    if any(m.get("role") == "system" for m in req.messages()[1:]):
        return Refusal(
            400,
            {
                "error": {
                    "message": "System message must be at the beginning.",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                }
            },
        )
    return None


def _template_kwargs(req: Request) -> dict[str, Any]:
    kwargs = req.params.get("chat_template_kwargs")
    return kwargs if isinstance(kwargs, dict) else {}


def vllm_thinks(req: Request) -> bool:
    if req.model == VLLM_R1:
        return True  # the DeepSeek-R1 template ignores enable_thinking
    if req.model != VLLM_QWEN3:
        return False
    # Documented (build_chat_params): chat_template_kwargs reach the template; a reasoning_effort
    # sets enable_thinking (effort != "none") when the request's kwargs do not.
    kwargs = _template_kwargs(req)
    if "enable_thinking" in kwargs:
        return kwargs["enable_thinking"] is not False
    return req.params.get("reasoning_effort") != "none"


def vllm_style(parser: bool) -> Any:
    """With --reasoning-parser the reasoning is the message's `reasoning` field (ChatMessage,
    "vLLM-specific fields": `reasoning`; older releases said reasoning_content, which requests
    may still send back -- _normalize_messages_before renames it); include_reasoning=false drops
    it. Without a parser the model's raw text is the content: <think>...</think> first."""

    def style(req: Request) -> str:
        if not parser:
            return "tags"
        return "hidden" if req.params.get("include_reasoning") is False else "reasoning"

    return style


def _vllm(name: str, summary: str, parser: bool) -> RuleSet:
    return RuleSet(
        name=name,
        summary=summary,
        models=(VLLM_QWEN3, VLLM_R1, VLLM_PLAIN, VLLM_QWEN36),
        auth=vllm_auth,
        chat_checks=(vllm_rules, vllm_template),
        thinks=vllm_thinks,
        reasoning=vllm_style(parser),
    )


VLLM = _vllm(
    "vllm",
    "vLLM --reasoning-parser: `reasoning` field; stream_options only when streaming",
    parser=True,
)
VLLM_RAW = _vllm(
    "vllm-raw", "vLLM without a reasoning parser: <think>...</think> in the content", parser=False
)

# --- SGLang (sgl-project/sglang, python/sglang/srt/entrypoints/openai/protocol.py, 004c82e) ---

SGLANG_QWEN3 = "Qwen/Qwen3-8B"
SGLANG_PLAIN = "meta-llama/Llama-3.1-8B-Instruct"
# Documented (ChatCompletionRequest.reasoning_effort): these levels, or a float in [0, 0.99].
SGLANG_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def _sglang_error(message: str, type_: str = "BadRequestError") -> Refusal:
    # Documented (protocol.py ErrorResponse; serving_base.py handle_request ->
    # create_error_response): a flat {"object": "error", "message", "type", "param", "code"}.
    return Refusal(
        400, {"object": "error", "message": message, "type": type_, "param": None, "code": 400}
    )


def sglang_rules(req: Request) -> Refusal | None:
    p = req.params
    effort = p.get("reasoning_effort")
    if isinstance(effort, bool) or (
        effort is not None
        and effort not in SGLANG_EFFORTS
        and not (isinstance(effort, int | float) and 0 <= effort <= 0.99)
    ):
        # Documented: validate_reasoning_effort_type ("reasoning_effort must not be a boolean")
        # and the field's type; pydantic errors reach http_server.py's RequestValidationError
        # handler: 400, type "Bad Request", the exception and its errors() as the message
        # (sglang forks quote it; the message is approximated here).
        return _sglang_error(
            f"1 validation error for ChatCompletionRequest\nreasoning_effort\n  Input should be "
            f"a valid reasoning effort [input_value={effort!r}]",
            "Bad Request",
        )
    # Documented (serving_chat.py _validate_request): these answer through create_error_response.
    if not req.messages():
        return _sglang_error("Messages cannot be empty.")
    if p.get("tool_choice") == "required" and not p.get("tools"):
        return _sglang_error("Tools cannot be empty if tool choice is set to required.")
    fmt = p.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema")
        if not (isinstance(schema, dict) and "schema" in schema) and "schema" not in fmt:
            return _sglang_error("schema_ is required for json_schema response format request.")
    # Other unknown fields: pydantic's default (extra="ignore") drops them silently.
    return None


def sglang_thinks(req: Request) -> bool:
    if req.model != SGLANG_QWEN3:
        return False
    # Documented (normalize_reasoning_inputs): reasoning_effort (or reasoning.effort) "none"
    # sets chat_template_kwargs thinking/enable_thinking false unless the request set them.
    kwargs = _template_kwargs(req)
    if "enable_thinking" in kwargs:
        return kwargs["enable_thinking"] is not False
    reasoning = req.params.get("reasoning")
    effort = req.params.get("reasoning_effort")
    if effort is None and isinstance(reasoning, dict):
        effort = reasoning.get("effort")
    return effort != "none"


def sglang_style(parser: bool) -> Any:
    """With --reasoning-parser: `reasoning_content` (ChatMessage/DeltaMessage), unless the
    request says separate_reasoning=false; without a parser: the raw text, tags included."""

    def style(req: Request) -> str:
        if parser and req.params.get("separate_reasoning", True) is not False:
            return "reasoning_content"
        return "tags"

    return style


def _sglang(name: str, summary: str, parser: bool) -> RuleSet:
    return RuleSet(
        name=name,
        summary=summary,
        models=(SGLANG_QWEN3, SGLANG_PLAIN),
        # --api-key: a Bearer check like vLLM's (its 401 body is assumed to match vLLM's).
        auth=vllm_auth,
        chat_checks=(sglang_rules,),
        thinks=sglang_thinks,
        reasoning=sglang_style(parser),
    )


SGLANG = _sglang(
    "sglang", "SGLang --reasoning-parser: reasoning_content; ignores unknown fields", parser=True
)
SGLANG_RAW = _sglang(
    "sglang-raw", "SGLang without a reasoning parser: <think>...</think> in the content", False
)

# --- Hugging Face TGI (huggingface/text-generation-inference router/src, db931fc) ------------

TGI_QWEN3 = "Qwen/Qwen3-8B"
TGI_PLAIN = "meta-llama/Llama-3.1-8B-Instruct"
# Documented (lib.rs GrammarType: #[serde(tag = "type", content = "value")]): the variants.
TGI_GRAMMARS = ("json", "json_object", "regex", "json_schema")
TGI_MAX_TOP_N_TOKENS = 5  # documented: the launcher's --max-top-n-tokens default


def _tgi_error(message: str, error_type: str = "validation") -> Refusal:
    # Documented (server.rs From<InferError>): 422 for validation, template and tool errors,
    # body ErrorResponse {"error", "error_type"}; the message is InferError's Display
    # ("Input validation error: ...", "Tool error: ...").
    return Refusal(422, {"error": message, "error_type": error_type})


def _tgi_deserialize(req: Request, field: str, reason: str) -> Refusal:
    # Observed: huggingface/text-generation-inference#2899 (422, a plain-text body from axum's
    # Json extractor: "Failed to deserialize the JSON body into the target type: <path>: <serde
    # error> at line 1 column N"). The column is where this fake's compact encoding ends the
    # field, as serde_json reports it for a missing field.
    raw = orjson.dumps(req.params).decode()
    key = f'"{field}":'
    start = raw.find(key)
    end = start + len(key) + len(orjson.dumps(req.params[field])) if start >= 0 else len(raw)
    return Refusal(
        422,
        "Failed to deserialize the JSON body into the target type: "
        f"{field}: {reason} at line 1 column {end}",
    )


def tgi_rules(req: Request) -> Refusal | None:
    p = req.params
    fmt = p.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in TGI_GRAMMARS:
            variants = ", ".join(f"`{v}`" for v in ("json", "regex", "json_schema"))
            return _tgi_deserialize(
                req, "response_format", f"unknown variant `{kind}`, expected one of {variants}"
            )
        if "value" not in fmt:
            # OpenAI's {"type": "json_object"} has no "value": refused (issue #2899, open).
            return _tgi_deserialize(req, "response_format", "missing field `value`")
    stop = p.get("stop")
    if isinstance(stop, str):
        # Documented (ChatRequest.stop: Option<Vec<String>>): a bare string is not a sequence.
        return _tgi_deserialize(req, "stop", f'invalid type: string "{stop}", expected a sequence')
    if fmt is not None and p.get("tools"):
        # Documented (ChatRequest::try_into_generate).
        return _tgi_error("Tool error: Grammar and tools are mutually exclusive", "tool_error")
    if isinstance(fmt, dict) and fmt.get("type") in ("json", "json_object"):
        schema = fmt.get("value")
        if isinstance(schema, dict) and "properties" not in schema:
            # Documented (validation.rs): the schema needs "properties" for outlines.
            return _tgi_error(
                "Input validation error: grammar is not valid: Grammar must have a 'properties' "
                "field"
            )
    # Documented (validation.rs Validation::validate, and the messages of ValidationError).
    temperature = p.get("temperature")
    if isinstance(temperature, int | float) and temperature < 0:  # 0 means greedy (lib.rs)
        return _tgi_error("Input validation error: `temperature` must be strictly positive")
    top_p = p.get("top_p")
    if isinstance(top_p, int | float) and not 0 < top_p < 1:
        return _tgi_error("Input validation error: `top_p` must be > 0.0 and < 1.0")
    frequency = p.get("frequency_penalty")
    if isinstance(frequency, int | float) and not -2 <= frequency <= 2:
        return _tgi_error("Input validation error: `frequency_penalty` must be >= -2.0 and <= 2.0")
    presence = p.get("presence_penalty")
    if isinstance(presence, int | float) and presence + 2.0 <= 0:
        # lib.rs: repetition_penalty = presence_penalty + 2.0
        return _tgi_error("Input validation error: `repetition_penalty` must be strictly positive")
    top_n = p.get("top_logprobs")
    if isinstance(top_n, int) and top_n > TGI_MAX_TOP_N_TOKENS:
        return _tgi_error(
            f"Input validation error: `top_n_tokens` must be >= 0 and <= {TGI_MAX_TOP_N_TOKENS}."
            f" Given: {top_n}"
        )
    if p.get("max_tokens", p.get("max_completion_tokens")) == 0:  # max_completion_tokens: alias
        return _tgi_error("Input validation error: `max_new_tokens` must be strictly positive")
    # Fields ChatRequest does not declare are ignored (serde's default; no deny_unknown_fields).
    return None


def tgi_model(req: Request) -> str:
    # Documented (ChatRequest.model: "[UNUSED]"): the server answers with the one model it
    # serves whatever the name; this fake serves a few, and answers an unknown name with the
    # first.
    model = str(req.params.get("model") or "")
    return model if model in TGI.models else TGI.models[0]


TGI = RuleSet(
    name="tgi",
    summary="TGI Messages API: response_format needs {type, value}; top_p in (0, 1); 422s",
    models=(TGI_QWEN3, TGI_PLAIN),
    resolve_model=tgi_model,
    chat_checks=(tgi_rules,),
    # No reasoning parser and no switch in ChatRequest: Qwen3's template thinks by default and
    # the raw text comes back, <think> tags and all.
    thinks=lambda req: req.model == TGI_QWEN3,
    reasoning=lambda _: "tags",
)

RULE_SETS = (VLLM, VLLM_RAW, SGLANG, SGLANG_RAW, TGI)
