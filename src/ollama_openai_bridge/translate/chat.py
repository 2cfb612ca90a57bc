"""Ollama ``/api/chat`` and ``/api/generate`` -> OpenAI ``/v1/chat/completions`` requests
(contract §4.1-4.3): :func:`chat_request`, :func:`generate_request`, :func:`completion_request`,
shaped for the backend by :func:`for_backend`. The answers' direction is ``answer.py`` (whole)
and ``stream.py`` (streamed), which share its mappings so both paths read alike.
"""

from __future__ import annotations

import string
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ollama_openai_bridge.errors import BadRequest, echo
from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.schemas import ChatRequest, GenerateRequest, Message
from ollama_openai_bridge.translate.carry import Recalled, current_turn
from ollama_openai_bridge.translate.conversation import Conversation
from ollama_openai_bridge.translate.images import check_images, data_url
from ollama_openai_bridge.translate.options import map_options
from ollama_openai_bridge.translate.shape import OUTPUT_LIMITS, cap_output, forget, shape
from ollama_openai_bridge.translate.think import think_params

# The backend endpoints a translated request goes to (relative to its base URL).
CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"
EMBEDDINGS_PATH = "/embeddings"
ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
COMPLETIONS_MAX_LOGPROBS = 5


@dataclass(slots=True)
class UpstreamRequest:
    """An OpenAI request body plus what the caller should log about the translation."""

    payload: dict[str, Any]
    dropped_options: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What the backend profile changed (DEBUG log), and what the client will not get because of
    # it, as (key, message) to warn about once per key (translate/shape.py).
    adapted: list[str] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)


# --- requests ---------------------------------------------------------------------------------


def _content(
    text: str, images: list[str] | list[str | dict[str, Any]] | None, where: str
) -> str | list[dict[str, Any]]:
    """``where``: the images' field in the request (``messages.0.images``), for errors. An image
    given as a dict is an OpenAI content part already (the Anthropic route's URL images,
    translate/anthropic.py); Ollama's own images are base64 strings."""
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts.extend(
        img
        if isinstance(img, dict)
        else {"type": "image_url", "image_url": {"url": data_url(img, f"{where}.{i}")}}
        for i, img in enumerate(images)
    )
    return parts


def _arguments(args: Any) -> str:
    # OpenAI wants arguments as a JSON string; Ollama clients send an object (contract §4.1).
    if isinstance(args, str):
        return args
    return orjson.dumps(args if args is not None else {}).decode()


class _History:
    """Builds a valid OpenAI message list from an Ollama history.

    OpenAI requires every assistant ``tool_calls`` entry to be answered by a ``tool`` message with
    its ``tool_call_id``, and rejects tool messages that answer nothing. Ollama clients rarely send
    ids: ollama-python's Message model drops them, @langchain/ollama sends neither ``tool_call_id``
    nor ``tool_name`` (contract §5.1.5, §5.4.7). So results are paired by id, else by tool name,
    else by position, and ids are synthesised from the message position so that the same history
    always yields the same ids (stable for upstream prompt caches).
    """

    def __init__(
        self,
        notes: list[str],
        thinking_field: str | None = None,
        carried: Carried | None = None,
    ) -> None:
        self.out: list[dict[str, Any]] = []
        self.carried = carried
        # Where the backend wants an assistant turn's reasoning back (DeepSeek's thinking mode
        # with tools: reasoning_content, "must be passed back to the API"); None: not sent,
        # since strict backends refuse unknown message keys.
        self.thinking_field = thinking_field
        # The unanswered calls of the last assistant turn, in order: id -> name; and the same ids
        # by name (answered ones are skipped when met). A result finds its call in constant
        # time, so a long history costs linear time, never calls x results.
        self.pending: dict[str, str] = {}
        self.by_name: dict[str, deque[str]] = {}
        self.notes = notes

    def call(self, call_id: str, name: str) -> None:
        self.pending[call_id] = name
        self.by_name.setdefault(name, deque()).append(call_id)

    def close_round(self) -> None:
        for call_id, name in self.pending.items():
            self.notes.append(f"tool call {name!r} had no result in the history; sent empty")
            self.out.append({"role": "tool", "tool_call_id": call_id, "content": ""})
        self.pending.clear()
        self.by_name.clear()

    def _first_named(self, name: str) -> str | None:
        ids = self.by_name.get(name)
        while ids:
            if ids[0] in self.pending:
                return ids[0]
            ids.popleft()
        return None

    def tool_result(self, msg: Message, content: str) -> None:
        call_id, name = msg.get("tool_call_id"), msg.get("tool_name")
        match = None
        if call_id and call_id in self.pending:
            match = call_id
        if match is None and name:
            match = self._first_named(name)
        if match is None and self.pending and not call_id:
            match = next(iter(self.pending))
        if match is None:
            # Nothing to answer: a strict backend would reject the message, so keep its text
            # as a user turn rather than lose it.
            self.notes.append("tool result without a matching tool call; sent as a user message")
            label = f" {name}" if name else ""
            self.out.append({"role": "user", "content": f"[tool result{label}] {content}"})
            return
        del self.pending[match]
        self.out.append({"role": "tool", "tool_call_id": match, "content": content})

    def message(self, i: int, msg: Message, content: str) -> None:
        self.close_round()
        role = msg["role"].lower()
        if role not in ROLES:
            raise BadRequest(f"invalid message role {echo(msg['role'])!r} at messages.{i}")
        images = msg.get("images")
        if images and role != "user":
            check_images(images, f"messages.{i}.images")  # invalid is invalid, dropped or not
            self.notes.append(f"images on a {role} message are not supported upstream; dropped")
            images = None
        out: dict[str, Any] = {
            "role": role,
            "content": _content(content, images, f"messages.{i}.images"),
        }
        tool_calls = msg.get("tool_calls") if role == "assistant" else None
        if tool_calls:
            calls = []
            carried = self.carried
            for j, tc in enumerate(tool_calls):
                fn = tc["function"]
                kept = carried.calls.get((i, j)) if carried is not None else None
                call_id = tc.get("id") or (kept and kept.id) or synth_id(i, j)
                if call_id in self.pending:  # a repeated id: each call needs its own answer
                    call_id = synth_id(i, j)
                call: dict[str, Any] = {
                    "id": call_id,
                    "type": "function",
                    "function": {
                        "name": fn["name"],
                        "arguments": _arguments(fn.get("arguments")),
                    },
                }
                if kept is not None and kept.extra:
                    call["extra_content"] = kept.extra
                calls.append(call)
                self.call(call_id, fn["name"])
            if carried is not None and i >= carried.turn:
                carried.stand_in(calls)
            out["tool_calls"] = calls
            if not content:
                out["content"] = None
        if role == "assistant" and self.thinking_field and msg.get("thinking"):
            out[self.thinking_field] = msg["thinking"]
        self.out.append(out)


@dataclass(slots=True)
class Carried:
    """What the backend made and the client dropped, for the calls of the turn in progress
    (translate/carry.py): ``calls`` by ``(message index, call index)``, kept for this route's
    upstream and model; ``turn``, the index of the first message of the turn in progress;
    ``stand_in``, provider data for a call with none (the profile's ``signature_stand_in``)."""

    calls: Mapping[tuple[int, int], Recalled]
    turn: int
    fallback: Mapping[str, Any] | None = None
    adapted: list[str] = field(default_factory=list)

    def stand_in(self, calls: list[dict[str, Any]]) -> None:
        # Gemini's parallel calls carry one signature, on the first call; one is enough.
        if self.fallback is None or any("extra_content" in c for c in calls):
            return
        calls[0]["extra_content"] = dict(self.fallback)
        self.adapted.append(
            f"tool call {calls[0]['function']['name']!r}: no thought signature kept for it; "
            "sent the backend's documented stand-in"
        )


def messages_to_openai(
    messages: Iterable[Message],
    notes: list[str],
    thinking_field: str | None = None,
    carried: Carried | None = None,
    folded: list[str] | None = None,
) -> list[dict[str, Any]]:
    """An Ollama history as OpenAI messages (:class:`_History`); ``thinking_field``: where an
    assistant message's ``thinking`` goes, for a backend that wants it back; ``carried``: the
    backend's own ids and provider data to give back with the calls it made. ``folded``: given
    (the profile's ``system_turns`` "fold"), a system or developer message after the first
    message joins the leading system message instead of keeping its place, and the texts folded
    are appended to it (for the log)."""
    history = _History(notes, thinking_field, carried)
    for i, msg in enumerate(messages):
        content = msg.get("content") or ""
        role = msg["role"].lower()
        if role == "tool":
            history.tool_result(msg, content)
        elif folded is not None and i > 0 and role in _SYSTEM_ROLES:
            # Out of the history before it can close a round of tool calls, so the results
            # after it still pair with their calls; its index stays (carried calls' keys).
            images = msg.get("images")
            if images:
                check_images(images, f"messages.{i}.images")
                notes.append(f"images on a {role} message are not supported upstream; dropped")
            if content:
                folded.append(content)
        else:
            history.message(i, msg, content)
    history.close_round()
    if folded:
        _fold_system(history.out, folded)
    return history.out


_SYSTEM_ROLES = frozenset({"system", "developer"})


def _fold_system(out: list[dict[str, Any]], texts: list[str]) -> None:
    """``texts`` (later system messages, in order) appended to the leading system message, one
    blank line apart; a leading one is made if the conversation has none."""
    first = out[0] if out else None
    if first is not None and first["role"] in _SYSTEM_ROLES and isinstance(first["content"], str):
        joined = "\n\n".join([first["content"], *texts] if first["content"] else texts)
        out[0] = {**first, "content": joined}
    else:
        out.insert(0, {"role": "system", "content": "\n\n".join(texts)})


def _response_format(fmt: Any) -> dict[str, Any] | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        # OpenAI requires a name; Ollama has none to give. Not "strict": OpenAI's strict mode
        # rejects schemas without additionalProperties:false, which pydantic does not emit.
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    raise BadRequest(f'invalid format: "{fmt}" (use "json" or a JSON schema object)')


def _common(
    req: ChatRequest | GenerateRequest,
    target: Target,
    body: dict[str, Any],
    policy: Policy,
    result: UpstreamRequest,
    *,
    completions: bool = False,
) -> None:
    stream = req.get("stream")
    stream = True if stream is None else stream  # Ollama streams unless told otherwise
    payload: dict[str, Any] = {"model": target.model, **body, "stream": stream}
    if stream:
        # Without it OpenAI sends no usage in streams and the done line would lack token counts.
        payload["stream_options"] = {"include_usage": True}
    options = req.get("options")
    if options:
        dropped, notes = map_options(options, policy.passthrough, payload)
        result.dropped_options.extend(dropped)
        result.notes.extend(notes)
    response_format = _response_format(req.get("format"))
    if response_format is not None:
        if completions:
            result.notes.append("format is not supported by /v1/completions; ignored")
        else:
            payload["response_format"] = response_format
    if not completions:
        params = think_params(req.get("think"), target, result.notes, result.adapted)
        if params:
            payload.update(params)
            result.adapted.append(f"think {req.get('think')!r} sent as {params}")
    if req.get("logprobs"):
        top = req.get("top_logprobs") or 0
        if completions:
            # /v1/completions takes one integer instead: how many alternatives, 0 to 5
            # (openai-openapi CreateCompletionRequest.logprobs); it has no top_logprobs.
            if top > COMPLETIONS_MAX_LOGPROBS:
                result.notes.append(
                    f"top_logprobs {top}: /v1/completions returns at most "
                    f"{COMPLETIONS_MAX_LOGPROBS}; sent {COMPLETIONS_MAX_LOGPROBS}"
                )
            payload["logprobs"] = min(top, COMPLETIONS_MAX_LOGPROBS)
        else:
            payload["logprobs"] = True
            if top:
                payload["top_logprobs"] = top
    if completions and "max_tokens" not in payload:
        payload["max_tokens"] = policy.completions_max_tokens
    result.payload = payload


def chat_request(
    req: ChatRequest,
    target: Target,
    policy: Policy,
    kept: Mapping[tuple[int, int], Recalled] | None = None,
) -> UpstreamRequest:
    """``/api/chat`` as a chat completion. ``kept``: what the store holds for the history's
    calls of the turn in progress, made by this route's upstream and model (carry.py)."""
    return for_backend(chat_payload(req, target, policy, kept), target, policy, CHAT_PATH)


def chat_payload(
    req: ChatRequest,
    target: Target,
    policy: Policy,
    kept: Mapping[tuple[int, int], Recalled] | None = None,
) -> UpstreamRequest:
    """The reference chat completion for ``req``, not yet shaped for the backend: callers that
    add fields of their own (``/v1/responses``: ``tool_choice``, a named JSON schema;
    ``/v1/messages``: translate/anthropic.py) add them before :func:`for_backend`, so the
    profile sees the whole body."""
    result = UpstreamRequest(payload={})
    history = req.get("messages") or ()
    carried = None
    fallback = policy.profile.signature_stand_in
    if kept or (fallback is not None and history):
        carried = Carried(kept or {}, current_turn(history), fallback, result.adapted)
    profile = policy.profile
    folded: list[str] | None = [] if profile.system_turns == "fold" else None
    messages = messages_to_openai(history, result.notes, profile.thinking_back, carried, folded)
    if folded:
        result.adapted.append(
            f"{len(folded)} system message(s) after the first message folded into the leading "
            f"one: the {profile.name} backend's chat templates take one system message, first"
        )
    _common(req, target, {"messages": messages}, policy, result)
    tools = req.get("tools")
    if tools:  # ollama-python always sends tools: []; OpenAI rejects an empty list
        # Ollama's tools are functions; OpenAI requires the type a client may leave out.
        result.payload["tools"] = [t if "type" in t else {"type": "function", **t} for t in tools]
    return result


def for_backend(
    result: UpstreamRequest, target: Target, policy: Policy, endpoint: str
) -> UpstreamRequest:
    """The reference request shaped for the upstream's backend profile, plus the operator's
    fixed ``extra_body`` fields (which win: the operator knows the backend), less what the
    backend refused for this model before (which wins over both: it said so). First, an
    output-token count above the model's limit (``target.max_output``: MODEL_MAPPING_FILE or
    the backend's model list; else the upstream's MAX_OUTPUT_TOKENS) is lowered to it, before
    the profile renames it or sizes a thinking budget under it (shape.cap_output)."""
    profile = policy.profile
    limit, source = target.max_output, target.max_output_from
    if limit is None:
        limit, source = policy.max_output_tokens, "MAX_OUTPUT_TOKENS"
    if limit is not None and endpoint != EMBEDDINGS_PATH:
        names = OUTPUT_LIMITS
        passed = policy.passthrough.get("num_predict")  # PASSTHROUGH_OPTIONS num_predict=name
        if passed is not None and passed not in names:
            names = (*names, passed)
        cap_output(result.payload, limit, source, names, result.adapted)
    if not profile.plain or target.family is not None:
        shape(result.payload, profile, target.family, result.adapted, result.warnings)
    if policy.extra_body and endpoint != EMBEDDINGS_PATH:  # request fields for generation
        result.payload.update(policy.extra_body)
        result.adapted.append(f"extra_body fields added: {sorted(policy.extra_body)}")
    if target.learned:
        forget(result.payload, endpoint, target.learned, result.adapted, result.warnings)
    return result


def uses_completions(req: GenerateRequest) -> bool:
    """Fill-in-the-middle (``suffix``) and pre-templated (``raw``) prompts need the legacy
    ``/v1/completions`` endpoint: a chat endpoint would wrap them in the model's template again."""
    return bool(req.get("suffix")) or bool(req.get("raw"))


def generate_request(
    req: GenerateRequest, target: Target, policy: Policy, history: Conversation | None = None
) -> UpstreamRequest:
    """``/api/generate`` as a chat completion: a system message, the exchanges of the
    ``context`` the client sent back (``history``, translate/conversation.py) and a user
    message."""
    result = UpstreamRequest(payload={})
    messages: list[dict[str, Any]] = []
    system = req.get("system") or (history.system if history else None)
    if system:
        messages.append({"role": "system", "content": system})
    if history:
        messages.extend(history.messages())
    messages.append(
        {"role": "user", "content": _content(req.get("prompt") or "", req.get("images"), "images")}
    )
    if req.get("template"):
        result.notes.append("generate field 'template' has no OpenAI equivalent; ignored")
    if req.get("raw"):
        result.notes.append(
            "raw mode without /v1/completions: the prompt is sent as a user message"
        )
    _common(req, target, {"messages": messages}, policy, result)
    return for_backend(result, target, policy, CHAT_PATH)


def completion_request(req: GenerateRequest, target: Target, policy: Policy) -> UpstreamRequest:
    """``/api/generate`` with ``suffix`` or ``raw`` as a ``/v1/completions`` request."""
    result = UpstreamRequest(payload={})
    body: dict[str, Any] = {"prompt": req.get("prompt") or ""}
    if req.get("suffix"):
        body["suffix"] = req["suffix"]
    images = req.get("images")
    if images:
        check_images(images, "images")
        result.notes.append("images cannot be sent to /v1/completions; dropped")
    if req.get("context"):
        # Ollama writes the context's text before the rendered fill-in-the-middle prompt; a
        # backend's /v1/completions takes no history, and text before the prefix is not code.
        result.notes.append("generate context is not sent with a suffix (fill-in-the-middle)")
    if req.get("think") is not None:
        result.notes.append("think has no /v1/completions equivalent; ignored")
    _common(req, target, body, policy, result, completions=True)
    return for_backend(result, target, policy, COMPLETIONS_PATH)


_BASE36 = string.digits + string.ascii_lowercase


def synth_id(message: int, call: int) -> str:
    """A tool-call id for a history that has none: 9 letters and digits, which every backend
    takes (Mistral takes nothing else: "must be a-z, A-Z, 0-9, with a length of 9", issue #16),
    and the same for the same position, so a prompt cache sees the same history."""

    def b36(n: int, width: int) -> str:
        digits = ""
        for _ in range(width):
            n, r = divmod(n, 36)
            digits = _BASE36[r] + digits
        return digits

    return "c" + b36(message, 5) + b36(call, 3)
