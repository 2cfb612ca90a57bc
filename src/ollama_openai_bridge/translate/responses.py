"""OpenAI Responses request (``POST /v1/responses``) -> a chat-completion request (issue #17).

The Responses API (openai-python ``types/responses/response_create_params.py``) is served the way
Ollama serves it since v0.13.3 (ollama/ollama ``openai/responses.go``): statelessly, each request
carrying the whole conversation (``store: false``, as OpenAI's Codex CLI sends it), translated
to the backend's ``/v1/chat/completions``. :func:`read_request` turns the body into a chat
history in the shape ``/api/chat`` takes, so the same history builder pairs calls with their
results, carries the backend's provider data and applies the backend profile
(``chat.chat_payload``, ``chat.for_backend``); :func:`chat_request` adds what only this dialect
asks for (``tool_choice``, a named JSON schema) before the profile shapes the body.

Rules, and whom they serve:

* ``instructions`` and ``developer``/``system`` messages become system messages; consecutive
  ones are merged into one (Codex sends two developer messages in a row; several chat templates
  take one system message only).
* ``function_call`` items become the assistant's ``tool_calls`` (consecutive ones merged into one
  assistant message), ``function_call_output`` items ``tool`` messages; ``reasoning`` items go
  back as the next assistant turn's reasoning where the backend profile wants it
  (``thinking_back``) and are otherwise not sent (the backend does not need its own reasoning).
* Tools, their names and ``tool_choice``: translate/response_tools.py (namespaces flattened to
  ``<namespace>__<name>`` and mapped back, hosted tools dropped with a warning); hosted tools'
  calls in the history are dropped with a warning too.
* ``previous_response_id``, ``conversation``, ``background`` and ``prompt`` need state the proxy
  does not keep: 400 with a message saying so. ``store: true`` is accepted, and nothing is stored.

Every rule raises :class:`~ollama_openai_bridge.errors.BadRequest` naming the field in OpenAI's
notation (``input[3].content[0].image_url``).
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
from ollama_openai_bridge.translate.images import data_url
from ollama_openai_bridge.translate.response_tools import (
    ToolNames,
    flatten,
    read_tools,
    tool_choice,
)

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# Input items of hosted tools' calls: history of tools the backend never ran. The message that
# follows carries what the model made of them (ollama/ollama openai/responses.go skips them too).
HOSTED_CALLS = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "code_interpreter_call",
        "image_generation_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "tool_search_call",
        "tool_search_output",
        "compaction",
    }
)
# Request fields that ask for state the proxy does not keep: refused, in these words.
STATEFUL = {
    "previous_response_id": "previous_response_id is not supported: this server stores no "
    "responses (it is stateless); send the whole conversation in input, with store: false",
    "conversation": "conversation is not supported: this server stores no conversations (it is "
    "stateless); send the whole conversation in input",
    "prompt": "prompt (a stored prompt template) is not supported: this server stores no "
    "prompts; send the instructions and input themselves",
}
# Fields the backend gets no equivalent of: each noted once (the key), never refused.
IGNORED = {
    "include": "include is not supported (no stored or encrypted items); ignored",
    "prompt_cache_key": "prompt_cache_key has no chat-completions equivalent here; ignored",
    "metadata": "metadata is not stored (stateless); ignored",
    "truncation": "truncation is not supported: the backend truncates (or refuses) by itself",
    "user": "user is not sent to the backend; ignored",
    "safety_identifier": "safety_identifier is not sent to the backend; ignored",
    "service_tier": "service_tier is not sent to the backend; ignored",
    "max_tool_calls": "max_tool_calls is not enforced; ignored",
    "top_logprobs": "top_logprobs is not supported on /v1/responses here; ignored",
    "stream_options": "stream_options is not supported on /v1/responses here; ignored",
}
# Every field read here; any other is noted as unknown.
KNOWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "reasoning",
        "text",
        "store",
        "background",
        *STATEFUL,
        *IGNORED,
    }
)


@dataclass(slots=True)
class Parsed:
    """A Responses request, read: ``chat``, the history and tools in the shape ``/api/chat``
    takes (what :func:`chat.chat_payload` translates); ``fields``, what the chat body gets on
    top (``tool_choice``, ``parallel_tool_calls``, ``response_format``); ``names``, the flat
    tool names the backend may call (response_tools.ToolNames); ``echo``, the request fields a
    Response object repeats; ``reasoning``: the client wants reasoning items (``effort`` is
    not ``none``); what was noted on the way, for the handler to log; ``origins``: for each
    message of the history, the index of the input item it began with (-1: ``instructions``),
    to name the item in a limit's refusal; ``unknown``: the names of top-level fields the API
    does not have (the handler logs them, a bounded number per request: a client chooses
    them)."""

    chat: dict[str, Any]
    fields: dict[str, Any] = field(default_factory=dict)
    names: ToolNames = field(default_factory=ToolNames)
    echo: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    reasoning: bool = True
    notes: list[str] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    warned: set[str] = field(default_factory=set)
    unknown: list[str] = field(default_factory=list)
    origins: list[int] = field(default_factory=list)

    def warn(self, key: str, message: str) -> None:
        """A warning logged once per ``key`` (context.report); each key once per request, so a
        history of many hosted calls is one warning, not as many."""
        if key not in self.warned:
            self.warned.add(key)
            self.warnings.append((key, message))

    def where(self, i: int, what: str) -> tuple[str, str]:
        """``limits.check_chat``'s field and param for message ``i`` of the history (``what``:
        ``images`` or ``tool_calls``), in the client's terms: the input item it began with."""
        k = self.origins[i]
        item = f"input[{k}]" if k >= 0 else "instructions"
        if what == "tool_calls":
            return f"function calls of the assistant turn from {item}", item
        return f"{item}.content", "input"

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The history, as ``/api/chat`` messages (the tool-call store reads their calls)."""
        return cast(list[dict[str, Any]], self.chat["messages"])


def read_request(req: Mapping[str, Any]) -> Parsed:
    """A validated ``/v1/responses`` body (``schemas.RESPONSES``) -> :class:`Parsed`.

    Raises BadRequest for what cannot be served: stateful fields, input items or content parts
    of unknown or unsupported types, a function call without ``call_id`` or ``name``..."""
    for name, message in STATEFUL.items():
        if req.get(name) is not None:
            raise BadRequest(message, param=name)
    if req.get("background"):
        raise BadRequest(
            "background is not supported: this server keeps no responses to poll",
            param="background",
        )
    out = Parsed(chat={"model": req.get("model"), "stream": req.get("stream") is True})
    out.stream = out.chat["stream"]
    out.unknown = [echo(name) for name in req if name not in KNOWN]
    for name, message in IGNORED.items():
        if req.get(name) not in (None, "", [], {}) and (
            name != "truncation" or req[name] != "disabled"
        ):
            out.warn(f"responses {name}", message)
    if req.get("store"):
        out.warn("responses store", "store: true accepted, but nothing is stored (stateless)")
    tools = read_tools(req.get("tools") or [], out.names, out.warn, out.adapted)
    history = _History(out)
    out.chat["messages"] = history.read(req.get("instructions"), req.get("input"))
    out.origins = history.origins
    if not out.chat["messages"]:
        # Nothing to answer: OpenAI would take a stored prompt or conversation here, and a chat
        # backend refuses an empty message list in its own words.
        raise BadRequest("input is required: send the conversation in input", param="input")
    choice = tool_choice(req.get("tool_choice"), tools, out.names, out.warn, out.adapted)
    if choice is not None:
        out.fields["tool_choice"] = choice
    if tools:
        out.chat["tools"] = tools
        if req.get("parallel_tool_calls") is not None:
            out.fields["parallel_tool_calls"] = req["parallel_tool_calls"]
    options = {
        key: req[name]
        for name, key in (
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("max_output_tokens", "num_predict"),
        )
        if req.get(name) is not None
    }
    if options:
        out.chat["options"] = options
    _reasoning(req.get("reasoning"), out)
    _text(req.get("text"), out)
    out.echo = _echo(req)
    return out


def chat_request(
    parsed: Parsed,
    target: Target,
    policy: Policy,
    kept: Mapping[tuple[int, int], Recalled] | None = None,
) -> UpstreamRequest:
    """The chat completion for one route: ``/api/chat``'s translation of ``parsed.chat``, this
    dialect's fields on top, then shaped for the backend profile. ``kept``: what the tool-call
    store holds for the history's calls, made by this route's upstream and model (carry.py)."""
    up = chat_payload(cast(ChatRequest, parsed.chat), target, policy, kept)
    up.payload.update(parsed.fields)
    up.notes[:0] = parsed.notes
    up.warnings[:0] = parsed.warnings
    up.adapted[:0] = parsed.adapted
    return for_backend(up, target, policy, CHAT_PATH)


# --- input ------------------------------------------------------------------------------------


class _History:
    """Responses input items -> ``/api/chat`` messages (``content`` a string, or OpenAI parts
    when the message has images: ``chat._content`` passes a list through).

    Texts merged into one message (a run of system/developer messages, an assistant turn's
    messages, its reasoning items) are collected in lists and joined once, when the history is
    complete: appending each to a growing string costs the square of the run's length, and a
    body of 99,999 developer items (13.8 MB, within every limit) held the event loop for 184 s
    (review of #17)."""

    def __init__(self, out: Parsed) -> None:
        self.out = out
        self.messages: list[dict[str, Any]] = []
        self.origins: list[int] = []  # per message, the input item it began with (-1: instructions)
        self.at = -1  # the input item being read
        self.thinking: list[str] = []  # reasoning items' texts, for the next assistant turn
        self.called: dict[str, str] = {}  # call_id -> flat name, to name each result
        self.merging: dict[str, list[str]] = {}  # the last message's merged texts, by key
        self.joins: list[tuple[dict[str, Any], str, str, list[str]]] = []
        self.merged = False  # consecutive system messages were merged (noted once)

    def read(self, instructions: Any, items: Any) -> list[dict[str, Any]]:
        if instructions:
            self.system(instructions)
        if isinstance(items, str):
            self.at = 0
            self.append({"role": "user", "content": items})
        else:
            for i, item in enumerate(items or ()):
                self.at = i
                self.item(i, item)
        if self.thinking:
            self.out.adapted.append("a reasoning item with no assistant turn after it: not sent")
        for msg, key, separator, parts in self.joins:
            msg[key] = separator.join(parts)
        return self.messages

    def new(self, msg: dict[str, Any]) -> None:
        self.messages.append(msg)
        self.origins.append(self.at)
        self.merging = {}

    def parts(self, key: str, separator: str) -> list[str]:
        """The texts of the last message's ``key``, joined by ``separator`` at the end."""
        parts = self.merging.get(key)
        if parts is None:
            parts = self.merging[key] = []
            self.joins.append((self.messages[-1], key, separator, parts))
        return parts

    def append(self, msg: dict[str, Any]) -> None:
        """A message that is not the assistant's: reasoning still pending belonged to an
        assistant turn that never came, and is not sent."""
        if self.thinking:
            self.thinking = []
            self.out.adapted.append("a reasoning item with no assistant turn after it: not sent")
        self.new(msg)

    def system(self, text: str) -> None:
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "system":
            parts = self.parts("content", "\n\n")
            if not parts:
                parts.append(last["content"])
            parts.append(text)
            if not self.merged:
                self.merged = True
                self.out.adapted.append("consecutive system/developer messages merged into one")
        else:
            self.append({"role": "system", "content": text})

    def assistant(self) -> dict[str, Any]:
        """The assistant message to add to: the last message if it is the assistant's (no tool
        result came since), else a new one. Pending reasoning goes with it, after any it has
        already: reasoning A, call 1, reasoning B, call 2 is one turn, and a backend that takes
        reasoning back (DeepSeek) needs both."""
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant":
            last = {"role": "assistant", "content": ""}
            self.new(last)
        if self.thinking:
            self.parts("thinking", "\n\n").extend(self.thinking)
            self.thinking = []
        return last

    def item(self, i: int, item: Any) -> None:
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object", param=where)
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"  # the shorthand {"role", "content"} (EasyInputMessage)
        if kind == "message":
            self.message(where, item)
        elif kind in ("function_call", "custom_tool_call"):
            self.call(where, item, custom=kind == "custom_tool_call")
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self.result(where, item)
        elif kind == "reasoning":
            self.reasoning(item)
        elif kind == "item_reference":
            raise BadRequest(
                f"{where}: item_reference needs stored items; this server stores none "
                "(stateless): send the item itself",
                param=where,
            )
        elif kind in HOSTED_CALLS:
            label = echo(str(kind))
            self.out.warn(
                f"responses input {label}",
                f"{label} items in input dropped: the backend cannot run that tool",
            )
        else:
            raise BadRequest(
                f"{where}: unknown input item type {echo(str(kind))!r}", param=f"{where}.type"
            )

    def message(self, where: str, item: Mapping[str, Any]) -> None:
        role = ROLES.get(item.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise BadRequest(
                f"{where}.role must be user, assistant, system or developer", param=f"{where}.role"
            )
        content = _content(item.get("content"), f"{where}.content", role, self.out)
        if role == "system":
            self.system(content if isinstance(content, str) else "")  # images were dropped
        elif role == "assistant":
            self.assistant()
            # after a call and before its result (ollama/ollama openai/responses.go keeps these
            # in one assistant message too), or two assistant messages in a row: joined by a
            # line break, from the first one with text
            text = content if isinstance(content, str) else ""  # images were dropped
            parts = self.parts("content", "\n")
            if parts or text:
                parts.append(text)
        else:
            self.append({"role": role, "content": content})

    def call(self, where: str, item: Mapping[str, Any], *, custom: bool) -> None:
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not call_id:
            raise BadRequest(f"{where}.call_id is required", param=f"{where}.call_id")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{where}.name is required", param=f"{where}.name")
        namespace = item.get("namespace")
        flat = self.out.names.find(name, namespace) or flatten(
            name, namespace if isinstance(namespace, str) else None
        )
        if custom:
            arguments: Any = orjson.dumps({"input": str(item.get("input") or "")}).decode()
        else:
            arguments = item.get("arguments")
            if arguments is not None and not isinstance(arguments, str | dict):
                raise BadRequest(
                    f"{where}.arguments must be a JSON string", param=f"{where}.arguments"
                )
        msg = self.assistant()
        msg.setdefault("tool_calls", []).append(
            {"id": call_id, "function": {"name": flat, "arguments": arguments or "{}"}}
        )
        self.called[call_id] = flat

    def result(self, where: str, item: Mapping[str, Any]) -> None:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise BadRequest(f"{where}.call_id is required", param=f"{where}.call_id")
        output = item.get("output")
        if output is None or isinstance(output, str):
            text = output or ""
        else:
            parts = _content(output, f"{where}.output", "tool", self.out)
            text = parts if isinstance(parts, str) else ""
        msg: dict[str, Any] = {"role": "tool", "tool_call_id": call_id, "content": text}
        if call_id in self.called:
            msg["tool_name"] = self.called[call_id]
        self.append(msg)

    def reasoning(self, item: Mapping[str, Any]) -> None:
        # The raw text (content: reasoning_text, as Codex sends a backend's reasoning back),
        # else the summary; encrypted_content is OpenAI's own, opaque to any other backend.
        texts = [
            p["text"]
            for key in ("content", "summary")
            for p in (item.get(key) or ())
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        if item.get("encrypted_content"):
            self.out.adapted.append("a reasoning item's encrypted_content is opaque here: not sent")
        self.thinking.extend(texts)  # reasoning items in a row: one turn's


def _content(value: Any, where: str, role: str, out: Parsed) -> str | list[dict[str, Any]]:
    """A message's content (a string, or a list of typed parts) -> its text, or OpenAI chat
    parts when it has images (a user's only: other roles' images are dropped with a note). Text
    parts are joined with a newline, as vLLM joins a message's text parts for the chat template
    (entrypoints/chat_utils.py): Codex's developer message has several, each a tagged block, and
    Ollama's plain concatenation (convertResponsesContent) glues one block's closing tag to the
    next one's opening tag."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise BadRequest(f"{where} must be a string or a list of parts", param=where)
    parts: list[dict[str, Any]] = []
    images = False
    for j, part in enumerate(value):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            if not isinstance(part.get("text"), str):
                raise BadRequest(f"{at}.text must be a string", param=f"{at}.text")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image":
            url = _image(part, at)
            if role != "user":
                out.notes.append(f"images on a {role} message are not supported upstream; dropped")
                continue
            parts.append({"type": "image_url", "image_url": {"url": url}})
            images = True
        elif kind in ("input_file", "input_audio"):
            raise BadRequest(f"{at}: {kind} parts are not supported", param=f"{at}.type")
        else:
            raise BadRequest(f"{at}: unknown content part type {echo(str(kind))!r}", param=at)
    if images:
        return parts
    return "\n".join(p["text"] for p in parts)


def _image(part: Mapping[str, Any], where: str) -> str:
    """An ``input_image``'s URL: a base64 data URL (checked, as ``/api/chat`` checks images) or
    an http(s) URL the backend fetches (Ollama refuses those; a chat backend may take them)."""
    url = part.get("image_url")
    if part.get("file_id") and not url:
        raise BadRequest(
            f"{where}: file_id needs the Files API, which this server does not offer; send "
            "image_url",
            param=f"{where}.file_id",
        )
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.image_url is required", param=f"{where}.image_url")
    if url.startswith(("http://", "https://")):
        return url
    return data_url(url, f"{where}.image_url")


# --- parameters -------------------------------------------------------------------------------


def _reasoning(reasoning: Any, out: Parsed) -> None:
    """``reasoning.effort`` -> Ollama's ``think`` (so translate/think.py sends it the backend's
    way): ``none`` is off, and also keeps reasoning out of the answer."""
    if not reasoning:
        return
    effort = reasoning.get("effort")
    if effort is None:
        return
    if effort not in EFFORTS:
        raise BadRequest(
            f"invalid reasoning.effort {echo(str(effort))!r} ({', '.join(EFFORTS)})",
            param="reasoning.effort",
        )
    out.chat["think"] = False if effort == "none" else effort
    out.reasoning = effort != "none"


def _text(text: Any, out: Parsed) -> None:
    """``text.format`` -> ``response_format`` (chat's names: ``json_schema.name``, ``strict``)."""
    if not text:
        return
    if text.get("verbosity") is not None:
        out.warn("responses text.verbosity", "text.verbosity is not sent; ignored")
    fmt = text.get("format")
    if not fmt or fmt.get("type") == "text":
        return
    kind = fmt.get("type")
    if kind == "json_object":
        out.fields["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise BadRequest(
                "text.format.schema is required for json_schema", param="text.format.schema"
            )
        spec: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": schema}
        if fmt.get("description"):
            spec["description"] = fmt["description"]
        if fmt.get("strict") is not None:
            spec["strict"] = fmt["strict"]
        out.fields["response_format"] = {"type": "json_schema", "json_schema": spec}
    else:
        raise BadRequest(
            f"invalid text.format.type {echo(str(kind))!r} (text, json_object or json_schema)",
            param="text.format.type",
        )


def _echo(req: Mapping[str, Any]) -> dict[str, Any]:
    """The request's settings as a Response object repeats them (openai-python
    ``types/responses/response.py``), with OpenAI's defaults; ``store`` is false whatever was
    asked: nothing is stored."""
    text = req.get("text") or {}
    return {
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "metadata": req.get("metadata") or {},
        "parallel_tool_calls": req.get("parallel_tool_calls") is not False,
        "previous_response_id": None,
        "reasoning": {
            "effort": (req.get("reasoning") or {}).get("effort"),
            "summary": (req.get("reasoning") or {}).get("summary"),
        },
        "store": False,
        "temperature": 1.0 if req.get("temperature") is None else req["temperature"],
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": req.get("tool_choice") or "auto",
        "tools": req.get("tools") or [],
        "top_p": 1.0 if req.get("top_p") is None else req["top_p"],
        "truncation": req.get("truncation") or "disabled",
    }
