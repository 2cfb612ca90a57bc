"""Request schemas of the Ollama API, validated straight from JSON bytes.

The validators are built once at import; ``validate_json`` parses and checks in pydantic-core
(Rust) and returns plain dicts/lists, so the translators work on plain data with no model objects
or round trips on the hot path. Unknown fields are ignored, as Ollama's Go decoder ignores them:
clients send ``type``/``id``/``index`` inside tool calls, legacy options, ``width``/``height``...

Types are checked strictly, as Go's encoding/json checks them (ollama api/types.go): ``"true"`` is
not a boolean, ``5.0`` or ``false`` not an integer, and an integer must fit in 64 bits. Where
Ollama's own message is known (``think``, ``top_logprobs``, ``keep_alive``, ``format``), the field
is checked by the handler in those words; its documented schema (``WithJsonSchema``) says what it
accepts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NotRequired, TypeVar

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    with_config,
)
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict

from ollama_openai_bridge.errors import BadRequest, echo

STRICT = ConfigDict(strict=True)


def _integral(value: Any) -> Any:
    # JSON Schema counts 18.0 as an integer; so does this validator (Go's would refuse it).
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Go's int is 64 bits: a JSON integer outside that range is a decoding error in Ollama.
Int64 = Annotated[
    int,
    BeforeValidator(_integral),
    Field(ge=-(2**63), le=2**63 - 1),
    # pydantic would write the bounds as floats, 2**63 rounded up: exact integers instead
    WithJsonSchema({"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}),
]

# A Go duration as time.ParseDuration reads it (and "-1", which Ollama documents), or "". Go
# refuses one longer than 2562047h (int64 nanoseconds), which a pattern cannot say; the documented
# pattern keeps to durations that always fit: at most 20 parts of at most 5 digits each.
DURATION = (
    r"^(|-1|[-+]?0|[-+]?(([0-9]{1,5}(\.[0-9]{0,9})?|\.[0-9]{1,9})(ns|us|µs|μs|ms|s|m|h)){1,20})$"
)
KeepAlive = Annotated[
    float | int | str | None,
    WithJsonSchema(
        {
            "anyOf": [
                # translate/keepalive.py MAX_KEEP_ALIVE_S (a test keeps them equal)
                {"type": "number", "maximum": 9_223_372_036},
                {"type": "string", "pattern": DURATION},
                {"type": "null"},
            ],
            "description": "Seconds, or a Go duration such as '5m'; negative is forever. A "
            "duration longer than 2562047h (Go's time.Duration) is refused.",
        }
    ),
]
THINK_LEVELS = ("low", "medium", "high", "max")
Think = Annotated[
    bool | str | None,
    WithJsonSchema(
        {"anyOf": [{"type": "boolean"}, {"enum": list(THINK_LEVELS)}, {"type": "null"}]}
    ),
]
Format = Annotated[
    str | dict[str, Any] | None,
    WithJsonSchema(
        {"anyOf": [{"enum": ["", "json"]}, {"type": "object"}, {"type": "null"}]},
    ),
]
TopLogprobs = Annotated[
    Int64 | None,
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": 20}, {"type": "null"}]}),
]
# Raw base64 as Go's base64.StdEncoding decodes it (Ollama's ImageData), or an image's base64
# data: URL (translate/images.py checks both).
_B64 = r"([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)"
BASE64 = rf"^(data:image/[A-Za-z0-9.+-]+;base64,)?{_B64}$"
Image = Annotated[str, WithJsonSchema({"type": "string", "pattern": BASE64})]
ROLES = ("system", "user", "assistant", "tool", "developer")


def _any_case(words: tuple[str, ...]) -> str:
    """A JSON Schema pattern (no flags in ECMA-262 patterns) for ``words`` in any letter case."""
    return "^(" + "|".join("".join(f"[{c.upper()}{c}]" for c in w) for w in words) + ")$"


Role = Annotated[str, WithJsonSchema({"type": "string", "pattern": _any_case(ROLES)})]


@with_config(STRICT)
class ToolCallFunction(TypedDict):
    name: str
    arguments: NotRequired[dict[str, Any] | str | None]
    index: NotRequired[Int64 | None]


@with_config(STRICT)
class ToolCall(TypedDict):
    function: ToolCallFunction
    id: NotRequired[str | None]


@with_config(STRICT)
class Message(TypedDict):
    role: Role
    content: NotRequired[str | None]
    thinking: NotRequired[str | None]
    images: NotRequired[list[Image] | None]
    tool_calls: NotRequired[list[ToolCall] | None]
    tool_name: NotRequired[str | None]
    tool_call_id: NotRequired[str | None]


@with_config(ConfigDict(strict=True, extra="allow"))
class ToolFunction(TypedDict):
    name: str
    description: NotRequired[str | None]
    parameters: NotRequired[dict[str, Any] | None]


@with_config(ConfigDict(strict=True, extra="allow"))
class Tool(TypedDict):
    """A function tool, forwarded as sent (other keys kept): OpenAI-compatible backends take
    only ``type: "function"`` (the translation adds it when absent) with a named function."""

    type: NotRequired[Literal["function"]]
    function: ToolFunction


@with_config(STRICT)
class ChatRequest(TypedDict, total=False):
    model: str | None
    messages: list[Message] | None
    stream: bool | None
    format: Format
    keep_alive: KeepAlive
    tools: list[Tool] | None
    options: dict[str, Any] | None
    think: Think
    logprobs: bool | None
    top_logprobs: TopLogprobs


@with_config(STRICT)
class GenerateRequest(TypedDict, total=False):
    model: str | None
    prompt: str | None
    suffix: str | None
    system: str | None
    template: str | None
    context: list[Int64] | None
    stream: bool | None
    raw: bool | None
    format: Format
    keep_alive: KeepAlive
    images: list[Image] | None
    options: dict[str, Any] | None
    think: Think
    logprobs: bool | None
    top_logprobs: TopLogprobs


@with_config(STRICT)
class ShowRequest(TypedDict, total=False):
    model: str | None
    name: str | None  # deprecated alias still sent by ollama-js and Open WebUI
    verbose: bool | None


T = TypeVar("T")

CHAT = TypeAdapter(ChatRequest)
GENERATE = TypeAdapter(GenerateRequest)
SHOW = TypeAdapter(ShowRequest)

# What pydantic adds to a location inside a union: the member's type ("str", "dict[str,any]").
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\])$")


def _where(err: ErrorDetails) -> str:
    return ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p)))


def _describe(errors: list[ErrorDetails]) -> str:
    """One message naming each invalid field (the first three), its union members' complaints
    joined with "or"."""
    if errors[0]["type"] == "json_invalid":
        return str(errors[0]["msg"])  # "Invalid JSON: EOF while parsing a list at line 1 column 35"
    fields: dict[str, list[str]] = {}
    for err in errors:
        fields.setdefault(_where(err), []).append(str(err["msg"]))
    parts = []
    for loc, msgs in list(fields.items())[:3]:
        if not loc:
            parts.append("invalid request: the body must be a JSON object")
        else:
            first, *others = dict.fromkeys(msgs)
            others = [m.removeprefix("Input should be ") for m in others]
            parts.append(f"invalid value for '{echo(loc)}': " + " or ".join([first, *others]))
    return "; ".join(parts)


def parse(adapter: TypeAdapter[T], body: bytes) -> T:
    """Validate a request body (JSON bytes) into plain dicts and lists; every failure is a
    BadRequest (400) naming the fields, ``param`` the first of them."""
    if not body.strip():
        # Ollama's wording for an empty body (io.EOF from the Go decoder).
        raise BadRequest("missing request body")
    try:
        return adapter.validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise BadRequest(_describe(errors), param=_where(errors[0]) or None) from None


def check_think(value: Think) -> None:
    """Ollama rejects unknown think levels with this exact message (contract §2.6)."""
    if isinstance(value, str) and value not in THINK_LEVELS:
        raise BadRequest(
            f'invalid think value: "{echo(value)}" '
            '(must be "high", "medium", "low", "max", true, or false)',
            param="think",
        )


def check_fields(req: ChatRequest | GenerateRequest) -> None:
    """What chat and generate check beyond types, in Ollama's words where it has them, before
    any work (a request that only loads the model must not pass what a real one would not):
    ``think`` levels, ``top_logprobs`` 0 to 20 (server/routes.go; OpenAI's range too), and
    ``format`` "", "json" or a JSON schema object. Raises BadRequest naming the field."""
    check_think(req.get("think"))
    top = req.get("top_logprobs")
    if top is not None and not 0 <= top <= 20:
        raise BadRequest("top_logprobs must be between 0 and 20", param="top_logprobs")
    fmt = req.get("format")
    if isinstance(fmt, str) and fmt not in ("", "json"):
        raise BadRequest(
            f'invalid format: "{echo(fmt)}" (use "json" or a JSON schema object)', param="format"
        )


# The integers orjson can write: a backend call is built from the request with it.
_ENCODABLE = range(-(2**63), 2**64)


def widen(value: Any, path: str = "") -> None:
    """Turn, in place, every integer in ``value`` (decoded JSON) that a 64-bit JSON encoder
    cannot write into a float, as Ollama reads any number of a free-form field (tool schemas,
    ``format``, tool-call arguments, options: Go decodes them as float64). Called only when
    encoding a backend call failed. Raises BadRequest naming the first integer beyond a float's
    range too (Go's decoder refuses those)."""
    if isinstance(value, dict):
        items: Any = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return
    for key, item in items:
        where = f"{path}.{key}" if path else str(key)
        if isinstance(item, int) and not isinstance(item, bool):
            if item not in _ENCODABLE:
                try:
                    value[key] = float(item)
                except OverflowError:
                    raise BadRequest(
                        f"invalid value for '{echo(where)}': number out of range", param=where
                    ) from None
        else:
            widen(item, where)


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


EmbedInput = Annotated[
    Any,  # str or list[str]: checked by the translator, in Ollama's words ("invalid input type")
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                # OpenAI refuses empty strings (the translator says which one)
                {"type": "array", "items": {"type": "string", "minLength": 1}},
                {"type": "null"},
            ]
        }
    ),
]


@with_config(STRICT)
class EmbedRequest(TypedDict, total=False):
    model: str | None
    input: EmbedInput
    truncate: bool | None
    dimensions: Int64 | None
    keep_alive: KeepAlive
    options: dict[str, Any] | None


@with_config(STRICT)
class EmbeddingsRequest(TypedDict, total=False):
    model: str | None
    prompt: str | None
    keep_alive: KeepAlive
    options: dict[str, Any] | None


EMBED = TypeAdapter(EmbedRequest)
EMBEDDINGS = TypeAdapter(EmbeddingsRequest)


@with_config(STRICT)
class PullRequest(TypedDict, total=False):
    model: str | None
    name: str | None  # ollama-js sends name
    stream: bool | None
    insecure: bool | None


PULL = TypeAdapter(PullRequest)


# --- OpenAI Responses (/v1/responses) ---------------------------------------------------------
# Validated here for types only: the input items, tools, reasoning and text objects are read, and
# refused in OpenAI's words naming the field, by translate/responses.py (their shapes: openai-python
# types/responses/response_create_params.py). The document says what this validator checks.

ToolChoice = Annotated[
    str | dict[str, Any] | None,
    WithJsonSchema(
        {"anyOf": [{"enum": ["auto", "none", "required"]}, {"type": "object"}, {"type": "null"}]}
    ),
]
TokenLimit = Annotated[
    int,
    BeforeValidator(_integral),
    Field(ge=1, le=2**63 - 1),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 2**63 - 1}),
]
# Fields that need state the proxy does not keep: refused with 400 unless null or false.
Stateless = Annotated[
    Any, WithJsonSchema({"type": "null", "description": "Refused unless null: nothing is stored."})
]
NotBackground = Annotated[
    bool | None,
    WithJsonSchema(
        {"enum": [False, None], "description": "Refused if true: no response is kept to poll."}
    ),
]


@with_config(ConfigDict(strict=True, extra="allow"))
class ResponsesRequest(TypedDict, total=False):
    """An OpenAI Responses request (openai-python ``response_create_params.py``); fields not
    listed are noted and ignored by the translation."""

    model: str | None
    input: str | list[dict[str, Any]] | None
    instructions: str | None
    stream: bool | None
    tools: list[dict[str, Any]] | None
    tool_choice: ToolChoice
    parallel_tool_calls: bool | None
    max_output_tokens: TokenLimit | None
    temperature: Annotated[float | None, Field(ge=0, le=2)]
    top_p: Annotated[float | None, Field(ge=0, le=1)]
    reasoning: dict[str, Any] | None
    text: dict[str, Any] | None
    store: bool | None
    background: NotBackground
    previous_response_id: Stateless
    conversation: Stateless


RESPONSES = TypeAdapter(ResponsesRequest)


# --- Anthropic Messages API (routes/anthropic.py) -----------------------------------------------
# The shapes Anthropic's API and its SDKs define (anthropic-sdk-python MessageCreateParams,
# MessageCountTokensParams), as strict as its own validation for the fields read here; content
# blocks are objects whose fields translate/anthropic.py checks, naming them. Unknown fields are
# kept (extra="allow") so that the translation can say which it ignores.
AnthropicContent = Annotated[
    str | list[Any],
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]}),
]
_THINKING = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": ["enabled", "adaptive", "disabled"]}},
}
_TOOL_CHOICE = {
    "anyOf": [
        {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["auto", "any", "none"]}},
        },
        {
            "type": "object",
            "required": ["type", "name"],
            "properties": {"type": {"const": "tool"}, "name": {"type": "string"}},
        },
    ]
}
_OUTPUT_CONFIG = {
    "type": "object",
    "properties": {
        "effort": {"enum": ["low", "medium", "high", "xhigh", "max", None]},
        "format": {
            "anyOf": [
                {
                    "type": "object",
                    "required": ["type", "schema"],
                    "properties": {"type": {"const": "json_schema"}, "schema": {"type": "object"}},
                },
                {"type": "null"},
            ]
        },
    },
}
# A client tool (no type, or "custom"), or one of Anthropic's own (any other type: left out).
_TOOL = {
    "anyOf": [
        {
            "type": "object",
            "required": ["name", "input_schema"],
            "properties": {
                "type": {"enum": ["custom", None]},
                "name": {"type": "string", "minLength": 1},
                "input_schema": {"type": "object"},
            },
        },
        {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"type": "string", "not": {"const": "custom"}}},
        },
    ]
}


def _nullable(schema: dict[str, Any]) -> Any:
    return WithJsonSchema({"anyOf": [schema, {"type": "null"}]})


@with_config(ConfigDict(strict=True, extra="allow"))
class AnthropicMessage(TypedDict):
    role: Annotated[str, WithJsonSchema({"enum": ["user", "assistant", "system"]})]
    content: AnthropicContent


@with_config(ConfigDict(strict=True, extra="allow"))
class CountTokensRequest(TypedDict):
    model: str
    messages: Annotated[list[AnthropicMessage], Field(min_length=1)]
    system: NotRequired[AnthropicContent | None]
    tools: NotRequired[
        Annotated[list[dict[str, Any]] | None, _nullable({"type": "array", "items": _TOOL})]
    ]
    tool_choice: NotRequired[Annotated[dict[str, Any] | None, _nullable(_TOOL_CHOICE)]]
    thinking: NotRequired[Annotated[dict[str, Any] | None, _nullable(_THINKING)]]
    output_config: NotRequired[Annotated[dict[str, Any] | None, _nullable(_OUTPUT_CONFIG)]]


@with_config(ConfigDict(strict=True, extra="allow"))
class MessagesRequest(CountTokensRequest):
    max_tokens: Annotated[
        int,
        BeforeValidator(_integral),
        Field(ge=1, le=2**63 - 1),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 2**63 - 1}),
    ]
    stream: NotRequired[bool | None]
    temperature: NotRequired[float | None]
    top_p: NotRequired[float | None]
    top_k: NotRequired[Int64 | None]
    stop_sequences: NotRequired[list[str] | None]
    metadata: NotRequired[dict[str, Any] | None]


MESSAGES = TypeAdapter(MessagesRequest)
COUNT_TOKENS = TypeAdapter(CountTokensRequest)
