"""Request schemas of the Ollama API, validated straight from JSON bytes.

The validators are built once at import; ``validate_json`` parses and checks in pydantic-core
(Rust) and returns plain dicts/lists, so the translators work on plain data with no model objects
or round trips on the hot path. Unknown fields are ignored, as Ollama's Go decoder ignores them:
clients send ``type``/``id``/``index`` inside tool calls, legacy options, ``width``/``height``...
"""

from __future__ import annotations

from typing import Any, NotRequired, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict

from ollama_openai_proxy.errors import BadRequest

KeepAlive = float | int | str | None
Think = bool | str | None


class ToolCallFunction(TypedDict):
    name: str
    arguments: NotRequired[dict[str, Any] | str | None]
    index: NotRequired[int | None]


class ToolCall(TypedDict):
    function: ToolCallFunction
    id: NotRequired[str | None]


class Message(TypedDict):
    role: str
    content: NotRequired[str | None]
    thinking: NotRequired[str | None]
    images: NotRequired[list[str] | None]
    tool_calls: NotRequired[list[ToolCall] | None]
    tool_name: NotRequired[str | None]
    tool_call_id: NotRequired[str | None]


class ChatRequest(TypedDict, total=False):
    model: str | None
    messages: list[Message] | None
    stream: bool | None
    format: str | dict[str, Any] | None
    keep_alive: KeepAlive
    tools: list[dict[str, Any]] | None
    options: dict[str, Any] | None
    think: Think
    logprobs: bool | None
    top_logprobs: int | None


class GenerateRequest(TypedDict, total=False):
    model: str | None
    prompt: str | None
    suffix: str | None
    system: str | None
    template: str | None
    context: list[int] | None
    stream: bool | None
    raw: bool | None
    format: str | dict[str, Any] | None
    keep_alive: KeepAlive
    images: list[str] | None
    options: dict[str, Any] | None
    think: Think
    logprobs: bool | None
    top_logprobs: int | None


class ShowRequest(TypedDict, total=False):
    model: str | None
    name: str | None  # deprecated alias still sent by ollama-js and Open WebUI
    verbose: bool | None


T = TypeVar("T")

CHAT = TypeAdapter(ChatRequest)
GENERATE = TypeAdapter(GenerateRequest)
SHOW = TypeAdapter(ShowRequest)

THINK_LEVELS = frozenset({"low", "medium", "high", "max"})


def _describe(err: ErrorDetails) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "json_invalid":
        return str(err["msg"])  # "Invalid JSON: EOF while parsing a list at line 1 column 35"
    if not loc:
        return "invalid request: the body must be a JSON object"
    return f"invalid value for '{loc}': {err['msg']}"


def parse(adapter: TypeAdapter[T], body: bytes) -> T:
    """Validate a request body; every failure is a 400 with a message naming the field."""
    if not body.strip():
        # Ollama's wording for an empty body (io.EOF from the Go decoder).
        raise BadRequest("missing request body")
    try:
        return adapter.validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise BadRequest("; ".join(_describe(e) for e in errors[:3])) from None


def check_think(value: Think) -> None:
    """Ollama rejects unknown think levels with this exact message (contract §2.6)."""
    if isinstance(value, str) and value not in THINK_LEVELS:
        raise BadRequest(
            f'invalid think value: "{value}" '
            '(must be "high", "medium", "low", "max", true, or false)'
        )


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref[8:]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def openapi_body(adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting a raw-Request handler's JSON body (no $refs to resolve)."""
    schema = adapter.json_schema()
    schema = _inline(schema, schema.get("$defs", {}))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class EmbedRequest(TypedDict, total=False):
    model: str | None
    input: Any  # str or list[str]; checked by the translator with Ollama's message
    truncate: bool | None
    dimensions: int | None
    keep_alive: KeepAlive
    options: dict[str, Any] | None


class EmbeddingsRequest(TypedDict, total=False):
    model: str | None
    prompt: str | None
    keep_alive: KeepAlive
    options: dict[str, Any] | None


EMBED = TypeAdapter(EmbedRequest)
EMBEDDINGS = TypeAdapter(EmbeddingsRequest)


class PullRequest(TypedDict, total=False):
    model: str | None
    name: str | None  # ollama-js sends name
    stream: bool | None
    insecure: bool | None


PULL = TypeAdapter(PullRequest)
