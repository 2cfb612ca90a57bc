"""Response shapes of the OpenAPI document (JSON Schema, as OpenAPI 3.1 uses it) and the reasons
behind each error status."""

from __future__ import annotations

from typing import Any

NDJSON = "application/x-ndjson"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


STR = {"type": "string"}
NULLABLE_STR = {"type": ["string", "null"]}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
OBJ = {"type": "object"}


def obj(required: tuple[str, ...] = (), **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


_TOOL_CALL = obj(
    ("function",),
    id=STR,
    function=obj(("name", "arguments"), name=STR, arguments=OBJ, index=INT),
)
_MESSAGE = obj(
    ("role", "content"),
    role=STR,
    content=STR,
    thinking=STR,
    images={"type": "array", "items": STR},
    tool_calls={"type": "array", "items": _TOOL_CALL},
    tool_name=STR,
)
# Durations are nanoseconds, as Ollama reports them; counts are the backend's token usage.
_DONE_FIELDS = {
    "done_reason": STR,
    "total_duration": INT,
    "load_duration": INT,
    "prompt_eval_count": INT,
    "prompt_eval_duration": INT,
    "eval_count": INT,
    "eval_duration": INT,
}
_DETAILS = obj(
    parent_model=STR,
    format=STR,
    family=STR,
    families={"type": ["array", "null"], "items": STR},
    parameter_size=STR,
    quantization_level=STR,
    context_length=INT,
    embedding_length=INT,
)
# What the proxy can do with a model, as Ollama spells it (types/model/capability.go).
_CAPABILITIES = {
    "type": "array",
    "items": {
        "type": "string",
        "enum": ["completion", "tools", "insert", "vision", "embedding", "thinking"],
    },
}
_MODEL_ENTRY = obj(
    ("name", "model", "modified_at", "size", "digest", "details"),
    name=STR,
    model=STR,
    modified_at=STR,
    size=INT,
    digest=STR,
    details=ref("ModelDetails"),
    capabilities=_CAPABILITIES,
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        **obj(("error",), error=STR),
        "description": "Ollama's error shape; on a stream that already started, the last line.",
    },
    # OpenAI's Error (openai-openapi openapi.yaml): param and code are strings or null.
    "OpenAIError": obj(
        ("error",),
        error=obj(
            ("message", "type", "param", "code"),
            message=STR,
            type=STR,
            param=NULLABLE_STR,
            code=NULLABLE_STR,
        ),
    ),
    # Anthropic's error (platform.claude.com/docs/en/api/errors) and message (anthropic-sdk-python
    # types/message.py), as /v1/messages answers them.
    "AnthropicError": obj(
        ("type", "error"),
        type={"const": "error"},
        error=obj(("type", "message"), type=STR, message=STR),
    ),
    "AnthropicMessage": obj(
        ("id", "type", "role", "model", "content", "stop_reason", "usage"),
        id=STR,
        type={"const": "message"},
        role={"const": "assistant"},
        model=STR,
        content={
            "type": "array",
            "items": obj(
                ("type",),
                type={"enum": ["text", "thinking", "tool_use"]},
                text=STR,
                thinking=STR,
                signature=STR,
                id=STR,
                name=STR,
                input=OBJ,
            ),
        },
        stop_reason={"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]},
        stop_sequence=NULLABLE_STR,
        usage=obj(
            ("input_tokens", "output_tokens"),
            input_tokens=INT,
            output_tokens=INT,
            cache_read_input_tokens=INT,
        ),
    ),
    "Message": _MESSAGE,
    "ModelDetails": _DETAILS,
    "ChatResponse": obj(
        ("model", "created_at", "message", "done"),
        model=STR,
        created_at={"type": "string", "format": "date-time"},
        message=ref("Message"),
        done=BOOL,
        **_DONE_FIELDS,
    ),
    "GenerateResponse": obj(
        ("model", "created_at", "response", "done"),
        model=STR,
        created_at={"type": "string", "format": "date-time"},
        response=STR,
        thinking=STR,
        done=BOOL,
        context={"type": "array", "items": INT},
        **_DONE_FIELDS,
    ),
    "EmbedResponse": obj(
        ("model", "embeddings"),  # metrics too, but not for an empty input (Ollama's answer)
        model=STR,
        embeddings={"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        total_duration=INT,
        load_duration=INT,
        prompt_eval_count=INT,
    ),
    "EmbeddingsResponse": obj(
        ("embedding",), embedding={"type": "array", "items": {"type": "number"}}
    ),
    "TagsResponse": obj(("models",), models={"type": "array", "items": _MODEL_ENTRY}),
    "PsResponse": obj(
        ("models",),
        models={
            "type": "array",
            "items": obj(
                ("name", "model", "size", "digest", "details", "expires_at", "size_vram"),
                name=STR,
                model=STR,
                size=INT,
                digest=STR,
                details=ref("ModelDetails"),
                expires_at={"type": "string", "format": "date-time"},
                size_vram=INT,
                context_length=INT,
            ),
        },
    ),
    "ShowResponse": obj(
        ("details", "model_info", "capabilities"),
        modelfile=STR,
        parameters=STR,
        template=STR,
        details=ref("ModelDetails"),
        model_info={"type": "object", "additionalProperties": True},
        capabilities=_CAPABILITIES,
        modified_at=STR,
    ),
    "ProgressResponse": obj(("status",), status=STR),
    "Readiness": obj(
        ("status",),
        status=STR,
        circuit_breaker=STR,
        profile=STR,
        error=STR,
        upstreams={
            "type": "object",
            "description": "With UPSTREAMS_FILE: each upstream's own status, breaker, backend "
            "profile and error; with base_urls, its balance strategy and each replica's state.",
            "additionalProperties": obj(
                ("status",),
                status=STR,
                circuit_breaker=STR,
                profile=STR,
                error=STR,
                balance=STR,
                replicas={
                    "type": "array",
                    "items": obj(
                        ("replica", "state", "in_flight"),
                        replica=STR,
                        weight=INT,
                        in_flight=INT,
                        state={"type": "string", "enum": ["healthy", "ejected"]},
                        ejected_until=STR,
                        ejected_for_s={"type": "number"},
                        consecutive_failures=INT,
                        ejections=INT,
                    ),
                },
            ),
        },
    ),
    "VersionResponse": obj(("version",), version=STR),
    # api/types.go StatusResponse; source is "none", "env", "config" or "both".
    "StatusResponse": obj(("cloud",), cloud=obj(("disabled", "source"), disabled=BOOL, source=STR)),
}


def json_content(schema: dict[str, Any], example: Any, description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema, "example": example}},
    }


# Why each status happens (docs/TROUBLESHOOTING.md explains what to do about it).
ERRORS: dict[int, str] = {
    400: "Invalid request: malformed JSON, a missing or invalid field, an invalid image.",
    401: "PROXY_API_KEYS is set and the request has no valid `Authorization: Bearer` key; "
    "or the backend rejected the proxy's OPENAI_API_KEY.",
    403: "A key asked for another key's usage (only USAGE_ADMIN_KEY reads every key's), or a "
    "browser's preflight came from an origin CORS_ORIGINS does not allow.",
    404: 'The model is not served by the backend (`model "x" not found`), or the path is unknown.',
    413: "The body exceeds REQUEST_MAX_SIZE (a compressed body: once decompressed).",
    415: "The body's Content-Encoding is not one the proxy decodes (zstd, gzip, deflate, "
    "identity), or there is more than one.",
    429: "RATE_LIMIT reached for this key or address, or the key's TOKEN_BUDGET used up until "
    "its window ends (with Retry-After), or the backend's own rate limit after MAX_RETRIES "
    "retries.",
    501: "Not supported by this proxy.",
    502: "The backend failed or could not be reached (after retries).",
    503: "The proxy is busy (MAX_CONCURRENT_REQUESTS with a full queue) or the circuit breaker "
    "is open after repeated backend failures.",
    504: "The backend did not answer within the configured timeouts.",
}
