"""The OpenAPI document: FastAPI's generated paths, completed from the tables below.

Handlers read raw bodies on the hot path (no pydantic models), so FastAPI cannot infer what they
answer. The descriptions, examples, response schemas and error responses live here, as data, and
are merged into the generated document once, at first request. tests/unit/test_openapi.py checks
that every operation is documented, and tests/integration/test_openapi_examples.py sends every
request example to the running proxy and compares the answer with the response example.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.responses import Response

DESCRIPTION = """Ollama's REST API on port 11434, served from any OpenAI-compatible backend, so
programs written for Ollama (its SDKs, LangChain, n8n, Open WebUI, VS Code Copilot) run unchanged.
Also forwards the OpenAI API under `/v1`.

Errors on `/api/*` are `{"error": "..."}` with Ollama's statuses; on `/v1/*`, OpenAI's error
object. Streams are NDJSON (`application/x-ndjson`); an error after a stream has started is its
last line. Guides: the `docs/` folder of the repository."""

NDJSON = "application/x-ndjson"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_OBJ = {"type": "object"}


def _obj(required: tuple[str, ...] = (), **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


_TOOL_CALL = _obj(
    ("function",),
    id=_STR,
    function=_obj(("name", "arguments"), name=_STR, arguments=_OBJ, index=_INT),
)
_MESSAGE = _obj(
    ("role", "content"),
    role=_STR,
    content=_STR,
    thinking=_STR,
    images={"type": "array", "items": _STR},
    tool_calls={"type": "array", "items": _TOOL_CALL},
    tool_name=_STR,
)
# Durations are nanoseconds, as Ollama reports them; counts are the backend's token usage.
_DONE_FIELDS = {
    "done_reason": _STR,
    "total_duration": _INT,
    "load_duration": _INT,
    "prompt_eval_count": _INT,
    "prompt_eval_duration": _INT,
    "eval_count": _INT,
    "eval_duration": _INT,
}
_DETAILS = _obj(
    parent_model=_STR,
    format=_STR,
    family=_STR,
    families={"type": ["array", "null"], "items": _STR},
    parameter_size=_STR,
    quantization_level=_STR,
)
_MODEL_ENTRY = _obj(
    ("name", "model", "modified_at", "size", "digest", "details"),
    name=_STR,
    model=_STR,
    modified_at=_STR,
    size=_INT,
    digest=_STR,
    details=_ref("ModelDetails"),
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        **_obj(("error",), error=_STR),
        "description": "Ollama's error shape; on a stream that already started, the last line.",
    },
    "OpenAIError": _obj(
        ("error",),
        error=_obj(("message",), message=_STR, type=_STR, param=_STR, code=_STR),
    ),
    "Message": _MESSAGE,
    "ModelDetails": _DETAILS,
    "ChatResponse": _obj(
        ("model", "created_at", "message", "done"),
        model=_STR,
        created_at={"type": "string", "format": "date-time"},
        message=_ref("Message"),
        done=_BOOL,
        **_DONE_FIELDS,
    ),
    "GenerateResponse": _obj(
        ("model", "created_at", "response", "done"),
        model=_STR,
        created_at={"type": "string", "format": "date-time"},
        response=_STR,
        thinking=_STR,
        done=_BOOL,
        context={"type": "array", "items": _INT},
        **_DONE_FIELDS,
    ),
    "EmbedResponse": _obj(
        ("model", "embeddings"),
        model=_STR,
        embeddings={"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        total_duration=_INT,
        load_duration=_INT,
        prompt_eval_count=_INT,
    ),
    "EmbeddingsResponse": _obj(
        ("embedding",), embedding={"type": "array", "items": {"type": "number"}}
    ),
    "TagsResponse": _obj(("models",), models={"type": "array", "items": _MODEL_ENTRY}),
    "PsResponse": _obj(
        ("models",),
        models={
            "type": "array",
            "items": _obj(
                ("name", "model", "size", "digest", "details", "expires_at", "size_vram"),
                name=_STR,
                model=_STR,
                size=_INT,
                digest=_STR,
                details=_ref("ModelDetails"),
                expires_at={"type": "string", "format": "date-time"},
                size_vram=_INT,
                context_length=_INT,
            ),
        },
    ),
    "ShowResponse": _obj(
        ("details", "model_info", "capabilities"),
        modelfile=_STR,
        parameters=_STR,
        template=_STR,
        details=_ref("ModelDetails"),
        model_info={"type": "object", "additionalProperties": True},
        capabilities={"type": "array", "items": _STR},
        modified_at=_STR,
    ),
    "ProgressResponse": _obj(("status",), status=_STR),
    "Readiness": _obj(("status",), status=_STR, circuit_breaker=_STR, error=_STR),
    "VersionResponse": _obj(("version",), version=_STR),
}

CREATED = "2026-11-23T10:00:00.000000Z"
# The backend reports no load or prompt-evaluation time, so those two are left out.
_DONE_EXAMPLE = {
    "done_reason": "stop",
    "total_duration": 412000000,
    "prompt_eval_count": 9,
    "eval_count": 2,
    "eval_duration": 398000000,
}
_HELLO = [{"role": "user", "content": "Say hello"}]


def _json(schema: dict[str, Any], example: Any, description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema, "example": example}},
    }


def _stream_or_json(schema: str, lines: list[Any], single: Any) -> dict[str, Any]:
    text = "".join(f"{_dumps(line)}\n" for line in lines)
    return {
        "description": "With `stream` true (the default), one JSON object per line "
        f"(`{NDJSON}`), the last with `done: true`; with `stream: false`, one object.",
        "content": {
            NDJSON: {"schema": _ref(schema), "example": text},
            "application/json": {"schema": _ref(schema), "example": single},
        },
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# operationId -> what FastAPI cannot know: description, request example, 200 answer, errors.
OPERATIONS: dict[str, dict[str, Any]] = {
    "chat": {
        "description": "Translated to the backend's `POST /v1/chat/completions`. Messages (system, "
        "user, assistant, tool), images, `tools` and tool calls (arguments as objects), `format` "
        "(JSON or a JSON schema), `think`, and `options` (temperature, top_p, seed, stop, "
        "num_predict...) are mapped; options the backend has no equivalent for are logged and "
        "dropped. See docs/API_COMPATIBILITY.md.",
        "request": {"model": "gpt-4o-mini", "messages": _HELLO, "stream": False},
        "response": _stream_or_json(
            "ChatResponse",
            [
                {
                    "model": "gpt-4o-mini",
                    "created_at": CREATED,
                    "message": {"role": "assistant", "content": "Hello"},
                    "done": False,
                },
                {
                    "model": "gpt-4o-mini",
                    "created_at": CREATED,
                    "message": {"role": "assistant", "content": "!"},
                    "done": False,
                },
                {
                    "model": "gpt-4o-mini",
                    "created_at": CREATED,
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    **_DONE_EXAMPLE,
                },
            ],
            {
                "model": "gpt-4o-mini",
                "created_at": CREATED,
                "message": {"role": "assistant", "content": "Hello!"},
                "done": True,
                **_DONE_EXAMPLE,
            },
        ),
        "errors": (400, 401, 404, 413, 429, 502, 503, 504),
    },
    "generate": {
        "description": "`prompt`, `system` and `images` become chat messages for "
        "`POST /v1/chat/completions`; `suffix` (fill-in-the-middle) and `raw` go to "
        "`POST /v1/completions`. An empty prompt loads the model, as Ollama does (`done_reason: "
        "load`).",
        "request": {"model": "gpt-4o-mini", "prompt": "Say hello", "stream": False},
        "response": _stream_or_json(
            "GenerateResponse",
            [
                {
                    "model": "gpt-4o-mini",
                    "created_at": CREATED,
                    "response": "Hello!",
                    "done": False,
                },
                {
                    "model": "gpt-4o-mini",
                    "created_at": CREATED,
                    "response": "",
                    "done": True,
                    **_DONE_EXAMPLE,
                },
            ],
            {
                "model": "gpt-4o-mini",
                "created_at": CREATED,
                "response": "Hello!",
                "done": True,
                **_DONE_EXAMPLE,
            },
        ),
        "errors": (400, 401, 404, 413, 429, 502, 503, 504),
    },
    "embed": {
        "description": "One call to the backend's `POST /v1/embeddings` for all inputs; vectors "
        "are L2-normalised as Ollama returns them.",
        "request": {"model": "text-embedding-3-small", "input": ["first text", "second text"]},
        "response": _json(
            _ref("EmbedResponse"),
            {
                "model": "text-embedding-3-small",
                "embeddings": [[0.6, 0.8], [0.8, -0.6]],
                "total_duration": 21000000,
                "prompt_eval_count": 4,
            },
        ),
        "errors": (400, 401, 404, 413, 429, 502, 503, 504),
    },
    "embeddings": {
        "description": "The legacy single-prompt API: one vector, not normalised.",
        "request": {"model": "text-embedding-3-small", "prompt": "some text"},
        "response": _json(_ref("EmbeddingsResponse"), {"embedding": [0.3, 0.4]}),
        "errors": (400, 401, 404, 413, 429, 502, 503, 504),
    },
    "tags": {
        "description": "The backend's `GET /v1/models`, cached for MODELS_CACHE_TTL, plus the "
        "aliases of MODEL_MAPPING_FILE. Sizes and digests are placeholders: the backend does "
        "not publish them.",
        "response": _json(
            _ref("TagsResponse"),
            {
                "models": [
                    {
                        "name": "gpt-4o-mini",
                        "model": "gpt-4o-mini",
                        "modified_at": CREATED,
                        "size": 0,
                        "digest": "8d5f5ef1b0e1a4c3c2d1f0e9d8c7b6a5"
                        "f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9",
                        "details": {
                            "parent_model": "",
                            "format": "gguf",
                            "family": "gpt",
                            "families": ["gpt"],
                            "parameter_size": "",
                            "quantization_level": "",
                        },
                    }
                ]
            },
        ),
        "errors": (401, 502, 503, 504),
    },
    "show": {
        "description": "Details, `capabilities` (completion, tools, vision, thinking, "
        "embedding, insert) and `model_info` with `<family>.context_length`, from what the "
        "backend publishes, MODEL_MAPPING_FILE, or defaults.",
        "request": {"model": "gpt-4o-mini"},
        "response": _json(
            _ref("ShowResponse"),
            {
                "modelfile": "",
                "parameters": "",
                "template": "",
                "details": {"format": "gguf", "family": "gpt", "families": ["gpt"]},
                "model_info": {"general.architecture": "gpt", "gpt.context_length": 128000},
                "capabilities": ["completion", "tools", "vision"],
                "modified_at": CREATED,
            },
        ),
        "errors": (400, 401, 404, 502, 503, 504),
    },
    "ps": {
        "description": "Models this proxy served within their `keep_alive`; nothing is loaded "
        "anywhere, so sizes are zero.",
        "response": _json(_ref("PsResponse"), {"models": []}),
        "errors": (401,),
    },
    "pull": {
        "description": "Nothing to download: succeeds (as a stream of one status line, or one "
        "object with `stream: false`) when the backend serves the model, 404 otherwise. Clients "
        'that "check, then pull" a model keep working.',
        "request": {"model": "gpt-4o-mini", "stream": False},
        "response": _json(_ref("ProgressResponse"), {"status": "success"}),
        "errors": (400, 401, 404, 502, 503, 504),
    },
    "version": {"response": _json(_ref("VersionResponse"), {"version": "0.13.0"}), "errors": ()},
    "root": {"errors": ()},
    "health": {
        "description": "Never calls the backend: for liveness probes and the container "
        "HEALTHCHECK. Open even when PROXY_API_KEYS is set.",
        "response": _json(_obj(("status",), status=_STR), {"status": "ok"}),
        "errors": (),
    },
    "ready": {
        "description": "Asks the backend for its model list within HEALTH_CHECK_TIMEOUT; 503 "
        "when it cannot answer or the circuit breaker is open.",
        "response": _json(_ref("Readiness"), {"status": "ready", "circuit_breaker": "closed"}),
        "extra": {
            "503": _json(
                _ref("Readiness"),
                {
                    "status": "unavailable",
                    "error": "cannot reach the backend at http://127.0.0.1:8000/v1",
                    "circuit_breaker": "closed",
                },
                "The backend did not answer, or the circuit breaker is open.",
            )
        },
        "errors": (401,),
    },
    "proxy_version": {
        "description": "Version, git commit, build date, Python, memory allocator and library "
        "versions. 404 when VERSION_ENDPOINT_ENABLED is false.",
        "response": _json(
            _OBJ,
            {
                "name": "ollama-openai-proxy",
                "version": "0.1.0",
                "git_commit": "0123456789ab",
                "build_date": None,
                "python": "3.12.8",
                "allocator": "jemalloc",
                "dependencies": {"aiohttp": "3.14.5"},
            },
        ),
        "errors": (401, 404),
    },
    "metrics": {
        "description": "Prometheus text format: requests, latency, time to first token, "
        "backend latency, tokens, retries, open streams, breaker state, process CPU and memory.",
        "response": {
            "description": "OK",
            "content": {
                "text/plain": {
                    "schema": _STR,
                    "example": "# TYPE ollama_proxy_streams_in_flight gauge\n"
                    "ollama_proxy_streams_in_flight 3.0\n",
                }
            },
        },
        "errors": (401,),
    },
}
for _name in ("push", "create", "copy", "delete", "create_blob"):
    OPERATIONS[_name] = {
        "description": "Models live on the backend; this proxy cannot create or change them.",
        "never_succeeds": True,
        "errors": (401, 501),
    }
_FORWARDED = (
    "Forwarded to the backend's `{path}` as is (model aliases applied); streams are passed on "
    "byte for byte as they arrive. Requests and answers are OpenAI's "
    "(https://platform.openai.com/docs/api-reference); so are the errors."
)
_OPENAI_ERRORS = (400, 401, 404, 413, 429, 502, 503, 504)
_OPENAI_GET_ERRORS = (401, 404, 429, 502, 503, 504)
OPERATIONS.update(
    {
        "openai_chat_completions": {
            "description": _FORWARDED.format(path="/v1/chat/completions"),
            "openai": True,
            "request": {"model": "gpt-4o-mini", "messages": _HELLO},
            "response": _json(
                _OBJ,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1763892000,
                    "model": "gpt-4o-mini",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "Hello!"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
                },
            ),
            "errors": _OPENAI_ERRORS,
        },
        "openai_completions": {
            "description": _FORWARDED.format(path="/v1/completions"),
            "openai": True,
            "request": {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello"},
            "errors": _OPENAI_ERRORS,
        },
        "openai_embeddings": {
            "description": _FORWARDED.format(path="/v1/embeddings"),
            "openai": True,
            "request": {"model": "text-embedding-3-small", "input": "some text"},
            "response": _json(
                _OBJ,
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.3, 0.4]}],
                    "model": "text-embedding-3-small",
                    "usage": {"prompt_tokens": 2, "total_tokens": 2},
                },
            ),
            "errors": _OPENAI_ERRORS,
        },
        "openai_models": {
            "description": _FORWARDED.format(path="/v1/models"),
            "openai": True,
            "response": _json(
                _OBJ,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "gpt-4o-mini",
                            "object": "model",
                            "created": 1721172741,
                            "owned_by": "system",
                        }
                    ],
                },
            ),
            "errors": _OPENAI_GET_ERRORS,
        },
        "openai_model": {
            "description": _FORWARDED.format(path="/v1/models/{model}"),
            "openai": True,
            "response": _json(
                _OBJ,
                {
                    "id": "gpt-4o-mini",
                    "object": "model",
                    "created": 1721172741,
                    "owned_by": "system",
                },
            ),
            "errors": _OPENAI_GET_ERRORS,
        },
    }
)

# Why each status happens (docs/TROUBLESHOOTING.md explains what to do about it).
ERRORS: dict[int, str] = {
    400: "Invalid request: malformed JSON, a missing or invalid field, an invalid image.",
    401: "PROXY_API_KEYS is set and the request has no valid `Authorization: Bearer` key; "
    "or the backend rejected the proxy's OPENAI_API_KEY.",
    404: 'The model is not served by the backend (`model "x" not found`), or the path is unknown.',
    413: "The body exceeds REQUEST_MAX_SIZE.",
    429: "RATE_LIMIT reached for this key or address (with Retry-After), or the backend's own "
    "rate limit after MAX_RETRIES retries.",
    501: "Not supported by this proxy.",
    502: "The backend failed or could not be reached (after retries).",
    503: "The proxy is busy (MAX_CONCURRENT_REQUESTS with a full queue) or the circuit breaker "
    "is open after repeated backend failures.",
    504: "The backend did not answer within the configured timeouts.",
}


def _error_response(status: int, openai: bool) -> dict[str, Any]:
    schema = _ref("OpenAIError" if openai else "Error")
    example = (
        {"error": {"message": ERRORS[status], "type": "invalid_request_error"}}
        if openai
        else {"error": ERRORS[status]}
    )
    return _json(schema, example, ERRORS[status])


def build(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with every operation completed from OPERATIONS."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=[
            {"name": "ollama", "description": "Ollama's REST API, translated to the backend."},
            {"name": "openai", "description": "The OpenAI API, forwarded to the backend."},
            {"name": "operations", "description": "Probes, versions and metrics."},
        ],
    )
    # FastAPI adds its validation-error schemas for path parameters; the proxy never sends them.
    doc.setdefault("components", {})["schemas"] = dict(SCHEMAS)
    doc["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "Only when PROXY_API_KEYS is set; any value is accepted otherwise.",
        }
    }
    for path, item in doc["paths"].items():
        for operation in item.values():
            spec = OPERATIONS[operation["operationId"]]
            openai = spec.get("openai", False)
            operation["tags"] = [
                "openai" if openai else "ollama" if path.startswith("/api/") else "operations"
            ]
            if "description" in spec:
                operation["description"] = spec["description"]
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's validation error: the proxy never sends it
            if spec.get("never_succeeds"):
                responses.pop("200", None)
            if "response" in spec:
                responses["200"] = spec["response"]
            responses.update(spec.get("extra", {}))
            if "request" in spec:
                body = operation.setdefault(
                    "requestBody",
                    {"required": True, "content": {"application/json": {"schema": _OBJ}}},
                )
                body["content"]["application/json"]["example"] = spec["request"]
            for status in spec["errors"]:
                responses[str(status)] = _error_response(status, openai)
            if path not in ("/", "/health"):
                operation["security"] = [{}, {"bearer": []}]
    return doc


def install(app: FastAPI, yaml_url: str | None) -> None:
    """Serve :func:`build`'s document as the app's OpenAPI (and as YAML at ``yaml_url``)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
    if yaml_url is None:
        return
    text: list[str] = []

    async def openapi_yaml(_: Request) -> Response:
        if not text:
            text.append(yaml.safe_dump(document(), sort_keys=False, allow_unicode=True))
        return Response(text[0], media_type="application/yaml")

    app.add_route(yaml_url, openapi_yaml, methods=["GET"], include_in_schema=False)
