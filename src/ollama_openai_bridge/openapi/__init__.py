"""The OpenAPI document: the app's route table (routing.py), completed from data.

Handlers read raw bodies on the hot path (no pydantic models), so nothing can be inferred of what
they answer. The descriptions and examples (operations.py), response shapes and error reasons
(shapes.py) live in tables, merged into the document once, at first request.
tests/unit/test_openapi.py checks that every operation is documented, and
tests/integration/test_openapi_live.py sends every request example to the running proxy and
checks the answer against the documented shape.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from ollama_openai_bridge import schemas
from ollama_openai_bridge.limits import Limits
from ollama_openai_bridge.openapi.agents import AGENT_OPERATIONS
from ollama_openai_bridge.openapi.operations import OPERATIONS as OLLAMA_AND_OPENAI
from ollama_openai_bridge.openapi.shapes import ERRORS, NDJSON, OBJ, SCHEMAS, json_content, ref
from ollama_openai_bridge.render import anthropic_type
from ollama_openai_bridge.routing import Operation

# operationId -> what the route table does not say (descriptions, examples, errors).
OPERATIONS = {**OLLAMA_AND_OPENAI, **AGENT_OPERATIONS}

__all__ = ["DESCRIPTION", "ERRORS", "NDJSON", "OPERATIONS", "SCHEMAS", "build"]

DESCRIPTION = """Ollama's REST API on port 11434, served from any OpenAI-compatible backend, so
programs written for Ollama (its SDKs, LangChain, n8n, Open WebUI, VS Code Copilot) run unchanged.
Also forwards the OpenAI API under `/v1`.

Errors on `/api/*` are `{"error": "..."}` with Ollama's statuses; on `/v1/*`, OpenAI's error
object. Streams are NDJSON (`application/x-ndjson`); an error after a stream has started is its
last line. Guides: the `docs/` folder of the repository."""


def _error_response(status: int, dialect: str) -> dict[str, Any]:
    """The error answer of ``status`` in the route's dialect (render.py renders them)."""
    example: dict[str, Any]
    if dialect == "openai":
        schema = ref("OpenAIError")
        example = {
            "error": {
                "message": ERRORS[status],
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    elif dialect == "anthropic":
        schema = ref("AnthropicError")
        kind = anthropic_type(status)
        example = {"type": "error", "error": {"type": kind, "message": ERRORS[status]}}
    else:
        schema = ref("Error")
        example = {"error": ERRORS[status]}
    return json_content(schema, example, ERRORS[status])


def _path_parameters(path: str, operation: dict[str, Any], spec: dict[str, Any]) -> None:
    """Every ``{name}`` of ``path`` declared (a route that reads the raw request declares none),
    each with its example from the operation's ``path_examples`` and its schema from
    ``path_schemas``; and the operation's ``query_parameters``, as they are."""
    examples = spec.get("path_examples", {})
    schemas_ = spec.get("path_schemas", {})
    params = operation.setdefault("parameters", [])
    params.extend(dict(p) for p in spec.get("query_parameters", ()))
    declared = {p["name"]: p for p in params if p.get("in") == "path"}
    for name in re.findall(r"{(\w+)(?::\w+)?}", path):
        param = declared.get(name)
        if param is None:
            param = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            params.append(param)
        if name in examples:
            param["example"] = examples[name]
        if name in schemas_:
            param["schema"] = schemas_[name]
    if not params:
        del operation["parameters"]


# The JSON bodies of the handlers that read raw requests, by operationId (FastAPI's OpenAPI
# models, used before, turned integer bounds into floats: 2**63 - 1 -> 2**63).
BODIES: dict[str, TypeAdapter[Any]] = {
    "chat": schemas.CHAT,
    "generate": schemas.GENERATE,
    "embed": schemas.EMBED,
    "embeddings": schemas.EMBEDDINGS,
    "show": schemas.SHOW,
    "pull": schemas.PULL,
    "openai_responses": schemas.RESPONSES,
    "anthropic_messages": schemas.MESSAGES,
    "anthropic_count_tokens": schemas.COUNT_TOKENS,
}

# How each body names its model. The handlers check it in Ollama's words ("model is required";
# generate answers 404 "model '' not found"), so the validators let it be absent: the document
# says what a request needs. show and pull also take the deprecated ``name``.
MODEL = {"type": "string", "minLength": 1}
NAMED = ("show", "pull")


# Rules across fields, in JSON Schema: Ollama refuses a raw prompt with a template, a system
# prompt or a context (400 "raw mode does not support template, system, or context").
RULES: dict[str, dict[str, Any]] = {
    "generate": {
        "if": {"required": ["raw"], "properties": {"raw": {"const": True}}},
        "then": {
            "properties": {
                "system": {"maxLength": 0},
                "template": {"maxLength": 0},
                "context": {"maxItems": 0},
            }
        },
    }
}


# generate's context: integers the proxy issued, three bytes each (translate/conversation.py).
CONTEXT = {
    "description": "The `context` of an earlier answer of this proxy, as it was returned: the "
    "conversation so far, signed. Anything else -- altered, Ollama's own token ids, issued by "
    "another instance or before a restart without CONTEXT_SIGNING_KEY -- is a 400.",
}
CONTEXT_ITEMS = {"type": "integer", "minimum": 0, "maximum": 2**24 - 1}


def _require_model(operation_id: str, schema: dict[str, Any]) -> None:
    if operation_id in NAMED:
        schema["anyOf"] = [
            {"required": [key], "properties": {key: MODEL}} for key in ("model", "name")
        ]
    else:
        schema["required"] = ["model"]
        schema["properties"]["model"] = dict(MODEL, title="Model")


# The request arrays bounded by a limit (limits.Limits field), by operation and property path.
LIMITED: dict[str, dict[tuple[str, ...], str]] = {
    "chat": {
        ("messages",): "messages",
        ("messages", "images"): "images",
        ("messages", "tool_calls"): "tools",
        ("tools",): "tools",
    },
    "generate": {("images",): "images", ("context",): "context"},
    "embed": {("input",): "embed_inputs"},
    "openai_responses": {("input",): "messages", ("tools",): "tools"},
    "anthropic_messages": {
        ("messages",): "messages",
        ("tools",): "tools",
        ("stop_sequences",): "stop",
    },
    "anthropic_count_tokens": {("messages",): "messages", ("tools",): "tools"},
}


def _array(schema: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The array schema at ``names`` (properties, through ``anyOf`` members and ``items``)."""
    node = schema
    for name in names:
        if node.get("type") == "array":
            node = node["items"]
        node = node["properties"][name]
        node = next((m for m in node.get("anyOf", [node]) if m.get("type") == "array"), node)
    return node


def _limit_arrays(operation: dict[str, Any], limits: Limits) -> None:
    """``maxItems`` from the limits in force on each bounded array of the request body."""
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    for names, field in LIMITED.get(operation["operationId"], {}).items():
        _array(body["schema"], names)["maxItems"] = getattr(limits, field)


TAGS = [
    {"name": "ollama", "description": "Ollama's REST API, translated to the backend."},
    {"name": "openai", "description": "The OpenAI API, forwarded to the backend."},
    {"name": "anthropic", "description": "Anthropic's Messages API, translated to the backend."},
    {"name": "operations", "description": "Probes, versions and metrics."},
]


def _paths(operations: Sequence[Operation]) -> dict[str, Any]:
    """The document's paths, one operation per documented route, in declaration order: its
    summary, its description (else the handler's docstring), its operationId, and a success
    answer of its media type (completed from OPERATIONS by :func:`build`)."""
    paths: dict[str, Any] = {}
    for op in operations:
        if not op.include_in_schema:
            continue
        operation: dict[str, Any] = {}
        if op.summary:
            operation["summary"] = op.summary
        description = op.description or inspect.cleandoc(op.handler.__doc__ or "")
        if description:
            operation["description"] = description
        operation["operationId"] = op.operation_id
        text = op.media_type.startswith("text/")
        ok = {"schema": {"type": "string"} if text else {}}
        responses = {"200": {"description": "Successful Response", "content": {op.media_type: ok}}}
        for status, extra in op.responses.items():
            responses[str(status)] = {
                "description": extra["description"],
                "content": {op.media_type: {"schema": {}}},
            }
        operation["responses"] = responses
        paths.setdefault(op.documented_path, {})[op.method.lower()] = operation
    return paths


def build(
    operations: Sequence[Operation], *, title: str, version: str, limits: Limits | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``, every operation completed from OPERATIONS,
    with the request limits in force (``limits``) as ``maxItems``."""
    limits = limits or Limits()
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "description": DESCRIPTION, "version": version},
        "paths": _paths(operations),
    }
    doc["components"] = {"schemas": dict(SCHEMAS)}
    doc["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "Only when PROXY_API_KEYS is set; any value is accepted otherwise.",
        },
        "anthropic_key": {
            "type": "apiKey",
            "in": "header",
            "name": "x-api-key",
            "description": "On /v1/messages, the key may come as x-api-key, as the anthropic "
            "SDKs send ANTHROPIC_API_KEY; only when PROXY_API_KEYS is set.",
        },
    }
    for path, item in doc["paths"].items():
        for operation in item.values():
            spec = OPERATIONS[operation["operationId"]]
            dialect = "openai" if spec.get("openai", False) else spec.get("dialect", "ollama")
            operation["tags"] = [
                spec.get("tag") or dialect
                if dialect != "ollama"
                else "ollama"
                if path.startswith("/api/")
                else "operations"
            ]
            if "description" in spec:
                operation["description"] = spec["description"]
            responses = operation.setdefault("responses", {})
            if spec.get("never_succeeds"):
                responses.pop("200", None)
            if "response" in spec:
                responses["200"] = spec["response"]
            responses.update(spec.get("extra", {}))
            if operation["operationId"] in BODIES:
                operation.update(schemas.openapi_body(BODIES[operation["operationId"]]))
                body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
                if dialect == "ollama":  # Anthropic's bodies say what they require themselves
                    _require_model(operation["operationId"], body_schema)
                body_schema.update(RULES.get(operation["operationId"], {}))
                if operation["operationId"] == "generate":
                    body_schema["properties"]["context"].update(CONTEXT)
                    _array(body_schema, ("context",))["items"] = dict(CONTEXT_ITEMS)
            _path_parameters(path, operation, spec)
            _limit_arrays(operation, limits)
            if "request" in spec:
                schema = spec.get("request_schema", OBJ)
                body = operation.setdefault(
                    "requestBody",
                    {"required": True, "content": {"application/json": {"schema": schema}}},
                )
                body["content"]["application/json"]["example"] = spec["request"]
            # Every operation that reads a body (413) also decodes a compressed one (415).
            errors = spec["errors"]
            for status in (*errors, 415) if 413 in errors else errors:
                responses[str(status)] = _error_response(status, dialect)
            if dialect == "anthropic":
                operation["security"] = [{}, {"bearer": []}, {"anthropic_key": []}]
            elif path not in ("/", "/health"):
                operation["security"] = [{}, {"bearer": []}]
    doc["tags"] = TAGS
    return doc
