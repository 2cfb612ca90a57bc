"""A chat completion (or a legacy completion) -> Ollama's answers (contract §3, §4.2).

The whole answers of ``/api/chat`` and ``/api/generate`` (:func:`chat_response`,
:func:`generate_response`), and what the streamed direction (``stream.py``) and the other
dialects' translators share with them: :func:`done_reason`, :func:`tool_call_to_ollama`,
:func:`first_choice`. The backend's shapes are read with ``normalise.py``; the requests are
``chat.py``'s.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ollama_openai_bridge.errors import UpstreamStatusError
from ollama_openai_bridge.translate.durations import metrics
from ollama_openai_bridge.translate.ndjson import rfc3339
from ollama_openai_bridge.translate.normalise import (
    ToolCall,
    content_parts,
    expect,
    logprobs_of,
    reasoning_of,
    tool_calls_of,
)
from ollama_openai_bridge.translate.thinktags import split_think
from ollama_openai_bridge.upstream_errors import not_a_completion

# The words backends use for "the token limit ended it" (OpenAI length, Anthropic's compat
# max_tokens, Gemini MAX_TOKENS, vLLM's older model_length); everything else ended normally.
_LENGTH = frozenset({"length", "max_tokens", "MAX_TOKENS", "model_length", "max_output_tokens"})
# An answer ended by an error (OpenRouter's finish_reason "error"): never a complete answer.
# vLLM and SGLang end an aborted request with "abort"; Gemini a call it could not form with
# MALFORMED_FUNCTION_CALL (ai.google.dev FinishReason): neither answer is whole.
ERROR_FINISH = frozenset({"error", "ERROR", "abort", "MALFORMED_FUNCTION_CALL"})


def done_reason(finish_reason: str | None) -> str:
    """A backend's ``finish_reason`` -> Ollama ``done_reason``.

    Ollama only reports ``stop`` and ``length`` for generation; it says ``stop`` after tool calls
    (its own OpenAI layer rewrites stop+tools back to ``tool_calls``, openai.go), and for
    ``content_filter``, ``eos_token`` (TGI), ``end_turn``, ``STOP`` or unknown reasons ``stop`` is
    the honest nearest value. Raises UpstreamStatusError for an ``error`` finish: an answer the
    backend cut by an error must not look complete (issue #16)."""
    if finish_reason in _LENGTH:
        return "length"
    if finish_reason in ERROR_FINISH:
        raise UpstreamStatusError(
            f"upstream ended the answer with finish_reason {finish_reason!r}", 200, 502
        )
    return "stop"


_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_call_id() -> str:
    # Ollama's own format: "call_" + 8 lowercase alphanumerics (routes.go).
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def parse_arguments(
    raw: str | dict[str, Any] | None, notes: list[str], name: str
) -> dict[str, Any]:
    """Backend arguments (a JSON string, or already an object) -> the JSON object Ollama clients
    require.

    ollama-python validates ``arguments`` as a dict and n8n passes it straight to the tool, so a
    non-object never goes out: invalid JSON is kept verbatim under ``"__raw_arguments"``.
    """
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return value
    notes.append(f"tool call {name!r}: arguments are not a JSON object; kept as __raw_arguments")
    return {"__raw_arguments": raw}


def tool_call_to_ollama(call: ToolCall, index: int, notes: list[str]) -> dict[str, Any]:
    """One whole call in Ollama's shape: ``{"id", "function": {"index", "name", "arguments"}}``
    with ``index`` its position in the turn and ``arguments`` an object (contract §3; Ollama's
    own id format when the backend gave none)."""
    return {
        "id": call.id or new_call_id(),
        "function": {
            "index": index,
            "name": call.name,
            "arguments": parse_arguments(call.arguments, notes, call.name),
        },
    }


def _logprobs(choice: Mapping[str, Any], out: dict[str, Any], asked: bool) -> None:
    # Ollama's top-level logprobs, every token of the answer (routes.go collects them)
    lp = choice.get("logprobs") if asked else None
    if lp:
        out["logprobs"] = logprobs_of(lp)


def _tags(content: str, think_tags: bool, adapted: list[str] | None) -> tuple[str, str | None]:
    if not think_tags:
        return content, None
    content, thinking = split_think(content)
    if thinking is not None and adapted is not None:
        adapted.append("reasoning split out of <think> tags in the content")
    return content, thinking


def _thinking(reasoning: str | None, parted: str | None, tagged: str | None) -> str | None:
    # As the stream does (stream.py _delta): a reasoning field and Magistral's thinking parts
    # both count; <think> tags only repeat a reasoning field when there is one.
    if reasoning and parted:
        return reasoning + parted
    return reasoning or parted or tagged


def first_choice(resp: Any, model: str) -> Mapping[str, Any]:
    """The first choice of a whole answer; an answer without choices is the error it carries
    (:func:`~ollama_openai_bridge.upstream_errors.not_a_completion`), or ValueError."""
    if isinstance(resp, list) and resp and isinstance(resp[0], dict) and "error" in resp[0]:
        raise not_a_completion(resp[0], model)  # Gemini's list-wrapped error, even with a 200
    choices = resp.get("choices")
    if not choices and isinstance(resp, dict):
        # An answer that is only an error (a gateway's 200 {"error": ...}): the same error as
        # when it comes instead of a stream (issue #16).
        raise not_a_completion(resp, model)
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("upstream response has no choices")
    return choices[0]


def chat_response(
    resp: Mapping[str, Any],
    model: str,
    *,
    now_ns: int,
    total_ns: int,
    think: bool,
    notes: list[str],
    think_tags: bool = False,
    adapted: list[str] | None = None,
    made: list[tuple[ToolCall, dict[str, Any]]] | None = None,
    load_ns: int = 0,
    logprobs: bool = False,
) -> dict[str, Any]:
    """A non-streaming OpenAI chat completion -> Ollama's non-streaming ``/api/chat`` body.
    ``think_tags``: the backend may leave reasoning in content as ``<think>...</think>``;
    ``made`` gets each tool call with its Ollama shape (what the next turn may need back);
    ``total_ns``/``load_ns``: arrival to now / to the request leaving (``metrics``).

    A field of the wrong type raises TypeError (the caller reads inside ``errors.reading``)."""
    choice = first_choice(resp, model)
    msg = choice.get("message") or {}
    raw = msg.get("content")
    parted = None
    if raw is not None and not isinstance(raw, str):
        raw, parted = content_parts(raw)
    content, tagged = _tags(raw or "", think_tags, adapted)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    thinking = _thinking(reasoning_of(msg), parted, tagged) if think else None
    if thinking:
        message["thinking"] = thinking
    calls = expect(msg.get("tool_calls"), list)
    if calls:
        out_calls = message["tool_calls"] = []
        for i, call in enumerate(tool_calls_of(calls)):
            ollama = tool_call_to_ollama(call, i, notes)
            out_calls.append(ollama)
            if made is not None:
                made.append((call, ollama))
    out: dict[str, Any] = {
        "model": model,
        "created_at": rfc3339(now_ns),
        "message": message,
        "done": True,
        "done_reason": done_reason(expect(choice.get("finish_reason"), str)),
    }
    _logprobs(choice, out, logprobs)
    # Without streaming there is no first-token time: the backend's whole time is eval time.
    usage = expect(resp.get("usage"), dict)
    out.update(metrics(usage, total_ns, 0, total_ns - load_ns, load_ns))
    return out


def generate_response(
    resp: Mapping[str, Any],
    model: str,
    *,
    now_ns: int,
    total_ns: int,
    think: bool,
    think_tags: bool = False,
    adapted: list[str] | None = None,
    load_ns: int = 0,
    context_of: Callable[[str], list[int]] | None = None,
    logprobs: bool = False,
) -> dict[str, Any]:
    """A non-streaming OpenAI chat completion -> Ollama's non-streaming ``/api/generate`` body.
    Durations as :func:`chat_response`'s; ``context_of(answer)``: the ``context`` to return
    (not for ``raw``, as Ollama).

    A field of the wrong type raises TypeError (the caller reads inside ``errors.reading``)."""
    choice = first_choice(resp, model)
    # /v1/completions answers choices[].text; chat answers choices[].message
    msg = choice.get("message") or {"content": choice.get("text")}
    raw = msg.get("content")
    parted = None
    if raw is not None and not isinstance(raw, str):
        raw, parted = content_parts(raw)
    response, tagged = _tags(raw or "", think_tags, adapted)
    out: dict[str, Any] = {
        "model": model,
        "created_at": rfc3339(now_ns),
        "response": response,
    }
    thinking = _thinking(reasoning_of(msg), parted, tagged) if think else None
    if thinking:
        out["thinking"] = thinking
    out["done"] = True
    out["done_reason"] = done_reason(expect(choice.get("finish_reason"), str))
    if context_of is not None:
        out["context"] = context_of(response)
    _logprobs(choice, out, logprobs)
    usage = expect(resp.get("usage"), dict)
    out.update(metrics(usage, total_ns, 0, total_ns - load_ns, load_ns))
    return out
