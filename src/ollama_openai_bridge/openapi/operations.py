"""What the route table (routing.py) does not say about each operation, by operationId:
description, request example, the 200 answer with its example, and the error statuses it can
answer."""

from __future__ import annotations

import json
from typing import Any

from ollama_openai_bridge.config import OLLAMA_API_VERSION
from ollama_openai_bridge.openapi.shapes import NDJSON, OBJ, STR, json_content, obj, ref
from ollama_openai_bridge.openapi.usage import USAGE

CREATED = "2026-11-23T10:00:00.000000Z"
# Unstreamed: the backend's whole time is eval time, so no prompt-evaluation time.
_DONE_EXAMPLE = {
    "done_reason": "stop",
    "total_duration": 412000000,
    "load_duration": 1200000,
    "prompt_eval_count": 9,
    "eval_count": 2,
    "eval_duration": 398000000,
}
# Ollama's order: done_reason, context, then the metrics (api/types.go GenerateResponse).
_CONTEXT_EXAMPLE = {
    "done_reason": "stop",
    "context": [4202567, 11290162, 3085124, 16042091, 9582977, 520417, 8061120],
    **{k: v for k, v in _DONE_EXAMPLE.items() if k != "done_reason"},
}
HELLO = [{"role": "user", "content": "Say hello"}]
_TEMPLATE = "{{- range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}assistant: "


def _stream_or_json(schema: str, lines: list[Any], single: Any) -> dict[str, Any]:
    text = "".join(f"{dumps(line)}\n" for line in lines)
    return {
        "description": "With `stream` true (the default), one JSON object per line "
        f"(`{NDJSON}`), the last with `done: true`; with `stream: false`, one object.",
        "content": {
            NDJSON: {"schema": ref(schema), "example": text},
            "application/json": {"schema": ref(schema), "example": single},
        },
    }


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# operationId -> what the route table does not say: description, request example, 200 answer,
# errors.
OPERATIONS: dict[str, dict[str, Any]] = {
    "chat": {
        "description": "Translated to the backend's `POST /v1/chat/completions`. Messages (system, "
        "user, assistant, tool), images, `tools` and tool calls (arguments as objects), `format` "
        "(JSON or a JSON schema), `think`, and `options` (temperature, top_p, seed, stop, "
        "num_predict...) are mapped; options the backend has no equivalent for are logged and "
        "dropped. See docs/API_COMPATIBILITY.md.",
        "request": {"model": "gpt-4o-mini", "messages": HELLO, "stream": False},
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
        "load`). The final answer (not in `raw` mode) has `context`: the conversation so far, "
        "signed (CONTEXT_SIGNING_KEY); sent back, it becomes chat history before the prompt, "
        "and one the proxy did not issue is a 400.",
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
                    **_CONTEXT_EXAMPLE,
                },
            ],
            {
                "model": "gpt-4o-mini",
                "created_at": CREATED,
                "response": "Hello!",
                "done": True,
                **_CONTEXT_EXAMPLE,
            },
        ),
        "errors": (400, 401, 404, 413, 429, 502, 503, 504),
    },
    "embed": {
        "description": "One call to the backend's `POST /v1/embeddings` for all inputs; vectors "
        "are L2-normalised as Ollama returns them.",
        "request": {"model": "text-embedding-3-small", "input": ["first text", "second text"]},
        "response": json_content(
            ref("EmbedResponse"),
            {
                "model": "text-embedding-3-small",
                "embeddings": [[0.6, 0.8], [0.8, -0.6]],
                "total_duration": 21000000,
                "load_duration": 900000,
                "prompt_eval_count": 4,
            },
        ),
        "errors": (400, 401, 404, 413, 429, 502, 503, 504),
    },
    "embeddings": {
        "description": "The legacy single-prompt API: one vector, not normalised.",
        "request": {"model": "text-embedding-3-small", "prompt": "some text"},
        "response": json_content(ref("EmbeddingsResponse"), {"embedding": [0.3, 0.4]}),
        "errors": (400, 401, 404, 413, 429, 502, 503, 504),
    },
    "tags": {
        "description": "The backend's `GET /v1/models`, cached for MODELS_CACHE_TTL, plus the "
        "aliases of MODEL_MAPPING_FILE. Sizes and digests are placeholders: the backend does "
        "not publish them. `capabilities` and `details.context_length` (and an embedding "
        "model's `embedding_length`, when known) as Ollama 0.30.0 lists them, from what the "
        "backend publishes, MODEL_MAPPING_FILE or the model's family.",
        "response": json_content(
            ref("TagsResponse"),
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
                            "context_length": 128000,
                        },
                        "capabilities": ["completion", "tools", "insert", "vision"],
                    }
                ]
            },
        ),
        "errors": (401, 502, 503, 504),
    },
    "show": {
        "description": "Details, `capabilities` (completion, tools, vision, thinking, "
        "embedding, insert) and `model_info` with `<family>.context_length`, from what the "
        "backend publishes, MODEL_MAPPING_FILE, or defaults. `template` shows what reaches the "
        "backend (`.Suffix` where it takes fill-in-the-middle, `.Tools`, `.Thinking`), "
        "`parameters` the context length as `num_ctx`.",
        "request": {"model": "gpt-4o-mini"},
        "response": json_content(
            ref("ShowResponse"),
            {
                "modelfile": "# Modelfile generated by ollama-openai-bridge\nFROM gpt-4o-mini\n"
                f'TEMPLATE """{_TEMPLATE}"""\nPARAMETER num_ctx 128000\n',
                "parameters": "num_ctx                        128000",
                "template": _TEMPLATE,
                "details": {"format": "gguf", "family": "gpt", "families": ["gpt"]},
                "model_info": {"general.architecture": "gpt", "gpt.context_length": 128000},
                "capabilities": ["completion", "tools", "vision"],
                "modified_at": CREATED,
            },
        ),
        "errors": (400, 401, 404, 502, 503, 504),
    },
    "ps": {
        "description": "Models this proxy served, or was asked to load (a chat without "
        "messages, a generate without prompt), within their `keep_alive`; `keep_alive: 0` "
        "unloads. Nothing is loaded anywhere, so sizes are zero.",
        "response": json_content(ref("PsResponse"), {"models": []}),
        "errors": (401,),
    },
    "pull": {
        "description": "Nothing to download: succeeds (as a stream of one status line, or one "
        "object with `stream: false`) when the backend serves the model, 404 otherwise. Clients "
        'that "check, then pull" a model keep working.',
        "request": {"model": "gpt-4o-mini", "stream": False},
        "response": {
            "description": "With `stream` true (the default), one status per line "
            f"(`{NDJSON}`), the last `success`; with `stream: false`, one object.",
            "content": {
                NDJSON: {
                    "schema": ref("ProgressResponse"),
                    "example": '{"status":"pulling manifest"}\n{"status":"success"}\n',
                },
                "application/json": {
                    "schema": ref("ProgressResponse"),
                    "example": {"status": "success"},
                },
            },
        },
        "errors": (400, 401, 404, 502, 503, 504),
    },
    "version": {
        "response": json_content(ref("VersionResponse"), {"version": OLLAMA_API_VERSION}),
        "errors": (),
    },
    "status": {
        "description": "Ollama's cloud status (Ollama 0.16.2): there is no Ollama cloud behind "
        "this proxy (no cloud models, no web search), so its cloud features are always "
        "disabled by configuration; `ollama launch` then offers no cloud model.",
        "response": json_content(
            ref("StatusResponse"), {"cloud": {"disabled": True, "source": "config"}}
        ),
        "errors": (401,),
    },
    "root": {"errors": ()},
    "health": {
        "description": "Never calls the backend: for liveness probes and the container "
        "HEALTHCHECK. Open even when PROXY_API_KEYS is set.",
        "response": json_content(obj(("status",), status=STR), {"status": "ok"}),
        "errors": (),
    },
    "ready": {
        "description": "Asks the backend for its model list within HEALTH_CHECK_TIMEOUT; 503 "
        "when it cannot answer or the circuit breaker is open. With several backends "
        "(UPSTREAMS_FILE), ready while any of them answers, each one's state under `upstreams`.",
        "response": json_content(
            ref("Readiness"), {"status": "ready", "circuit_breaker": "closed"}
        ),
        "extra": {
            "503": json_content(
                ref("Readiness"),
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
        "response": json_content(
            OBJ,
            {
                "name": "ollama-openai-bridge",
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
                    "schema": STR,
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
OPERATIONS["create_blob"]["path_examples"] = {
    "digest": "sha256:29fdb92e57cf0827ded04ae6461b5931d01fa595843f55d36f5b275a52087dd2"
}
_FORWARDED = (
    "Forwarded to the backend's `{path}` as is (model aliases applied); streams are passed on "
    "byte for byte as they arrive. Requests and answers are OpenAI's "
    "(https://platform.openai.com/docs/api-reference); so are the errors."
)
OPENAI_ERRORS = (400, 401, 404, 413, 429, 502, 503, 504)
_OPENAI_GET_ERRORS = (401, 404, 429, 502, 503, 504)


def _openai_body(*required: str, **props: Any) -> dict[str, Any]:
    """What OpenAI's API requires of a request body (openai-openapi: CreateChatCompletionRequest
    and the others); the rest is the backend's to check, the body being forwarded as sent."""
    return {
        "type": "object",
        "required": ["model", *required],
        "properties": {"model": STR, **props},
    }


# An id /v1/models/{model} forwards: at most 256 characters of printable ASCII without
# ? # % \ ;, and no empty, "." or ".." path segment (routes/openai.py model_path refuses those
# with 400).
_MODEL_SEGMENT = r'(?!\.\.?(/|$))[ !"$&-.0-:<->@-\[\]-~]+'
MODEL_ID = {
    "type": "string",
    "maxLength": 256,
    "pattern": f"^{_MODEL_SEGMENT}(/{_MODEL_SEGMENT})*$",
}
OPERATIONS.update(
    {
        "openai_chat_completions": {
            "description": _FORWARDED.format(path="/v1/chat/completions"),
            "openai": True,
            "request": {"model": "gpt-4o-mini", "messages": HELLO},
            "request_schema": _openai_body(
                "messages", messages={"type": "array", "minItems": 1, "items": OBJ}
            ),
            "response": json_content(
                OBJ,
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
            "errors": OPENAI_ERRORS,
        },
        "openai_completions": {
            "description": _FORWARDED.format(path="/v1/completions"),
            "openai": True,
            "request": {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello"},
            "request_schema": _openai_body("prompt"),
            "errors": OPENAI_ERRORS,
        },
        "openai_embeddings": {
            "description": _FORWARDED.format(path="/v1/embeddings"),
            "openai": True,
            "request": {"model": "text-embedding-3-small", "input": "some text"},
            "request_schema": _openai_body("input"),
            "response": json_content(
                OBJ,
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.3, 0.4]}],
                    "model": "text-embedding-3-small",
                    "usage": {"prompt_tokens": 2, "total_tokens": 2},
                },
            ),
            "errors": OPENAI_ERRORS,
        },
        "openai_models": {
            "description": _FORWARDED.format(path="/v1/models"),
            "openai": True,
            "response": json_content(
                OBJ,
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
            "description": _FORWARDED.format(path="/v1/models/{model}")
            + " The id may contain `/` (OpenRouter's `openai/gpt-4o`), but no `.` or `..` path "
            "segment, `?`, `#`, `%` or `\\`: those are refused with 400.",
            "openai": True,
            "path_examples": {"model": "gpt-4o-mini"},
            "path_schemas": {"model": MODEL_ID},
            "response": json_content(
                OBJ,
                {
                    "id": "gpt-4o-mini",
                    "object": "model",
                    "created": 1721172741,
                    "owned_by": "system",
                },
            ),
            "errors": (400, *_OPENAI_GET_ERRORS),
        },
    }
)
OPERATIONS.update(USAGE)
