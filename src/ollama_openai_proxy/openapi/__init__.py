"""The OpenAPI document: FastAPI's generated paths, completed from data.

Handlers read raw bodies on the hot path (no pydantic models), so FastAPI cannot infer what they
answer. The descriptions and examples (operations.py), response shapes and error reasons
(shapes.py) live in tables, merged into the generated document once, at first request.
tests/unit/test_openapi.py checks that every operation is documented, and
tests/integration/test_openapi_live.py sends every request example to the running proxy and
checks the answer against the documented shape.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.responses import Response

from ollama_openai_proxy.openapi.operations import OPERATIONS
from ollama_openai_proxy.openapi.shapes import ERRORS, NDJSON, OBJ, SCHEMAS, json_content, ref

__all__ = ["DESCRIPTION", "ERRORS", "NDJSON", "OPERATIONS", "SCHEMAS", "build", "install"]

DESCRIPTION = """Ollama's REST API on port 11434, served from any OpenAI-compatible backend, so
programs written for Ollama (its SDKs, LangChain, n8n, Open WebUI, VS Code Copilot) run unchanged.
Also forwards the OpenAI API under `/v1`.

Errors on `/api/*` are `{"error": "..."}` with Ollama's statuses; on `/v1/*`, OpenAI's error
object. Streams are NDJSON (`application/x-ndjson`); an error after a stream has started is its
last line. Guides: the `docs/` folder of the repository."""


def _error_response(status: int, openai: bool) -> dict[str, Any]:
    schema = ref("OpenAIError" if openai else "Error")
    example = (
        {"error": {"message": ERRORS[status], "type": "invalid_request_error"}}
        if openai
        else {"error": ERRORS[status]}
    )
    return json_content(schema, example, ERRORS[status])


def _path_parameters(path: str, operation: dict[str, Any], examples: dict[str, str]) -> None:
    """Every ``{name}`` of ``path`` declared (a route that reads the raw request declares none),
    each with its example from the operation's ``path_examples``."""
    params = operation.setdefault("parameters", [])
    declared = {p["name"]: p for p in params if p.get("in") == "path"}
    for name in re.findall(r"{(\w+)(?::\w+)?}", path):
        param = declared.get(name)
        if param is None:
            param = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            params.append(param)
        if name in examples:
            param["example"] = examples[name]
    if not params:
        del operation["parameters"]


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
            _path_parameters(path, operation, spec.get("path_examples", {}))
            if "request" in spec:
                body = operation.setdefault(
                    "requestBody",
                    {"required": True, "content": {"application/json": {"schema": OBJ}}},
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
            import yaml  # noqa: PLC0415 -- only when the YAML document is asked for

            text.append(yaml.safe_dump(document(), sort_keys=False, allow_unicode=True))
        return Response(text[0], media_type="application/yaml")

    app.add_route(yaml_url, openapi_yaml, methods=["GET"], include_in_schema=False)
