"""The OpenAPI document: complete for every operation, examples true to their schemas, and the
committed docs/openapi.json identical to what the app serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import TypeAdapter
from scripts.export_openapi import OUT, document

from ollama_openai_bridge import openapi, schemas

DOC: dict[str, Any] = json.loads(document())
OPERATIONS = [
    (path, method, op) for path, item in DOC["paths"].items() for method, op in item.items()
]
IDS = [op["operationId"] for _, _, op in OPERATIONS]


def validate(instance: Any, schema: dict[str, Any]) -> None:
    # Schemas reference "#/components/schemas/X" of the whole document.
    jsonschema.validate(
        instance, {**schema, "components": DOC["components"]}, cls=jsonschema.Draft202012Validator
    )


def test_committed_document_is_current() -> None:
    assert Path(OUT).read_text() == document(), "run: python scripts/export_openapi.py"


def test_operation_ids_are_unique_and_all_documented() -> None:
    assert len(IDS) == len(set(IDS))
    assert set(IDS) == set(openapi.OPERATIONS), "OPERATIONS has stale or missing entries"


@pytest.mark.parametrize(("path", "method", "op"), OPERATIONS, ids=IDS)
def test_operation_is_complete(path: str, method: str, op: dict[str, Any]) -> None:
    assert op["summary"]
    assert op["description"]
    assert op["tags"] in (["ollama"], ["openai"], ["anthropic"], ["operations"])
    responses = op["responses"]
    statuses = {int(s) for s in responses}
    assert statuses & {200, 501}, "a success, or the documented refusal"
    assert "422" not in responses, "the proxy never answers FastAPI's validation error"
    for status, response in responses.items():
        assert response["description"], status
        if int(status) >= 400:  # every error has a named shape and an example
            (media,) = response["content"].values()
            assert "$ref" in media["schema"]
            assert "example" in media
    if method == "post" and op["operationId"] not in {
        "push",
        "create",
        "copy",
        "create_blob",
    }:
        body = op["requestBody"]["content"]["application/json"]
        assert body["schema"]
        assert "example" in body, "every request body has an example"


@pytest.mark.parametrize(("path", "method", "op"), OPERATIONS, ids=IDS)
def test_examples_match_their_schemas(path: str, method: str, op: dict[str, Any]) -> None:
    for status, response in op["responses"].items():
        for media_type, media in response.get("content", {}).items():
            if "example" not in media or "schema" not in media:
                continue
            if media_type == "text/event-stream":  # the schema is each event's
                frames = media["example"].split("\n\n")
                assert frames.pop() == ""
                for frame in frames:
                    head, data = frame.split("\n")
                    event = {"event": head.removeprefix("event: "), "data": data[6:]}
                    validate(event, media["schema"])
                    assert json.loads(event["data"])["type"] == event["event"]
                continue
            if media_type == openapi.NDJSON:  # each line is one object of the schema
                lines = media["example"].splitlines()
                last = json.loads(lines[-1])  # the final line: done, or pull's success
                assert last.get("done") is True or last.get("status") == "success"
                for line in lines:
                    validate(json.loads(line), media["schema"])
            elif media_type == "text/event-stream":  # each event, as schemathesis checks them
                for block in media["example"].split("\n\n")[:-1]:
                    fields = dict(line.split(": ", 1) for line in block.split("\n"))
                    validate(fields, media["schema"])
                    assert json.loads(fields["data"])["type"] == fields["event"]
            else:
                validate(media["example"], media["schema"])
            if int(status) >= 400:
                body = media["example"]["error"]
                assert body if isinstance(body, str) else body["message"]


ADAPTERS: dict[str, TypeAdapter[Any]] = {
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


@pytest.mark.parametrize("operation_id", sorted(ADAPTERS))
def test_request_examples_are_valid_requests(operation_id: str) -> None:
    example = openapi.OPERATIONS[operation_id]["request"]
    parsed = schemas.parse(ADAPTERS[operation_id], json.dumps(example).encode())
    assert parsed["model"] == example["model"]


def test_error_statuses_are_explained() -> None:
    for _, _, op in OPERATIONS:
        for status in op["responses"]:
            if int(status) >= 400:
                assert int(status) in openapi.ERRORS


@pytest.mark.parametrize(("path", "method", "op"), OPERATIONS, ids=IDS)
def test_every_path_template_names_a_declared_parameter(
    path: str, method: str, op: dict[str, Any]
) -> None:
    """``/api/blobs/{digest}`` once declared no ``digest`` (issue #14); the only other
    parameters are optional query strings (``/v1/usage?key=``)."""
    names = set(re.findall(r"{(\w+)}", path))
    declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
    assert names == declared
    for param in op.get("parameters", []):
        assert param["in"] in ("path", "query")
        assert param["required"] is (param["in"] == "path")
        assert param["schema"]["type"] == "string"


def test_openai_errors_say_param_and_code_may_be_null() -> None:
    error = DOC["components"]["schemas"]["OpenAIError"]["properties"]["error"]
    assert error["required"] == ["message", "type", "param", "code"]
    validate({"message": "m", "type": "t", "param": None, "code": None}, error)
    validate({"message": "m", "type": "t", "param": "tools", "code": "c"}, error)
