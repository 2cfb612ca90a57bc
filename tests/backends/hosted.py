"""Rule sets for hosted OpenAI-compatible APIs: Mistral, Groq, Gemini, DeepSeek, Anthropic.

Every rule names its source next to it: "documented" is the vendor's docs or SDK source,
"observed" a public bug report quoting the vendor's answer. Where neither gave the exact wording
the message is marked "wording assumed".
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from tests.backends.fake import Refusal, Request, RuleSet, openai_error, thought_signature
from tests.fake_upstream import CHAT_PARAMS

# --- Mistral ------------------------------------------------------------------------------------

# Documented: mistralai/client-python (05629d2, 2026-06) src/mistralai/client/models/
# chatcompletionrequest.py -- the request's fields. No `seed` (it is `random_seed`), no
# `stream_options`, `max_completion_tokens`, `logprobs`, `user`, `logit_bias`, `store`...
MISTRAL_PARAMS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "stream",
        "stop",
        "random_seed",
        "metadata",
        "response_format",
        "tools",
        "tool_choice",
        "presence_penalty",
        "frequency_penalty",
        "n",
        "prediction",
        "parallel_tool_calls",
        "reasoning_effort",
        "prompt_mode",
        "guardrails",
        "prompt_cache_key",
        "safe_prompt",
    }
)
# Same source, models/{system,user,assistant,tool}message.py: each message's fields.
MISTRAL_MESSAGE_FIELDS = {
    "system": frozenset({"role", "content"}),
    "user": frozenset({"role", "content"}),
    "assistant": frozenset({"role", "content", "tool_calls", "prefix"}),
    "tool": frozenset({"role", "content", "tool_call_id", "name"}),
}
# Same source, models/embeddingrequest.py: `output_dimension`, not `dimensions`.
MISTRAL_EMBEDDING_PARAMS = frozenset(
    {"model", "input", "metadata", "output_dimension", "output_dtype", "encoding_format"}
)


def _mistral_422(detail: list[dict[str, Any]]) -> Refusal:
    # Observed: editor-code-assistant/eca#231 (2025-12, max_completion_tokens),
    # mistralai/platform-docs-public#7, crewAIInc/crewAI#60: 422, pydantic's extra_forbidden
    # items under message.detail, every extra field listed. (A newer variant puts `detail` at the
    # top level with code 3001: partITech/php-mistral#76.)
    return Refusal(
        422,
        {
            "object": "error",
            "message": {"detail": detail},
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        },
    )


def _extra(loc: list[Any], value: Any) -> dict[str, Any]:
    return {
        "type": "extra_forbidden",
        "loc": loc,
        "msg": "Extra inputs are not permitted",
        "input": value,
    }


def mistral_fields(req: Request) -> Refusal | None:
    detail = [_extra(["body", k], v) for k, v in req.params.items() if k not in MISTRAL_PARAMS]
    for i, m in enumerate(req.messages()):
        allowed = MISTRAL_MESSAGE_FIELDS.get(str(m.get("role")), frozenset(m))
        # loc names the message's role variant: ["body", "messages", 2, "assistant",
        # "reasoning_content"] (observed: charmbracelet/crush#1590; user "name":
        # nomtek/mistralai_client_dart#44).
        detail += [
            _extra(["body", "messages", i, m["role"], k], v)
            for k, v in m.items()
            if k not in allowed
        ]
    return _mistral_422(detail) if detail else None


_MISTRAL_ID = re.compile(r"[a-zA-Z0-9]{9}")


def mistral_call_ids(req: Request) -> Refusal | None:
    # Observed (issue #16, the ollama SDK's tool example): 400 with this message for an id of
    # another form, in an assistant's tool_calls or a tool message's tool_call_id.
    for m in req.messages():
        ids = [c.get("id") for c in m.get("tool_calls") or ()]
        if m.get("role") == "tool":
            ids.append(m.get("tool_call_id"))
        for call_id in ids:
            if not isinstance(call_id, str) or not _MISTRAL_ID.fullmatch(call_id):
                return Refusal(
                    400,
                    {
                        "object": "error",
                        "message": f"Tool call id was {call_id} but must be a-z, A-Z, 0-9, "
                        "with a length of 9.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    },
                )
    return None


def mistral_last_role(req: Request) -> Refusal | None:
    # Observed (NEKOparapa/AiNiee#641, crewAIInc/crewAI#2194): 400 "Expected last role User or
    # Tool (or Assistant with prefix True) for serving but got assistant"; a trailing system
    # message gets the same (its role's name: wording assumed after it).
    messages = req.messages()
    last = messages[-1] if messages else {}
    role = last.get("role")
    if role in ("user", "tool") or (role == "assistant" and last.get("prefix") is True):
        return None
    return Refusal(
        400,
        {
            "object": "error",
            "message": "Expected last role User or Tool (or Assistant with prefix True) for "
            f"serving but got {role}",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        },
    )


def mistral_embedding_fields(req: Request) -> Refusal | None:
    detail = [
        _extra(["body", k], v) for k, v in req.params.items() if k not in MISTRAL_EMBEDDING_PARAMS
    ]
    return _mistral_422(detail) if detail else None


MISTRAL = RuleSet(
    name="mistral",
    summary="422 extra_forbidden for unknown fields: random_seed not seed, no stream_options",
    models=("mistral-small-latest", "mistral-large-latest", "mistral-embed"),
    chat_checks=(mistral_fields, mistral_call_ids, mistral_last_role),
    embedding_checks=(mistral_embedding_fields,),
    # Documented: the same SDK's CompletionChunk has `usage`; Mistral's streams carry it on the
    # last chunk without any stream_options (the field is not accepted).
    stream_usage="always",
    embedding_dimensions=False,
)

# --- Groq -----------------------------------------------------------------------------------

# Documented (console.groq.com/docs/reasoning): reasoning models; qwen3 takes reasoning_effort
# "none" | "default" (also groq/groq-changelog#8), gpt-oss low/medium/high.
GROQ_QWEN = "qwen/qwen3-32b"
GROQ_GPT_OSS = ("openai/gpt-oss-20b", "openai/gpt-oss-120b")
GROQ_PARAMS = CHAT_PARAMS | {"reasoning_format", "include_reasoning", "search_settings"}


def _groq_error(message: str, param: str | None = None) -> Refusal:
    # Observed shape: 0xPlaygrounds/rig#1134 ({"error": {"message", "type", "param"}}).
    body: dict[str, Any] = {"message": message, "type": "invalid_request_error"}
    if param is not None:
        body["param"] = param
    return Refusal(400, {"error": body})


def groq_unknown(req: Request) -> Refusal | None:
    for key in req.params:
        if key not in GROQ_PARAMS:
            # Observed: fanenr/chatbot#21 ("property 'store' is unsupported, did you mean
            # 'stop'?" -- store was accepted later); mnfst/modelparams.dev#114 (top_k -> 400).
            close = difflib.get_close_matches(key, sorted(GROQ_PARAMS), n=1)
            hint = f", did you mean '{close[0]}'?" if close else ""
            return _groq_error(f"property '{key}' is unsupported{hint}")
    for i, m in enumerate(req.messages()):
        if m.get("role") == "assistant" and "reasoning_content" in m:
            # Observed: janhq/jan#8136 (gpt-oss on Groq).
            return _groq_error(
                f"'messages.{i}' : for 'role:assistant' the following must be satisfied"
                f"[('messages.{i}' : property 'reasoning_content' is unsupported)]"
            )
        if "name" in m:
            # Documented (console.groq.com/docs/openai): messages[].name -> 400; wording assumed.
            return _groq_error(f"'messages.{i}' : property 'name' is unsupported")
    return None


def groq_unsupported(req: Request) -> Refusal | None:
    # Documented (console.groq.com/docs/openai, "Currently Unsupported OpenAI Features"):
    # logprobs, logit_bias, top_logprobs -> 400; N must be 1. Wording observed for logprobs
    # (groq/groq-python#25); the others follow it.
    for name in ("logprobs", "logit_bias", "top_logprobs"):
        if name in req.params:
            return _groq_error(f"`{name}` is not supported with this model", name)
    if req.params.get("n", 1) != 1:
        return _groq_error("'n' : number must be at most 1", "n")  # wording assumed
    return None


def groq_reasoning(req: Request) -> Refusal | None:
    reasoner = req.model == GROQ_QWEN or req.model in GROQ_GPT_OSS
    fmt = req.params.get("reasoning_format")
    if "reasoning_format" in req.params and not reasoner:
        # Observed: 0xPlaygrounds/rig#1134 (llama-3.1-8b-instant).
        return _groq_error(
            "`reasoning_format` is not supported with this model", "reasoning_format"
        )
    if fmt is not None and fmt not in ("parsed", "raw", "hidden"):
        return _groq_error("`reasoning_format` must be one of `parsed`, `raw`, or `hidden`")
    if fmt == "raw" and (req.params.get("tools") or _json_mode(req)):
        # Documented (console.groq.com/docs/reasoning): raw with JSON mode or tools -> 400.
        return _groq_error(
            "reasoning_format `raw` is not supported with JSON mode or tool use",  # assumed
            "reasoning_format",
        )
    if "reasoning_effort" in req.params:
        effort = req.params["reasoning_effort"]
        if not reasoner:
            # Observed: brendanlong/lion-reader#1325 ("reasoning_effort is not supported with
            # this model" on llama-4-scout).
            return _groq_error(
                "`reasoning_effort` is not supported with this model", "reasoning_effort"
            )
        if req.model == GROQ_QWEN and effort not in ("none", "default", None):
            # Observed: mnfst/modelparams.dev#114, earendil-works/pi#1745.
            return _groq_error(
                "`reasoning_effort` must be one of `none` or `default`", "reasoning_effort"
            )
        if req.model in GROQ_GPT_OSS and effort not in ("low", "medium", "high"):
            return _groq_error(  # wording assumed, after the qwen one
                "`reasoning_effort` must be one of `low`, `medium`, or `high`", "reasoning_effort"
            )
    return None


def _json_mode(req: Request) -> bool:
    fmt = req.params.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def groq_thinks(req: Request) -> bool:
    if req.model == GROQ_QWEN:
        return req.params.get("reasoning_effort") != "none"
    return req.model in GROQ_GPT_OSS


def groq_style(req: Request) -> str:
    # Documented (console.groq.com/docs/reasoning): reasoning_format parsed -> message.reasoning,
    # raw -> <think> tags in the content, hidden -> only the answer; the default is raw, or parsed
    # with JSON mode or tools. gpt-oss answers in `reasoning` (include_reasoning, default true).
    if req.model in GROQ_GPT_OSS:
        return "hidden" if req.params.get("include_reasoning") is False else "reasoning"
    fmt = req.params.get("reasoning_format")
    if fmt is None:
        fmt = "parsed" if req.params.get("tools") or _json_mode(req) else "raw"
    return {"parsed": "reasoning", "raw": "tags", "hidden": "hidden"}[fmt]


GROQ = RuleSet(
    name="groq",
    summary="qwen3 thinks in <think> tags (reasoning_format parsed/raw/hidden), effort none|default",
    models=(GROQ_QWEN, *GROQ_GPT_OSS, "llama-3.3-70b-versatile"),
    base_path="/openai/v1",
    chat_checks=(groq_unknown, groq_unsupported, groq_reasoning),
    thinks=groq_thinks,
    reasoning=groq_style,
)

# --- Gemini (generativelanguage.googleapis.com/v1beta/openai/) -------------------------------


def _gemini_error(message: str) -> Refusal:
    # Observed: the OpenAI-compatible endpoint answers a JSON *array* of Google errors
    # (discuss.ai.google.dev/t/117875, Alishahryar1/free-claude-code#542).
    return Refusal(
        400, [{"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}]
    )


def gemini_unknown(req: Request) -> Refusal | None:
    # Observed: Alishahryar1/free-claude-code#542 (a top-level "google" field). Fields outside
    # OpenAI's are refused; `extra_body` is how Gemini's own options travel (documented:
    # ai.google.dev/gemini-api/docs/openai, REST examples).
    for key in req.params:
        if key not in CHAT_PARAMS and key != "extra_body":
            return _gemini_error(
                f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
            )
    return None


def gemini_effort(req: Request) -> Refusal | None:
    if "reasoning_effort" not in req.params:
        return None
    effort = req.params["reasoning_effort"]
    # Observed: discuss.ai.google.dev/t/117875 and /t/118724 -- the API accepts only these,
    # though the compatibility page's table also lists "minimal".
    if effort not in ("none", "low", "medium", "high"):
        return _gemini_error(
            f"Invalid reasoning_effort: {effort}. Valid values are: high, low, medium, none"
        )
    if req.model.startswith("gemini-3") and "pro" in req.model and effort == "medium":
        # Observed: discuss.ai.google.dev/t/112648 (gemini-3-pro-preview).
        return _gemini_error(
            "Thinking level MEDIUM is not supported for this model. Please retry with other "
            "thinking level"
        )
    return None


SKIP_SIGNATURE = "skip_thought_signature_validator"


def gemini_signatures(req: Request) -> Refusal | None:
    # Documented (ai.google.dev/gemini-api/docs/thought-signatures): Gemini 3 validates the
    # signatures of the current turn's function calls (after the last user message) and answers
    # 400 for a missing one; the first call of each step must carry the one it was given, or
    # the documented stand-in for calls it did not make. The message is the one observed
    # (discuss.ai.google.dev/t/109823).
    if not req.model.startswith("gemini-3"):
        return None
    messages = req.params.get("messages") or []
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    for m in messages[last_user + 1 :]:
        calls = m.get("tool_calls") if m.get("role") == "assistant" else None
        if not calls:
            continue
        first = calls[0]
        sig = ((first.get("extra_content") or {}).get("google") or {}).get("thought_signature")
        fn = first.get("function") or {}
        if sig != SKIP_SIGNATURE and sig != thought_signature(
            fn.get("name") or "", fn.get("arguments")
        ):
            return _gemini_error(
                "Function call is missing a thought_signature in functionCall parts. This is "
                "required for tools to work correctly, and missing thought_signature may lead "
                "to degraded model performance. Additional data, function call "
                f"`default_api:{fn.get('name')}` , position {messages.index(m) + 1}. please "
                "refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more "
                "details."
            )
    return None


def gemini_thinks(req: Request) -> bool:
    # Documented (ai.google.dev/gemini-api/docs/thinking): 2.5 and 3 models think by default;
    # reasoning_effort "none" turns it off where the model allows. The thoughts are not returned
    # unless extra_body.google.thinking_config.include_thoughts is set (not modelled).
    return req.params.get("reasoning_effort") != "none"


GEMINI = RuleSet(
    name="gemini",
    summary="streams tool calls without index; reasoning_effort none|low|medium|high",
    models=("gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-flash-preview", "gemini-3-pro-preview"),
    base_path="/v1beta/openai",
    chat_checks=(gemini_unknown, gemini_effort, gemini_signatures),
    thinks=gemini_thinks,
    tool_calls="gemini",
)

# --- DeepSeek -------------------------------------------------------------------------------


def _deepseek_error(message: str) -> Refusal:
    # Observed shape: JohnnyZ93/oai-compatible-copilot#215, qwersyk/Newelle#404.
    return openai_error(message, code="invalid_request_error")


def deepseek_thinks(req: Request) -> bool:
    # Documented (api-docs.deepseek.com/guides/thinking_mode): thinking mode is model
    # deepseek-reasoner, or thinking: {"type": "enabled"} (through the OpenAI SDK's extra_body).
    thinking = req.params.get("thinking")
    enabled = isinstance(thinking, dict) and thinking.get("type") == "enabled"
    return req.model == "deepseek-reasoner" or enabled


def deepseek_thinking_rules(req: Request) -> Refusal | None:
    if not deepseek_thinks(req):
        return None
    # Documented (same page): temperature, top_p, presence_penalty, frequency_penalty are
    # accepted and ignored; "Setting logprobs, top_logprobs will trigger an error" (wording
    # assumed).
    for name in ("logprobs", "top_logprobs"):
        if name in req.params:
            return _deepseek_error(f"{name} is not supported in the thinking mode.")
    # Documented (same page, "Tool Calls"): between two user messages, if the model made a tool
    # call, every assistant message there must carry its reasoning_content back ("must
    # participate in the context concatenation"); otherwise the API answers 400. Observed
    # wording for deepseek-reasoner: abhigyanpatwari/GitNexus#43, zed-industries/zed PR #44301;
    # V4 models say "The `reasoning_content` in the thinking mode must be passed back to the
    # API." (JohnnyZ93/oai-compatible-copilot#215).
    messages = req.messages()
    start = 0
    for end in [*(i for i, m in enumerate(messages) if m.get("role") == "user"), len(messages)]:
        turn = list(enumerate(messages))[start:end]
        if any(m.get("role") == "assistant" and m.get("tool_calls") for _, m in turn):
            for i, m in turn:
                if m.get("role") == "assistant" and not isinstance(m.get("reasoning_content"), str):
                    return _deepseek_error(
                        f"Missing `reasoning_content` field in the assistant message at message "
                        f"index {i}. For more information, please refer to "
                        "https://api-docs.deepseek.com/guides/thinking_mode#tool-calls"
                    )
        start = end + 1
    return None


def deepseek_effort(req: Request) -> Refusal | None:
    # Documented (same page, 2026): reasoning_effort high | max; low and medium map to high,
    # xhigh to max. Other values: wording assumed.
    effort = req.params.get("reasoning_effort")
    if effort is not None and effort not in ("low", "medium", "high", "xhigh", "max"):
        return _deepseek_error(f"Invalid reasoning_effort: {effort}")
    return None


DEEPSEEK = RuleSet(
    name="deepseek",
    summary="reasoning_content out; thinking-mode tool calls need reasoning_content back",
    models=("deepseek-chat", "deepseek-reasoner"),
    chat_checks=(deepseek_effort, deepseek_thinking_rules),
    thinks=deepseek_thinks,
    reasoning=lambda _: "reasoning_content",  # documented: same level as content
)

# --- Anthropic's OpenAI SDK compatibility -----------------------------------------------------

# Documented (docs.anthropic.com/en/api/openai-sdk, "Request fields"): these are accepted and
# ignored -- reasoning_effort among them; n must be exactly 1; temperature above 1 is capped.
ANTHROPIC_IGNORED = (
    "logprobs",
    "metadata",
    "response_format",
    "prediction",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "service_tier",
    "audio",
    "logit_bias",
    "store",
    "user",
    "modalities",
    "top_logprobs",
    "reasoning_effort",
)
ANTHROPIC_THINKING_MODELS = ("claude-sonnet-4-5", "claude-opus-4-1")


def anthropic_auth(req: Request, key: str) -> Refusal | None:
    # The OpenAI SDK sends "Authorization: Bearer"; Anthropic's own header is x-api-key.
    if req.headers.get("Authorization") == f"Bearer {key}" or req.headers.get("x-api-key") == key:
        return None
    return openai_error("invalid x-api-key", type_="authentication_error", status=401)


def anthropic_thinking(req: Request) -> Refusal | None:
    if req.params.get("n", 1) != 1:
        return openai_error("n: must be exactly 1")  # documented rule; wording assumed
    thinking = req.params.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < 1024:
        # Documented minimum 1024 (docs.anthropic.com, extended thinking); observed wording:
        # themaximalist/llm.js#30, tingly-dev/tingly-box#569.
        return openai_error(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        )
    limit = req.params.get("max_completion_tokens", req.params.get("max_tokens"))
    if isinstance(limit, int) and limit <= budget:
        # Observed: liuw1535/antigravity2api-nodejs#150.
        return openai_error(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
            "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-"
            "thinking#max-tokens-and-context-window-size"
        )
    temperature = req.params.get("temperature", 1)
    if temperature != 1:
        # Documented (extended thinking, "important considerations"): thinking is not compatible
        # with temperature or top_k changes; observed wording: MartialBE/one-hub#529,
        # egoist/chatwise-releases#1348.
        return openai_error(
            "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
            "documentation at https://docs.anthropic.com/en/docs/build-with-claude/extended-"
            "thinking#important-considerations-when-using-extended-thinking"
        )
    return None


def anthropic_thinks(req: Request) -> bool:
    # Documented: only `thinking` enables extended thinking ("reasoning_effort: Ignored"), and
    # "the OpenAI SDK won't return Claude's detailed thought process" -- so it stays hidden.
    thinking = req.params.get("thinking")
    enabled = isinstance(thinking, dict) and thinking.get("type") == "enabled"
    return enabled and req.model in ANTHROPIC_THINKING_MODELS


ANTHROPIC_COMPAT = RuleSet(
    name="anthropic-compat",
    summary="ignores reasoning_effort; thinks only with thinking.budget_tokens >= 1024",
    models=(*ANTHROPIC_THINKING_MODELS, "claude-3-5-haiku-latest"),
    auth=anthropic_auth,
    chat_checks=(anthropic_thinking,),
    thinks=anthropic_thinks,
)

RULE_SETS = (MISTRAL, GROQ, GEMINI, DEEPSEEK, ANTHROPIC_COMPAT)
