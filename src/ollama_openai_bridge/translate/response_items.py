"""Chat completions -> OpenAI Responses objects (``POST /v1/responses``, issue #17).

The pieces of a Response (openai-python ``types/responses/response.py``) that the non-streamed
answer (:func:`response_object`) and the stream (``responses_stream.py``) both build, so the two
cannot drift apart: the Response itself (:func:`response`), its output items -- ``reasoning``
(the backend's reasoning as ``summary_text``, as Ollama gives it), ``message`` with one
``output_text`` part, ``function_call`` with ``call_id``, ``name``, ``arguments`` and, for a
namespaced tool, ``namespace`` (or ``custom_tool_call`` with ``input``) -- its status from the
finish reason (:func:`outcome`) and its ``usage`` (:func:`usage_of`). What Codex reads of them
is in tests/agents/README.md: one ``output_item.done`` per item and ``response.completed`` with
``usage``. Backend answers are read with ``normalise.py``, as the Ollama translators read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ollama_openai_bridge.translate.answer import done_reason, first_choice, parse_arguments
from ollama_openai_bridge.translate.normalise import (
    ToolCall,
    content_parts,
    expect,
    reasoning_of,
    tool_calls_of,
)
from ollama_openai_bridge.translate.response_tools import Named
from ollama_openai_bridge.translate.thinktags import split_think

# Finish reasons that end a response "incomplete" (openai-python IncompleteDetails.reason).
_CONTENT_FILTER = frozenset({"content_filter", "SAFETY", "safety"})


@dataclass(frozen=True, slots=True)
class Frame:
    """What every Response of one request repeats: its ``id`` (``resp_<hex>``), ``created_at``
    (Unix seconds), the ``model`` as the client named it, the request settings it ``echo``-es,
    the flat tool ``names`` the backend may call (translate/responses.py), whether the client
    wants ``reasoning`` items, and whether the backend may leave reasoning in its content as
    ``<think>`` tags (``think_tags``, its profile's)."""

    id: str
    created_at: int
    model: str
    echo: Mapping[str, Any] = field(default_factory=dict)
    names: Mapping[str, Named] = field(default_factory=dict)
    reasoning: bool = True
    think_tags: bool = False

    def item_id(self, prefix: str, n: int) -> str:
        """The id of the ``n``-th output item: ``msg_``, ``rs_``, ``fc_``... and the response's
        own hex, so ids are unique per response and the same in its stream and its end."""
        return f"{prefix}_{self.id.removeprefix('resp_')}_{n}"


def response(
    frame: Frame,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Response object: ``status`` in_progress, completed, incomplete or failed."""
    return {
        "id": frame.id,
        "object": "response",
        "created_at": frame.created_at,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "model": frame.model,
        "output": output,
        "usage": usage,
        **frame.echo,
    }


def outcome(finish: str | None) -> tuple[str, dict[str, Any] | None]:
    """A backend's ``finish_reason`` -> the Response's ``status`` and ``incomplete_details``.
    The token limit and a content filter end it ``incomplete`` (OpenAI's reasons
    ``max_output_tokens`` and ``content_filter``); answer.done_reason reads the length words of
    every backend, and raises for an ``error`` finish (issue #16)."""
    if done_reason(finish) == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish in _CONTENT_FILTER:
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _count(usage: Mapping[str, Any], key: str, detail: str | None = None) -> int:
    value = usage.get(key)
    if detail is not None:
        value = value.get(detail) if isinstance(value, dict) else None
    return value if type(value) is int and value > 0 else 0


def usage_of(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Chat ``usage`` -> Responses ``usage`` (input/output/total tokens and their details, all
    integers, as Codex parses them: codex-rs codex-api sse/responses.rs), None without one."""
    if not usage:
        return None
    prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _count(usage, "prompt_tokens_details", "cached_tokens"),
            # required by openai-python's InputTokensDetails; chat usage says nothing of it
            "cache_write_tokens": _count(usage, "prompt_tokens_details", "cache_write_tokens"),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _count(usage, "completion_tokens_details", "reasoning_tokens")
        },
        "total_tokens": _count(usage, "total_tokens") or prompt + completion,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [text_part(text)],
    }


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]}


def call_item(frame: Frame, call: ToolCall, n: int, status: str = "completed") -> dict[str, Any]:
    """One whole tool call as a ``function_call`` item (``custom_tool_call`` for a free-form
    tool), its flat name mapped back to the client's name and namespace. ``arguments`` stay the
    backend's JSON text (``{}`` when empty: clients parse it); a call without an id gets one
    derived from the response's."""
    named = frame.names.get(call.name) or Named(call.name)
    call_id = call.id or frame.item_id("call", n)
    arguments = call.arguments or "{}"
    if named.custom:
        try:
            value = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            value = None
        text = value.get("input") if isinstance(value, dict) else None
        item: dict[str, Any] = {
            "id": frame.item_id("ctc", n),
            "type": "custom_tool_call",
            "status": status,
            "call_id": call_id,
            "name": named.name,
            "input": text if isinstance(text, str) else arguments,
        }
    else:
        item = {
            "id": frame.item_id("fc", n),
            "type": "function_call",
            "status": status,
            "call_id": call_id,
            "name": named.name,
            "arguments": arguments,
        }
    if named.namespace is not None:
        item["namespace"] = named.namespace
    return item


def made(call: ToolCall) -> tuple[ToolCall, Any]:
    """What the tool-call store keeps of a call (carry.py ``answer_keys``): the backend's call,
    and its arguments as an object, as the next request's history will be read."""
    return call, {"function": {"arguments": parse_arguments(call.arguments, [], call.name)}}


def response_object(
    resp: Mapping[str, Any],
    frame: Frame,
    *,
    adapted: list[str],
    kept: list[tuple[ToolCall, Any]] | None = None,
) -> dict[str, Any]:
    """A non-streamed chat completion -> the Response object. Output items in order: the
    reasoning (when the backend reasoned and the client wants it), the message (when there is
    text, or no call: a response always answers), then the calls. ``kept`` gets each call for
    the tool-call store (:func:`made`).

    A field of the wrong type raises TypeError (the caller reads inside ``errors.reading``)."""
    choice = first_choice(resp, frame.model)
    msg = choice.get("message") or {}
    raw = msg.get("content")
    parted = None
    if raw is not None and not isinstance(raw, str):
        raw, parted = content_parts(raw)  # Magistral's typed parts
    text, tagged = raw or "", None
    if frame.think_tags:
        text, tagged = split_think(text)
        if tagged is not None:
            adapted.append("reasoning split out of <think> tags in the content")
    thinking = reasoning_of(msg) or parted or tagged
    status, incomplete = outcome(expect(choice.get("finish_reason"), str))
    calls = tool_calls_of(expect(msg.get("tool_calls"), list))
    output: list[dict[str, Any]] = []
    if thinking and frame.reasoning:
        output.append(reasoning_item(frame.item_id("rs", len(output)), thinking))
    if text or not calls:
        output.append(message_item(frame.item_id("msg", len(output)), text, status))
    for call in calls:
        item = call_item(frame, call, len(output))
        output.append(item)
        if kept is not None:
            kept.append(made(call))
    return response(frame, status, output, usage_of(expect(resp.get("usage"), dict)), incomplete)
