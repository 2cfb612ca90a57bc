"""Token estimates for what the backend did not count (token budgets, issue #20). Pure.

The rule ``/v1/messages/count_tokens`` answers with (anthropic.estimate_tokens uses these
constants): characters divided by :data:`CHARS_PER_TOKEN`, rounded up, plus
:data:`IMAGE_TOKENS` per image. No backend tokenizer is at hand (OpenAI-compatible APIs have no
counting endpoint); Ollama estimates the same way. Used where a request reached the backend
but its ``usage`` never came: a stream the client left before its last line, a backend that
never reports, a relayed stream whose backend takes no ``stream_options`` -- so that leaving
early costs a key its budget all the same.

- :func:`prompt_tokens`: an OpenAI request body as sent upstream (chat ``messages``,
  completions ``prompt``, embeddings ``input``, and ``tools``): charged when the request is
  admitted, corrected by the backend's count when it reports one.
- :func:`output_chars`: the characters of text, reasoning and tool calls in a completion or one
  stream chunk (``choices[].message``, ``.delta`` or ``.text``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

CHARS_PER_TOKEN = 4  # the rule of thumb Ollama's own estimate uses (anthropic.go)
IMAGE_TOKENS = 1600  # Anthropic's figure for an image at its largest size (vision docs)
# Reasoning fields backends stream besides content (normalise._REASONING reads the same ones):
# the backend counts them as completion tokens.
_REASONING = ("reasoning_content", "reasoning", "thinking")


def tokens(chars: int) -> int:
    """``chars`` characters as tokens: divided by :data:`CHARS_PER_TOKEN`, rounded up."""
    return -(-max(chars, 0) // CHARS_PER_TOKEN)


def prompt_tokens(body: Any) -> int:
    """A rough prompt token count of an OpenAI request body (chat completions, completions or
    embeddings), at least 1: message roles, texts, tool calls and tool definitions by their
    characters, each image as :data:`IMAGE_TOKENS`, token-id arrays by their length. Anything
    else (not an object) counts 1."""
    if not isinstance(body, Mapping):
        return 1
    chars = images = ids = 0
    for msg in _list(body.get("messages")):
        if not isinstance(msg, Mapping):
            continue
        chars += len(str(msg.get("role", "")))
        n, m = _content_chars(msg.get("content"))
        chars, images = chars + n, images + m
        for call in _list(msg.get("tool_calls")):
            chars += _call_chars(call)
    for key in ("prompt", "input"):  # completions, embeddings
        n, m = _text_or_ids(body.get(key))
        chars, ids = chars + n, ids + m
    for tool in _list(body.get("tools")):
        chars += _size(tool)
    return max(tokens(chars) + images * IMAGE_TOKENS + ids, 1)


def output_chars(obj: Any) -> int:
    """The characters an answer produced: content, reasoning and tool calls (names and
    arguments) of every choice's ``message`` (a whole completion) or ``delta`` (a stream
    chunk), or its ``text`` (completions). ``obj`` decoded, or JSON bytes (a relayed answer).
    0 for anything else."""
    if isinstance(obj, bytes):
        try:
            obj = orjson.loads(obj)
        except orjson.JSONDecodeError:
            return 0
    if not isinstance(obj, Mapping):
        return 0
    chars = 0
    for choice in _list(obj.get("choices")):
        if not isinstance(choice, Mapping):
            continue
        text = choice.get("text")
        if isinstance(text, str):
            chars += len(text)
        part = choice.get("delta") or choice.get("message")
        if not isinstance(part, Mapping):
            continue
        chars += _content_chars(part.get("content"))[0]
        for key in _REASONING:
            value = part.get(key)
            if isinstance(value, str):
                chars += len(value)
        for call in _list(part.get("tool_calls")):
            chars += _call_chars(call)
    return chars


def _size(value: Any) -> int:
    """The length of ``value`` as JSON (as ``repr`` when orjson cannot write it)."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return len(repr(value))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _call_chars(call: Any) -> int:
    """A tool call's (or a streamed fragment's) function name and arguments."""
    fn = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(fn, Mapping):
        return 0
    chars = 0
    for key in ("name", "arguments"):
        value = fn.get(key)
        if isinstance(value, str):
            chars += len(value)
        elif value is not None:
            chars += len(str(value))
    return chars


def _content_chars(value: Any) -> tuple[int, int]:
    """``(characters, images)`` of an OpenAI content: a string, or typed parts (``text``,
    ``image_url``, Magistral's ``thinking``)."""
    if isinstance(value, str):
        return len(value), 0
    chars = images = 0
    for part in _list(value):
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in ("image_url", "input_image", "image"):
            images += 1
            continue
        for key in ("text", "thinking"):
            inner = part.get(key)
            if isinstance(inner, str):
                chars += len(inner)
            elif isinstance(inner, list):
                chars += _content_chars(inner)[0]
    return chars, images


def _text_or_ids(value: Any) -> tuple[int, int]:
    """``(characters, token ids)`` of a completions ``prompt`` or an embeddings ``input``: a
    string, a list of strings, a list of token ids, or a list of such lists."""
    if isinstance(value, str):
        return len(value), 0
    chars = ids = 0
    for item in _list(value):
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, int):
            ids += 1
        elif isinstance(item, list):
            ids += sum(1 for x in item if isinstance(x, int))
    return chars, ids
