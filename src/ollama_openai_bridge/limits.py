"""Request limits: how many items a request's arrays may hold, and how many JSON values a body
may have before it is parsed at all.

Parsing costs memory per JSON value, not per byte: the validator builds a tree of the whole
document before it checks a single field, so a 28 MB body of a million empty messages, or 5 MB
of empty image strings, takes hundreds of megabytes however small each item is. Two guards keep
that in proportion to the body:

1. :func:`check_values`, before parsing: a body with more commas than ``REQUEST_MAX_VALUES`` is
   refused (a JSON value beyond the first of each array or object follows a comma, so the commas
   bound the values; commas inside strings count too, which only errs on the safe side). Only
   bodies longer than the limit are scanned -- a shorter one cannot hold that many commas -- so
   ordinary requests pay nothing.
2. The per-field counts (:func:`check_chat`, :func:`check_generate`, :func:`check_openai`),
   after parsing and before anything is built from the arrays: ``len()`` of each array, and one
   loop over the messages (themselves already bounded) for their images and tool calls.

Every refusal is a 400 (:class:`~ollama_openai_bridge.errors.TooMany`) naming the field, the
count, the limit and its setting, in the caller's dialect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import orjson

from ollama_openai_bridge.errors import BadRequest, TooMany

# Bodies with more commas than this have their counts checked on a plain parse first.
PRECHECK_COMMAS = 10_000


class Limits(NamedTuple):
    """The limits in force (settings ``REQUEST_MAX_*`` and ``EMBED_MAX_INPUTS``). Defaults are
    what the most generous real backend accepts, so that only what none of them takes is
    refused (sources in docs/CONFIGURATION.md)."""

    values: int = 500_000
    messages: int = 100_000
    images: int = 3_000
    tools: int = 1_024
    stop: int = 256
    context: int = 262_144
    embed_inputs: int = 2_048


def check_values(body: bytes, limit: int) -> None:
    """Refuse ``body`` (raw JSON) if it has more than ``limit`` commas, before it is parsed.

    Costs nothing for a body of at most ``limit`` bytes (it cannot hold more commas) and one
    C-speed scan otherwise (about 40 ms for 64 MB). Raises BadRequest naming REQUEST_MAX_VALUES.
    """
    if len(body) > limit and body.count(b",") > limit:
        raise BadRequest(
            f"request body too complex: more than {limit} commas, i.e. JSON values or commas in "
            f"its text (at most {limit}, REQUEST_MAX_VALUES)"
        )


def precheck(body: bytes, check: Callable[[Any, Limits], None], limits: Limits) -> None:
    """The counts of ``check`` on a plain parse of ``body`` (orjson, C speed) before the
    validator builds its tree, for a body with more than :data:`PRECHECK_COMMAS` commas: the
    validator takes seconds over half a million empty messages, blocking every other client,
    where this parse takes tens of milliseconds. Raises TooMany; a body the validator will
    refuse anyway (not JSON, wrong types) is left to it."""
    if len(body) <= PRECHECK_COMMAS or body.count(b",") <= PRECHECK_COMMAS:
        return
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if isinstance(data, dict):
        try:
            check(data, limits)
        except (AttributeError, TypeError):  # wrong types: the validator names them
            return


def _check(value: Any, limit: int, field: str, setting: str, param: str | None = None) -> None:
    if isinstance(value, list) and len(value) > limit:
        raise TooMany(field, len(value), limit, setting, param or field)


def _stop(options: Any, limits: Limits) -> None:
    if isinstance(options, Mapping):
        _check(options.get("stop"), limits.stop, "options.stop", "REQUEST_MAX_STOP", "stop")


# Names the field and the param of message i's "images" or "tool_calls" in a refusal.
Where = Callable[[int, str], tuple[str, str]]


def _in_messages(i: int, what: str) -> tuple[str, str]:
    return f"messages.{i}.{what}", "messages" if what == "images" else f"messages[{i}].{what}"


def check_chat(req: Mapping[str, Any], limits: Limits, where: Where = _in_messages) -> None:
    """An Ollama ``/api/chat`` request (validated by ``schemas.CHAT``) against ``limits``:
    messages, tools, stop sequences, images (per message and in all) and each assistant
    message's tool calls (OpenAI allows as many as tools: 128 each). Raises TooMany naming the
    field and param by ``where(i, "images" | "tool_calls")`` for message ``i`` (the
    ``/v1/responses`` route names the input item the message was made from).

    On every chat request: written for the common case (a few messages, no images), which costs
    a dict lookup per message."""
    messages = req.get("messages")
    if messages:
        if len(messages) > limits.messages:
            raise TooMany(
                "messages", len(messages), limits.messages, "REQUEST_MAX_MESSAGES", "messages"
            )
        for msg in messages:
            if msg.get("images") or msg.get("tool_calls"):
                _attachments(messages, limits, where)
                break
    tools = req.get("tools")
    if tools and len(tools) > limits.tools:
        raise TooMany("tools", len(tools), limits.tools, "REQUEST_MAX_TOOLS", "tools")
    options = req.get("options")
    if options:
        _stop(options, limits)


def _attachments(messages: list[Any], limits: Limits, where: Where) -> None:
    """The images of all messages together, and each message's tool calls."""
    images = 0
    for i, msg in enumerate(messages):
        pictures = msg.get("images")
        if pictures:
            images += len(pictures)
            if images > limits.images:
                # The message that crossed the limit is named; the count is the running total.
                name, param = where(i, "images")
                raise TooMany(name, images, limits.images, "REQUEST_MAX_IMAGES", param)
        calls = msg.get("tool_calls")
        if calls and len(calls) > limits.tools:
            name, param = where(i, "tool_calls")
            raise TooMany(name, len(calls), limits.tools, "REQUEST_MAX_TOOLS", param)


def check_generate(req: Mapping[str, Any], limits: Limits) -> None:
    """An Ollama ``/api/generate`` request (``schemas.GENERATE``) against ``limits``: images,
    ``context`` tokens, stop sequences. Raises TooMany."""
    _check(req.get("images"), limits.images, "images", "REQUEST_MAX_IMAGES")
    _check(req.get("context"), limits.context, "context", "REQUEST_MAX_CONTEXT")
    _stop(req.get("options"), limits)


def check_openai(req: Mapping[str, Any], limits: Limits) -> None:
    """A ``/v1/*`` body the proxy decoded (OpenAI's request shapes) against the same limits:
    ``messages``, ``tools``, ``stop``, and an embeddings ``input`` list against
    EMBED_MAX_INPUTS. ``param`` names the field as OpenAI does. Raises TooMany."""
    _check(req.get("messages"), limits.messages, "messages", "REQUEST_MAX_MESSAGES")
    _check(req.get("tools"), limits.tools, "tools", "REQUEST_MAX_TOOLS")
    _check(req.get("stop"), limits.stop, "stop", "REQUEST_MAX_STOP")
    _check(req.get("input"), limits.embed_inputs, "input", "EMBED_MAX_INPUTS")


def check_responses(req: Mapping[str, Any], limits: Limits) -> None:
    """A ``/v1/responses`` body against the same limits as a chat: ``input`` items as messages,
    ``tools`` (a namespace's functions counted too), and the images of all items together.
    ``param`` names the field as OpenAI does. Raises TooMany."""
    items = req.get("input")
    if isinstance(items, list):
        _check(items, limits.messages, "input", "REQUEST_MAX_MESSAGES")
        images = 0
        for i, item in enumerate(items):
            parts = item.get("content") if isinstance(item, Mapping) else None
            if not isinstance(parts, list):
                continue
            images += sum(
                1 for p in parts if isinstance(p, Mapping) and p.get("type") == "input_image"
            )
            if images > limits.images:
                raise TooMany(
                    f"input[{i}].content", images, limits.images, "REQUEST_MAX_IMAGES", "input"
                )
    tools = req.get("tools")
    if isinstance(tools, list):
        count = len(tools) + sum(
            len(t["tools"])
            for t in tools
            if isinstance(t, Mapping) and isinstance(t.get("tools"), list)
        )
        if count > limits.tools:
            raise TooMany("tools", count, limits.tools, "REQUEST_MAX_TOOLS", "tools")


def check_messages(req: Mapping[str, Any], limits: Limits) -> None:
    """An Anthropic ``/v1/messages`` (or count_tokens) body against the same limits, before it
    is translated: ``messages``, ``tools``, ``stop_sequences``. Its images and tool calls are
    counted on the translation (:func:`check_chat`). Raises TooMany."""
    _check(req.get("messages"), limits.messages, "messages", "REQUEST_MAX_MESSAGES")
    _check(req.get("tools"), limits.tools, "tools", "REQUEST_MAX_TOOLS")
    _check(req.get("stop_sequences"), limits.stop, "stop_sequences", "REQUEST_MAX_STOP")
