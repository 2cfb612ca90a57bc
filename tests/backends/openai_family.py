"""Rule sets for OpenAI itself and for backends that answer in OpenAI's error shape.

OpenAI is one API whose rules depend on the model, so ``openai`` (gpt-4o family) and
``openai-reasoning`` (o-series, gpt-5 family) share :data:`OPENAI_CHECKS` and differ in their
models; Azure's two API surfaces put the same checks behind their own routes and credentials.
Every rule names its source next to it; "observed" means a public bug report quoting the backend's
answer, "documented" the backend's own docs or source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tests.backends.fake import Refusal, Request, RuleSet, mentions, one_of, openai_error
from tests.fake_upstream import Invalid, validate_chat

# --- reasoning models -----------------------------------------------------------------------

# Accepted reasoning_effort values and the default, per model family (first match wins).
# Documented: openai/openai-openapi's ReasoningEffort description (mirrored on docs.rs,
# agentsdk_openai::api::types::ReasoningEffort): values none/minimal/low/medium/high/xhigh;
# "gpt-5.1 defaults to none ... supported values for gpt-5.1 are none, low, medium, and high";
# "All models before gpt-5.1 default to medium ... and do not support none"; "gpt-5-pro defaults
# to (and only supports) high"; "xhigh is supported for all models after gpt-5.1-codex-max".
# `minimal` arrived with gpt-5 (openai/openai-agents-python#1439); o-series take low/medium/high
# (docs.rs openai-tools ReasoningEffort table: "o1, o3, o4 series: low, medium, high").
EFFORTS: tuple[tuple[re.Pattern[str], tuple[str, ...], str], ...] = (
    (re.compile(r"gpt-5-pro"), ("high",), "high"),
    (re.compile(r"gpt-5\.[2-9]"), ("none", "low", "medium", "high", "xhigh"), "none"),
    (re.compile(r"gpt-5\.1"), ("none", "low", "medium", "high"), "none"),
    (re.compile(r"gpt-5"), ("minimal", "low", "medium", "high"), "medium"),
    (re.compile(r"o\d"), ("low", "medium", "high"), "medium"),
)
# Parameters reasoning models refuse. Documented: OpenAI's reasoning guide, "limitations" (cited
# by vercel/ai's reasoning-model handling, vercel/ai#10932); observed answers quoted below.
SAMPLING = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
)
# With reasoning_effort "none", gpt-5.1 and later take temperature, top_p and logprobs again
# (vercel/ai#10932, quoting OpenAI's docs).
NONE_EFFORT_ALLOWS = frozenset({"temperature", "top_p", "logprobs", "top_logprobs"})


def reasoning_family(model: str) -> tuple[tuple[str, ...], str] | None:
    for pattern, values, default in EFFORTS:
        if pattern.match(model):
            return values, default
    return None


def effective_effort(req: Request) -> str | None:
    family = reasoning_family(req.model)
    if family is None:
        return None
    value = req.params.get("reasoning_effort", family[1])
    return value if isinstance(value, str) else family[1]


def _shown(value: Any) -> str:
    """A value as OpenAI quotes it in "does not support X" messages."""
    if value is None:
        return "null"
    return f"'{value}'" if isinstance(value, str) else str(value)


def max_tokens_refused(req: Request) -> Refusal | None:
    # Observed: ITSpecialist111/ai_automation_suggester#38, microsoft/vscode-copilot-release#8065,
    # griptape-ai/ComfyUI-Griptape#312 (gpt-5): type, param and code exactly so.
    if reasoning_family(req.model) and "max_tokens" in req.params:
        return openai_error(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    return None


def effort_values(req: Request) -> Refusal | None:
    if "reasoning_effort" not in req.params:
        return None
    family = reasoning_family(req.model)
    if family is None:
        # Observed on gpt-4o: "Unrecognized request argument supplied: reasoning_effort", param
        # and code null (AAswordman/Operit#1048).
        return openai_error("Unrecognized request argument supplied: reasoning_effort")
    value = req.params["reasoning_effort"]
    if value not in family[0]:
        # Observed: livekit/agents#3966 (gpt-5.1, null), Kilo-Org/cloud#3807 ('none' on a
        # model without it): "Unsupported value: 'reasoning_effort' does not support X with this
        # model. Supported values are: ...", code unsupported_value.
        return openai_error(
            f"Unsupported value: 'reasoning_effort' does not support {_shown(value)} with this "
            f"model. Supported values are: {one_of(family[0])}.",
            "reasoning_effort",
            "unsupported_value",
        )
    return None


def sampling_refused(req: Request) -> Refusal | None:
    if reasoning_family(req.model) is None:
        return None
    none_effort = effective_effort(req) == "none"
    for name in SAMPLING:
        if name not in req.params or (none_effort and name in NONE_EFFORT_ALLOWS):
            continue
        if name == "temperature":
            if req.params[name] == 1:
                continue
            # Observed: gabrii/Cursor-Azure-GPT-5#33, holoviz/lumen#1087, OpenHands#4131.
            return openai_error(
                f"Unsupported value: 'temperature' does not support {req.params[name]} with this "
                "model. Only the default (1) value is supported.",
                "temperature",
                "unsupported_value",
            )
        # Observed: aandrew-me/tgpt#333 (top_p, o1), nextai-translator#1781 (presence_penalty,
        # gpt-5-mini); the other names follow the same template.
        return openai_error(
            f"Unsupported parameter: '{name}' is not supported with this model.",
            name,
            "unsupported_parameter",
        )
    return None


def json_mode_needs_json(req: Request) -> Refusal | None:
    # Documented (API reference, response_format): JSON mode needs the model told to produce
    # JSON; the API enforces it. Message observed (errornotes.dev "Fixing OpenAI 400: Why JSON
    # Mode Requires the word 'json'", quoting the SDK's BadRequestError), param "messages".
    fmt = req.params.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object" and not mentions(req, "json"):
        return openai_error(
            "'messages' must contain the word 'json' in some form, to use 'response_format' of "
            "type 'json_object'.",
            "messages",
        )
    return None


def openai_shape(req: Request) -> Refusal | None:
    """The strict structural validation of tests/fake_upstream.py (unknown parameters, tool
    pairing, content shapes), with the model the rule set resolved."""
    try:
        validate_chat({**req.params, "model": req.model}, set())
    except Invalid as exc:
        return openai_error(str(exc))
    except (TypeError, AttributeError, KeyError, IndexError) as exc:
        return openai_error(f"Invalid request body: {exc}")
    return None


def dimensions_supported(req: Request) -> Refusal | None:
    # Observed: SciPhi-AI/R2R#768, sbintuitions/JMTEB#14 (even dimensions=null is refused),
    # camel-ai/camel#902: text-embedding-ada-002 answers 400, param and code null.
    if req.model == "text-embedding-ada-002" and "dimensions" in req.params:
        return openai_error("This model does not support specifying dimensions.")
    return None


OPENAI_CHECKS = (
    max_tokens_refused,
    effort_values,
    sampling_refused,
    json_mode_needs_json,
    openai_shape,
)


def openai_thinks(req: Request) -> bool:
    effort = effective_effort(req)
    return effort is not None and effort != "none"


def _openai(name: str, summary: str, models: tuple[str, ...]) -> RuleSet:
    return RuleSet(
        name=name,
        summary=summary,
        models=models,
        chat_checks=OPENAI_CHECKS,
        embedding_checks=(dimensions_supported,),
        thinks=openai_thinks,
        # Chat Completions never returns the reasoning itself, only its token count (API
        # reference: usage.completion_tokens_details.reasoning_tokens).
        reasoning_tokens=True,
    )


OPENAI = _openai(
    "openai",
    "gpt-4o family: JSON mode needs 'json' in a message; reasoning_effort is refused",
    ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "text-embedding-3-small", "text-embedding-ada-002"),
)
OPENAI_REASONING = _openai(
    "openai-reasoning",
    "o-series and gpt-5 family: max_completion_tokens, default sampling, per-model efforts",
    (
        "o1",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-5.1",
        "gpt-5.2",
        "gpt-5-pro",
    ),
)
EMBEDDINGS_NO_DIMENSIONS = RuleSet(
    name="embeddings-no-dimensions",
    summary="text-embedding-ada-002 refuses 'dimensions'; text-embedding-3-* honours it",
    models=("text-embedding-ada-002", "text-embedding-3-small"),
    embedding_checks=(dimensions_supported,),
)

# --- Azure OpenAI ---------------------------------------------------------------------------

AZURE_DEPLOYMENTS = {
    "gpt-4o": "gpt-4o",
    "o3-mini": "o3-mini",
    "gpt-5": "gpt-5",
    "embed-small": "text-embedding-3-small",
    "ada": "text-embedding-ada-002",
}
# A Microsoft Entra token the fake accepts as "Authorization: Bearer" on the classic surface.
AZURE_ENTRA_TOKEN = "entra-token-for-tests"
# Observed: MicrosoftDocs/azure-docs#114602 (no api-version: 404, not 400),
# ThinkInAIXYZ/deepchat#262 (the body).
AZURE_NOT_FOUND = Refusal(404, {"error": {"code": "404", "message": "Resource not found"}})


def _azure_deployment_not_found() -> Refusal:
    # Observed: chatboxai/chatbox#646, MicrosoftDocs/azure-docs#114013 (404, DeploymentNotFound).
    return Refusal(
        404,
        {
            "error": {
                "code": "DeploymentNotFound",
                "message": "The API deployment for this resource does not exist. If you created "
                "the deployment within the last 5 minutes, please wait a moment and try again.",
            }
        },
    )


AZURE_CLASSIC_PATH = re.compile(r"/openai/deployments/([^/]+)/(chat/completions|embeddings)")


def azure_classic_route(
    method: str, path: str, query: Mapping[str, str]
) -> tuple[str, str | None] | Refusal:
    # Documented (Azure OpenAI REST reference, "data plane - inference"): POST
    # {endpoint}/openai/deployments/{deployment-id}/chat/completions?api-version=... and
    # .../embeddings; the api-version query parameter is required.
    match = AZURE_CLASSIC_PATH.fullmatch(path)
    if method != "POST" or match is None or not query.get("api-version"):
        return AZURE_NOT_FOUND
    return ("chat" if match.group(2) == "chat/completions" else "embeddings"), match.group(1)


def _invalid_key() -> Refusal:
    # Observed: SciSharp/BotSharp#386, microsoft/genaiscript#781 (a wrong api-key).
    return Refusal(
        401,
        {
            "error": {
                "code": "401",
                "message": "Access denied due to invalid subscription key or wrong API endpoint. "
                "Make sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource.",
            }
        },
    )


def azure_classic_auth(req: Request, key: str) -> Refusal | None:
    # Documented (REST reference, "Authentication"): an `api-key` header, or Microsoft Entra ID
    # as "Authorization: Bearer <token>".
    api_key = req.headers.get("api-key")
    if api_key is not None:
        return None if api_key == key else _invalid_key()
    authorization = req.headers.get("Authorization", "")
    if authorization == f"Bearer {AZURE_ENTRA_TOKEN}":
        return None
    if authorization.startswith("Bearer "):
        # Observed when an API key is sent as a Bearer token: FlowiseAI/Flowise#710,
        # run-llama/llama_index#12484 (a bare {"statusCode", "message"} object).
        return Refusal(
            401,
            {
                "statusCode": 401,
                "message": "Unauthorized. Access token is missing, invalid, audience is incorrect "
                "(https://cognitiveservices.azure.com), or have expired.",
            },
        )
    # Observed: openai/openai-python#1527, continuedev/continue#4601 (no key at all).
    return Refusal(
        401,
        {
            "statusCode": 401,
            "message": "Access denied due to missing subscription key. Make sure to include "
            "subscription key when making requests to an API.",
        },
    )


def azure_classic_model(req: Request) -> str | Refusal:
    model = AZURE_DEPLOYMENTS.get(req.deployment or "")
    return model if model is not None else _azure_deployment_not_found()


AZURE_CLASSIC = RuleSet(
    name="azure-classic",
    summary="/openai/deployments/{d}/... with ?api-version= and an api-key header",
    models=tuple(sorted(set(AZURE_DEPLOYMENTS.values()))),
    base_path="/openai",
    route=azure_classic_route,
    auth=azure_classic_auth,
    resolve_model=azure_classic_model,
    chat_checks=OPENAI_CHECKS,
    embedding_checks=(dimensions_supported,),
    thinks=openai_thinks,
    reasoning_tokens=True,
)


def azure_v1_route(
    method: str, path: str, query: Mapping[str, str]
) -> tuple[str, str | None] | Refusal:
    # Documented (learn.microsoft.com .../openai/api-version-lifecycle, "v1 API"): the OpenAI
    # client with base_url https://RESOURCE.openai.azure.com/openai/v1/, no api-version needed,
    # `model` is the deployment name.
    table = {
        ("POST", "/openai/v1/chat/completions"): "chat",
        ("POST", "/openai/v1/embeddings"): "embeddings",
        ("GET", "/openai/v1/models"): "models",
    }
    kind = table.get((method, path))
    return (kind, None) if kind is not None else AZURE_NOT_FOUND


def azure_v1_auth(req: Request, key: str) -> Refusal | None:
    # Documented (same page): "API Key" examples pass the key as the OpenAI client's api_key,
    # i.e. "Authorization: Bearer <key>"; the api-key header keeps working.
    if req.headers.get("api-key") == key or req.headers.get("Authorization") == f"Bearer {key}":
        return None
    if req.headers.get("api-key") is None and not req.headers.get("Authorization"):
        return azure_classic_auth(req, key)
    return _invalid_key()


def azure_v1_model(req: Request) -> str | Refusal:
    model = AZURE_DEPLOYMENTS.get(str(req.params.get("model", "")))
    return model if model is not None else _azure_deployment_not_found()


AZURE_V1 = RuleSet(
    name="azure-v1",
    summary="/openai/v1/... with api-key or Bearer; `model` names the deployment",
    models=AZURE_CLASSIC.models,
    base_path="/openai/v1",
    route=azure_v1_route,
    auth=azure_v1_auth,
    resolve_model=azure_v1_model,
    chat_checks=OPENAI_CHECKS,
    embedding_checks=(dimensions_supported,),
    thinks=openai_thinks,
    reasoning_tokens=True,
)

# --- a backend that refuses a parameter nobody could know about ------------------------------


def unknown_parameter(style: str, param: str, value: Any, model: str) -> Refusal:
    """A refusal of ``param`` in the wording of a given server family."""
    if style == "openai":
        # Observed: cursor/cursor#2786 (reasoning_effort on o1-mini), 64bit/async-openai#386,
        # teabranch/open-responses-server#41: param set, code unknown_parameter.
        return openai_error(f"Unknown parameter: '{param}'.", param, "unknown_parameter")
    if style == "openai-legacy":
        # Observed: openai/openai-python#433, BerriAI/litellm#10791 (param and code null).
        return openai_error(f"Unrecognized request argument supplied: {param}")
    if style == "vllm":
        # Observed: modelscope/ms-agent#489, 1Panel-dev/MaxKB#2912, vllm-project/vllm#3657:
        # vLLM's pydantic errors, repr'd, in {"object": "error", ...} with code 400.
        detail = [
            {
                "type": "extra_forbidden",
                "loc": ("body", param),
                "msg": "Extra inputs are not permitted",
                "input": value,
            }
        ]
        return Refusal(
            400,
            {
                "object": "error",
                "message": str(detail),
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
        )
    if style == "litellm":
        # Observed by running litellm[proxy]==1.106.12 in front of this fake (OpenAI provider,
        # reasoning_effort to gpt-4o-mini): the proxy's own UnsupportedParamsError, 400, type
        # invalid_request_error, code "400"; BerriAI/litellm#14753 quotes the first sentence.
        message = (
            f"litellm.UnsupportedParamsError: openai does not support parameters: ['{param}'], "
            f"for model={model}. To drop these, set `litellm.drop_params=True` or for proxy:\n\n"
            "`litellm_settings:\n drop_params: true`\n. \n If you want to use these params "
            f"dynamically send allowed_openai_params=['{param}'] in your request.\n\nLiteLLM: "
            f"model group '{model}' failed with the error above. No fallback was attempted."
        )
        return Refusal(
            400,
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "400",
                }
            },
        )
    raise ValueError(style)


def strict_unknown(
    name: str, style: str, refuse: tuple[str, ...] = ("parallel_tool_calls",)
) -> RuleSet:
    """An OpenAI-like backend that refuses the parameters ``refuse`` -- ones no backend profile
    lists -- in the wording of ``style``, for testing an adaptive fallback (drop and retry)."""

    def check(req: Request) -> Refusal | None:
        for param in refuse:
            if param in req.params:
                return unknown_parameter(style, param, req.params[param], req.model)
        return None

    return RuleSet(
        name=name,
        summary=f"refuses {', '.join(refuse)} ({style} wording)",
        models=("gpt-4o-mini", "qwen3:8b"),
        chat_checks=(check,),
        embedding_checks=(check,),
    )


STRICT_UNKNOWN = strict_unknown("strict-unknown", "openai")
STRICT_UNKNOWN_LEGACY = strict_unknown("strict-unknown-legacy", "openai-legacy")
STRICT_UNKNOWN_VLLM = strict_unknown("strict-unknown-vllm", "vllm")
STRICT_UNKNOWN_LITELLM = strict_unknown("strict-unknown-litellm", "litellm")

RULE_SETS = (
    OPENAI,
    OPENAI_REASONING,
    EMBEDDINGS_NO_DIMENSIONS,
    AZURE_CLASSIC,
    AZURE_V1,
    STRICT_UNKNOWN,
    STRICT_UNKNOWN_LEGACY,
    STRICT_UNKNOWN_VLLM,
    STRICT_UNKNOWN_LITELLM,
)
