"""Anthropic Messages API (``POST /v1/messages``) <-> OpenAI chat completions (issue #17).

Claude Code (``ollama launch claude``) and the anthropic SDKs speak this API to Ollama, which has
served it since v0.14.0 by turning each request into its own chat request and each answer back
(ollama/ollama ``anthropic/anthropic.go``). The proxy does the same, through the same steps as
``/api/chat``:

* :func:`read_request` reads the client's request once into :class:`Converted`: the Ollama chat
  request it amounts to (system blocks joined into a system message, mid-conversation system
  messages kept as system messages, text, images, ``tool_use`` as tool calls, ``tool_result`` as
  tool messages, ``thinking`` as a reasoning level, ``max_tokens`` and the sampling fields as
  options), plus what chat has no word for (``tool_choice``, stop sequences to recognise);
* :func:`messages_request` builds the OpenAI request from it with chat.py's translator (ids,
  pairing of results with calls, images as data URLs, reasoning controls) and shapes it for the
  route's backend profile (:func:`~ollama_openai_bridge.translate.chat.for_backend`);
* answers, streamed or not, are ``anthropic_answer.py``'s;
* :func:`estimate_tokens` is ``/v1/messages/count_tokens``' answer (an estimate).

Nothing the client sent is dropped unsaid: what a backend cannot take is a per-request note
(``Converted.notes``) or, for fields a client sends on every request (Claude Code's
``metadata``, ``cache_control``, ``context_management``), a warning once per field
(``Converted.ignored``). Pure: no I/O; a malformed request raises BadRequest naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from ollama_openai_bridge.errors import BadRequest, echo
from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.schemas import ChatRequest
from ollama_openai_bridge.translate.carry import Recalled
from ollama_openai_bridge.translate.chat import (
    CHAT_PATH,
    UpstreamRequest,
    chat_payload,
    for_backend,
)
from ollama_openai_bridge.translate.estimate import CHARS_PER_TOKEN, IMAGE_TOKENS
from ollama_openai_bridge.translate.images import sniff_mime

# Effort levels the Messages API takes (output_config.effort, anthropic-sdk-python
# OutputConfigParam); think.py maps each to what the backend takes.
EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})
# thinking.budget_tokens -> the nearest effort: the inverse of think.py's THINKING_BUDGETS, so a
# backend of the "thinking" style gets about the budget the client asked for.
_BUDGET_EFFORTS = ((1024, "low"), (4096, "medium"), (16384, "high"))
# Top-level fields with no chat-completion counterpart, and why they can go: logged once each.
_IGNORED = {
    "metadata": "request metadata (user_id) has no backend equivalent",
    "context_management": "context editing is Anthropic's own; the history is sent as given",
    "cache_control": "prompt caching is the backend's own business",
    "service_tier": "service tiers are Anthropic's own",
    "container": "code execution containers are Anthropic's own",
    "inference_geo": "inference regions are Anthropic's own",
    "mcp_servers": "MCP connectors run on Anthropic's servers; no backend runs them",
}
# Fields read here (everything else at the top level is reported as ignored).
_READ = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
    }
)
# Tool fields that only steer Anthropic's own handling of a tool (anthropic-sdk-python
# ToolParam): the function itself is sent without them.
_TOOL_EXTRAS = (
    "cache_control",
    "defer_loading",
    "strict",
    "input_examples",
    "eager_input_streaming",
    "allowed_callers",
)
ROLES = frozenset({"user", "assistant", "system"})
ERROR_PREFIX = "Error: "  # a tool_result with is_error: OpenAI's tool message has no such flag


@dataclass(slots=True)
class Converted:
    """A Messages request read once (:func:`read_request`), for every route of its chain.

    ``chat``: the Ollama chat request it amounts to (chat.py builds the OpenAI request from it);
    ``tool_choice``/``parallel``: OpenAI's ``tool_choice`` and ``parallel_tool_calls``, if the
    client chose; ``adaptive``: thinking "adaptive" (the model decides: no reasoning control
    and no note for a model not known to reason); ``think``: reasoning stays in the answer;
    ``stops``: the stop sequences, to name the one that ended an answer; ``notes``: what this
    request loses (logged per request); ``ignored``: ``(key, message)`` for fields clients send
    on every request (logged once per key); ``unknown``: the names of top-level fields this API
    does not have (logged once per name, a bounded number per request: a client chooses
    them)."""

    chat: dict[str, Any]
    tool_choice: Any = None
    parallel: bool | None = None
    adaptive: bool = False
    think: bool = True
    stops: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


# --- requests ---------------------------------------------------------------------------------


def read_request(req: Mapping[str, Any]) -> Converted:
    """A Messages request (validated by ``schemas.MESSAGES``: ``max_tokens`` at least 1, one
    message or more) as :class:`Converted`.

    Raises BadRequest for what Anthropic would refuse too: an empty model, an unknown role, a
    block that is not an object, a ``tool_use`` without a name or whose input is not an
    object, an image whose source is neither base64 nor a URL, an unknown ``thinking`` or
    ``tool_choice`` type, an unknown effort."""
    if not req["model"]:
        # /api/chat and /v1/responses refuse it too; a backend would answer in its own words
        raise BadRequest("model: a model name is required (it is empty)", param="model")
    conv = Converted(chat={})
    max_tokens = req["max_tokens"]  # at least 1 (the schema): 0, cache pre-warming, means nothing
    messages: list[dict[str, Any]] = []
    system = _system_text(req.get("system"), "system", conv)
    if system:
        messages.append({"role": "system", "content": system})
    for i, msg in enumerate(req["messages"]):
        messages.extend(_message(i, msg, conv))
    options: dict[str, Any] = {"num_predict": max_tokens}
    for name in ("temperature", "top_p", "top_k"):
        if req.get(name) is not None:
            # top_k has no OpenAI name: chat.py drops it (logged) unless PASSTHROUGH_OPTIONS
            # forwards it to a backend that takes it (vLLM, llama.cpp), as for Ollama clients.
            options[name] = req[name]
    stops = req.get("stop_sequences")
    if stops:
        options["stop"] = list(stops)
        conv.stops = tuple(stops)
    chat: dict[str, Any] = {
        "model": req["model"],
        "messages": messages,
        "stream": req.get("stream") is True,  # Anthropic answers whole unless asked to stream
        "options": options,
    }
    tools = _tools(req.get("tools"), conv)
    _tool_choice(req.get("tool_choice"), conv)
    if tools:
        chat["tools"] = tools
    elif conv.tool_choice is not None:
        # OpenAI refuses tool_choice and parallel_tool_calls without tools
        conv.notes.append("tool_choice without tools (or none a backend can run); ignored")
        conv.tool_choice = conv.parallel = None
    think = _think(req.get("thinking"), req.get("output_config"), conv)
    if think is not None:
        chat["think"] = think
    fmt = _output_format(req.get("output_config"), conv)
    if fmt is not None:
        chat["format"] = fmt
    for key in req:
        if key in _IGNORED:
            conv.ignored.append((f"{key} (anthropic)", f"{key} ignored: {_IGNORED[key]}"))
        elif key not in _READ:
            conv.unknown.append(echo(key))
    conv.chat = chat
    return conv


def messages_request(
    conv: Converted,
    target: Target,
    policy: Policy,
    kept: Mapping[tuple[int, int], Recalled] | None = None,
) -> UpstreamRequest:
    """The OpenAI request for ``conv`` on one route: chat.py's reference request plus the
    tool choice, shaped for the route's backend profile. ``kept``: what the tool-call store
    holds for the history's calls of the turn in progress (translate/carry.py)."""
    chat = conv.chat
    if conv.adaptive and not target.thinking and "think" in chat:
        # "adaptive" lets the model decide whether to think: a model not known to reason has
        # decided, and Claude Code sends it on every request -- no control, and no note.
        chat = {k: v for k, v in chat.items() if k != "think"}
    result = chat_payload(cast(ChatRequest, chat), target, policy, kept)
    result.notes[:0] = conv.notes
    payload = result.payload
    if conv.tool_choice is not None:
        payload["tool_choice"] = conv.tool_choice
    if conv.parallel is not None:
        payload["parallel_tool_calls"] = conv.parallel
    return for_backend(result, target, policy, CHAT_PATH)


def _system_text(value: Any, where: str, conv: Converted) -> str:
    """A system prompt (a string, or text blocks) as one text. Blocks are joined by a line
    break: Claude Code's first block is its billing header, which must not run into the next
    (Ollama joins them with nothing, anthropic.go)."""
    if value is None or isinstance(value, str):
        return value or ""
    texts = []
    for j, block in enumerate(value):
        if not isinstance(block, dict):
            raise BadRequest(f"{where}.{j} must be an object", param=where)
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
            if "cache_control" in block:
                conv.ignored.append(("cache_control (anthropic)", _CACHE_NOTE))
        else:
            conv.notes.append(f"{where} block of type {_kind(block)!r} is not text; dropped")
    return "\n".join(texts)


_CACHE_NOTE = "cache_control ignored: prompt caching is the backend's own business"


def _kind(block: Mapping[str, Any]) -> str:
    kind = block.get("type")
    return echo(kind) if isinstance(kind, str) else "?"


def _message(i: int, msg: Mapping[str, Any], conv: Converted) -> list[dict[str, Any]]:
    """One Anthropic message as Ollama messages: its tool results first (OpenAI wants them right
    after the calls they answer; Ollama's anthropic.go orders them so too), then the message
    itself; a mid-conversation system block becomes a system message before it."""
    role = msg["role"]
    if role not in ROLES:
        raise BadRequest(
            f"invalid role {echo(str(role))!r} at messages.{i}: user, assistant or system",
            param=f"messages.{i}.role",
        )
    content = msg["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}] if content or role != "system" else []
    if role == "system":
        text = _system_text(content, f"messages.{i}.content", conv)
        return [{"role": "system", "content": text}] if text else []
    texts: list[str] = []
    images: list[str | dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    thinking: list[str] = []
    results: list[dict[str, Any]] = []
    systems: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"messages.{i}.content.{j}"
        if not isinstance(block, dict):
            raise BadRequest(f"{where} must be an object", param=where)
        if "cache_control" in block:
            conv.ignored.append(("cache_control (anthropic)", _CACHE_NOTE))
        kind = block.get("type")
        if kind == "text":
            value = block.get("text")
            if not isinstance(value, str):
                raise BadRequest(f"{where}.text must be a string", param=f"{where}.text")
            texts.append(value)
        elif kind == "image":
            if role == "user":
                images.append(_image(block, where))
            else:
                conv.notes.append(f"an image on an {role} message cannot be sent; dropped")
        elif kind == "document":
            _document(block, where, texts, conv)
        elif kind == "tool_use" and role == "assistant":
            calls.append(_call(block, where))
        elif kind == "tool_result" and role == "user":
            results.append(_result(block, where, images, conv))
        elif kind == "thinking" and role == "assistant":
            if isinstance(block.get("thinking"), str):
                thinking.append(block["thinking"])  # its signature means nothing elsewhere
        elif kind == "redacted_thinking":
            pass  # encrypted by Anthropic for Anthropic: no other model can read it
        elif kind == "mid_conv_system":
            system = _system_text(block.get("content"), f"{where}.content", conv)
            if system:
                systems.append({"role": "system", "content": system})
        else:
            conv.notes.append(f"content block {_kind(block)!r} on a {role} message; dropped")
    out: list[dict[str, Any]] = [*systems, *results]
    if texts or images or calls or thinking:
        # Blocks of text joined by a line break, not run together (anthropic.go: nothing).
        message: dict[str, Any] = {"role": role, "content": "\n".join(texts)}
        if images:
            message["images"] = images
        if calls:
            message["tool_calls"] = calls
        if thinking:
            message["thinking"] = "".join(thinking)
        out.append(message)
    return out


def _image(block: Mapping[str, Any], where: str) -> str | dict[str, Any]:
    """A base64 image as a data: URL (checked as Ollama's are, translate/images.py); a URL
    image as an OpenAI ``image_url`` part, which OpenAI-compatible backends fetch themselves."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict) and isinstance(source.get("data"), str):
        data = source["data"]
        mime = source.get("media_type")
        if not isinstance(mime, str) or not mime.startswith("image/"):
            mime = sniff_mime(data)
        return f"data:{mime};base64,{data}"
    if kind == "url" and isinstance(source, dict) and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise BadRequest(
        f"invalid image source at {where}: base64 data or a url are supported",
        param=f"{where}.source",
    )


def _document(block: Mapping[str, Any], where: str, texts: list[str], conv: Converted) -> None:
    """A plain-text document as text; other documents (PDFs, files) cannot be sent on."""
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text":
        data = source.get("data")
        if isinstance(data, str):
            texts.append(data)
            return
    if isinstance(source, dict) and source.get("type") == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            texts.append(inner)
            return
        if isinstance(inner, list):
            texts.extend(
                b["text"] for b in inner if isinstance(b, dict) and isinstance(b.get("text"), str)
            )
            return
    kind = source.get("type") if isinstance(source, dict) else None
    conv.notes.append(f"document of source type {echo(str(kind))!r} at {where} cannot be sent")


def _call(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    name = block.get("name")
    if not isinstance(name, str) or not name:
        # Ollama's wording (anthropic.go convertMessage)
        raise BadRequest("tool_use block missing required 'name' field", param=f"{where}.name")
    arguments = block.get("input")
    if arguments is not None and not isinstance(arguments, dict):
        # Anthropic's API takes only an object here (anthropic-sdk-python ToolUseBlockParam:
        # ``input: Dict[str, object]``), and OpenAI's arguments must encode an object: sent on,
        # "notadict" would be arguments no backend parses as a call's.
        raise BadRequest(f"{where}.input must be an object", param=f"{where}.input")
    call: dict[str, Any] = {"function": {"name": name, "arguments": arguments or {}}}
    if isinstance(block.get("id"), str) and block["id"]:
        call["id"] = block["id"]
    return call


def _result(
    block: Mapping[str, Any], where: str, images: list[str | dict[str, Any]], conv: Converted
) -> dict[str, Any]:
    """A tool result as a tool message. Its images cannot ride on a tool message (OpenAI's take
    only text): they go with the user message that follows it, which the model reads next."""
    content = block.get("content")
    text = ""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for k, part in enumerate(content):
            if not isinstance(part, dict):
                raise BadRequest(f"{where}.content.{k} must be an object", param=where)
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif kind == "image":
                images.append(_image(part, f"{where}.content.{k}"))
                conv.notes.append("a tool result's image was sent in the user message after it")
            elif kind == "document":
                _document(part, f"{where}.content.{k}", parts, conv)
            else:
                conv.notes.append(f"tool result block {_kind(part)!r} cannot be sent; dropped")
        text = "\n".join(parts)
    elif content is not None:
        raise BadRequest(f"{where}.content must be a string or blocks", param=where)
    if block.get("is_error") is True:
        text = ERROR_PREFIX + text if text else ERROR_PREFIX.rstrip(": ")
    out: dict[str, Any] = {"role": "tool", "content": text}
    if isinstance(block.get("tool_use_id"), str):
        out["tool_call_id"] = block["tool_use_id"]
    return out


def _tools(tools: Any, conv: Converted) -> list[dict[str, Any]]:
    """Client tools as OpenAI functions (``input_schema`` as ``parameters``). Anthropic's own
    tools (a ``type`` other than ``custom``: web_search_20250305, bash_20250124,
    text_editor_*, code_execution_*...) run on Anthropic's side or against its built-in
    schemas, which no other backend has: they are left out, with a warning once per type."""
    out = []
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools.{i} must be an object", param=f"tools.{i}")
        kind = tool.get("type")
        if kind is not None and not isinstance(kind, str):
            raise BadRequest(f"tools.{i}.type must be a string", param=f"tools.{i}.type")
        if kind not in (None, "custom"):
            kind = echo(kind)
            conv.ignored.append(
                (
                    f"tool {kind} (anthropic)",
                    f"Anthropic's own tool {kind!r} cannot run here; left out",
                )
            )
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"tools.{i}.name is required", param=f"tools.{i}.name")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise BadRequest(f"tools.{i}.input_schema must be an object", param=f"tools.{i}")
        if "$schema" in schema:
            # Zod's JSON Schema export (Claude Code's tools) names its draft; the key says
            # nothing about the input, and Gemini's endpoint refuses unknown schema keys.
            schema = {k: v for k, v in schema.items() if k != "$schema"}
        function: dict[str, Any] = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        for extra in _TOOL_EXTRAS:
            if extra in tool:
                conv.ignored.append(
                    (f"tools.{extra} (anthropic)", f"tool field {extra!r} is Anthropic's own")
                )
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, conv: Converted) -> None:
    """Anthropic's tool_choice as OpenAI's: auto -> "auto", any -> "required", tool -> that
    function, none -> "none"; ``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``."""
    if choice is None:
        return
    kind = choice.get("type")
    if kind == "auto":
        conv.tool_choice = "auto"
    elif kind == "any":
        conv.tool_choice = "required"
    elif kind == "none":
        conv.tool_choice = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        conv.tool_choice = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise BadRequest(
            "tool_choice.type must be auto, any, tool (with a name) or none", param="tool_choice"
        )
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        conv.parallel = False


def _think(thinking: Any, output_config: Any, conv: Converted) -> bool | str | None:
    """``thinking`` (and ``output_config.effort``) as Ollama's ``think``: disabled -> false
    (reasoning also left out of the answer); enabled -> the effort, else the level nearest its
    ``budget_tokens``, else true; adaptive -> the effort, else true; an effort alone -> that
    level, as Ollama reads it (anthropic.go)."""
    effort = output_config.get("effort") if isinstance(output_config, dict) else None
    if effort is not None and (not isinstance(effort, str) or effort not in EFFORTS):
        raise BadRequest(
            f"output_config.effort must be one of {sorted(EFFORTS)}", param="output_config.effort"
        )
    if thinking is None:
        return effort
    kind = thinking.get("type")
    if kind == "disabled":
        conv.think = False
        return False
    if kind == "adaptive":
        conv.adaptive = True
    elif kind == "enabled":
        budget = thinking.get("budget_tokens")
        if effort is None and isinstance(budget, int) and not isinstance(budget, bool):
            effort = next((e for cap, e in _BUDGET_EFFORTS if budget <= cap), "xhigh")
    else:
        raise BadRequest(
            "thinking.type must be enabled, adaptive or disabled", param="thinking.type"
        )
    if thinking.get("display") == "omitted":
        conv.ignored.append(
            ("thinking.display (anthropic)", "thinking.display 'omitted': reasoning is sent")
        )
    return effort or True


def _output_format(output_config: Any, conv: Converted) -> dict[str, Any] | None:
    """``output_config.format`` (structured outputs: ``{"type": "json_schema", "schema"}``)
    as Ollama's ``format``, which chat.py sends as ``response_format``."""
    if not isinstance(output_config, dict):
        return None
    fmt = output_config.get("format")
    if fmt is None:
        return None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        if isinstance(schema, dict):
            return schema
    raise BadRequest(
        "output_config.format must be {type: json_schema, schema: {...}}",
        param="output_config.format",
    )


# --- token estimate ---------------------------------------------------------------------------


def estimate_tokens(req: Mapping[str, Any]) -> int:
    """A rough input token count for a Messages (or count_tokens) request: the characters of
    its system prompt, message texts, tool calls and results and tool definitions divided by
    :data:`CHARS_PER_TOKEN`, plus :data:`IMAGE_TOKENS` per image. No backend tokenizer is at
    hand (OpenAI-compatible APIs have no counting endpoint); Ollama estimates the same way."""
    chars = _chars(req.get("system"))
    images = 0
    for msg in req.get("messages") or ():
        if not isinstance(msg, dict):
            continue
        chars += len(str(msg.get("role", "")))
        n, m = _content_chars(msg.get("content"))
        chars += n
        images += m
    for tool in req.get("tools") or ():
        if isinstance(tool, dict):
            chars += _size(tool)
    tokens = -(-chars // CHARS_PER_TOKEN) + images * IMAGE_TOKENS
    return max(tokens, 1)


def _size(value: Any) -> int:
    """The length of ``value`` as JSON (as ``repr`` when orjson cannot write it: an integer
    beyond 64 bits, which schemas.widen turns into a float only for a backend call)."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return len(repr(value))


def _chars(value: Any) -> int:
    return _content_chars(value)[0]


def _content_chars(value: Any) -> tuple[int, int]:
    """``(characters, images)`` of a content: a string, or blocks (nested results included)."""
    if isinstance(value, str):
        return len(value), 0
    if not isinstance(value, list):
        return 0, 0
    chars = images = 0
    for block in value:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "image":
            images += 1
        elif kind == "tool_use":
            chars += len(str(block.get("name", ""))) + _size(block.get("input"))
        elif kind in ("tool_result", "mid_conv_system"):
            n, m = _content_chars(block.get("content"))
            chars, images = chars + n, images + m
        else:
            for key in ("text", "thinking"):
                if isinstance(block.get(key), str):
                    chars += len(block[key])
    return chars, images
