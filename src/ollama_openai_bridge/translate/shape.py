"""The reference request -> the request one backend accepts (its :class:`BackendProfile`).

Pure: a payload built by the translators goes in, the same dict comes out reshaped, with what was
done written to two lists: ``adapted`` (for the DEBUG log: every adaptation is visible there)
and ``warnings``, ``(key, message)`` pairs for what the client asked for and will not get (a
parameter the backend refuses, a format it ignores); keys come from a small fixed set (parameter
and profile names), so a caller can warn once per key.
Reasoning parameters are written by translate/think.py, from the same profile.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping
from typing import Any

from ollama_openai_bridge.profiles import BackendProfile, Family, reasoning_on

# Added when a backend requires the word "json" in the messages for json_object (OpenAI:
# "'messages' must contain the word 'json' in some form"). Ollama has no such rule, so its
# clients' requests must not depend on one.
JSON_INSTRUCTION = "Respond in JSON."
MIN_THINKING_BUDGET = 1024
# Fields whose loss the client does not notice: the proxy adds stream_options itself, and
# computes an embedding's dimensions where the backend cannot (translate/embed.py).
_OWN = frozenset({"stream_options", "dimensions"})


def shape(
    payload: dict[str, Any],
    profile: BackendProfile,
    family: Family | None,
    adapted: list[str],
    warnings: list[tuple[str, str]],
) -> dict[str, Any]:
    """Reshape ``payload`` (an OpenAI chat or completions body) in place for ``profile`` and the
    model's ``family``; returns it. Renames (``max_tokens`` -> ``max_completion_tokens``,
    ``seed`` -> ``random_seed``), drops what the backend refuses or does not list, removes
    ``stream_options`` where it is refused, and asks for JSON the way the backend accepts."""
    chat = "messages" in payload
    # Renames are a chat body's (a legacy completion keeps max_tokens: OpenAI's /completions has
    # no max_completion_tokens) or an embedding body's own.
    if chat:
        renames = profile.renames
        if family is not None and family.renames:
            renames = {**renames, **family.renames}
    else:
        renames = profile.embed_renames if "input" in payload else {}
    refuses = profile.refuses
    if (
        family is not None
        and family.refuses
        and not (family.refuses_while_reasoning and not reasoning_on(payload))
    ):
        refuses = refuses | family.refuses
    for old, new in renames.items():
        if old in payload:
            payload[new] = payload.pop(old)
            adapted.append(f"{old} sent as {new}")
    if not profile.stream_usage and "stream_options" in payload:
        del payload["stream_options"]
        adapted.append("stream_options not sent (the backend refuses it or ignores it)")
    accepts = profile.accepts if chat else None
    for name in [k for k in payload if k in refuses or (accepts is not None and k not in accepts)]:
        del payload[name]
        note = f"{name} not sent: the {profile.name} backend profile refuses it for this model"
        adapted.append(note)
        if name not in _OWN:
            warnings.append((f"{name} ({profile.name})", note))
    fmt = payload.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_object":
            _json_object(payload, profile, adapted, warnings)
        elif fmt.get("type") == "json_schema" and profile.tgi_grammar:
            schema = (fmt.get("json_schema") or {}).get("schema")
            payload["response_format"] = {"type": "json", "value": schema}
            adapted.append("format schema sent as TGI's grammar {type: json, value}")
    if profile.top_p_below_one and payload.get("top_p", 0) >= 1:
        del payload["top_p"]  # 1 filters nothing: the same as not sending it
        adapted.append("top_p 1 not sent (the backend takes only values below 1)")
    cap = profile.max_tokens_unstreamed
    if cap is not None and not payload.get("stream"):
        for name in ("max_tokens", "max_completion_tokens"):
            if isinstance(payload.get(name), int) and payload[name] > cap:
                note = f"{name} {payload[name]} lowered to {cap}: the most without streaming here"
                payload[name] = cap
                adapted.append(note)
                warnings.append((f"{name} (unstreamed, {profile.name})", note))
    if chat and profile.nine_char_call_ids:
        _nine_char_ids(payload["messages"], adapted)
    thinking = payload.get("thinking")
    if isinstance(thinking, dict) and "budget_tokens" in thinking:
        _thinking_budget(payload, thinking, adapted, warnings)
        # "Thinking isn't compatible with temperature ... modifications" (docs.anthropic.com,
        # extended thinking): only the default, 1, is accepted with it.
        if payload.get("temperature", 1) != 1 and "thinking" in payload:
            del payload["temperature"]
            note = "temperature not sent: Anthropic takes only 1 with extended thinking"
            adapted.append(note)
            warnings.append((f"temperature ({profile.name}, thinking)", note))
    return payload


# Where a request's output-token limit is before shape() renames it: the reference max_tokens,
# or max_completion_tokens when an operator forwards num_predict under that name.
OUTPUT_LIMITS: tuple[str, ...] = ("max_tokens", "max_completion_tokens")


def cap_output(
    payload: dict[str, Any],
    limit: int,
    source: str,
    names: tuple[str, ...],
    adapted: list[str],
) -> None:
    """Lower each of ``names`` in ``payload`` (an output-token count) to ``limit``, the most the
    model allows, said by ``source``. Clients ask for more than backends allow (Claude Code
    sends max_tokens 32000; OpenAI answers 400 "max_tokens is too large ... supports at most
    16384 completion tokens", Groq and DeepSeek likewise): the model could not write more than
    the limit anyway, so the request is lowered rather than refused. What is lowered is in the
    DEBUG log."""
    for name in names:
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            payload[name] = limit
            adapted.append(f"{name} {value} lowered to {limit}: output limit from {source}")


def forget(
    payload: dict[str, Any],
    endpoint: str,
    learned: Mapping[tuple[str, bool], Mapping[str, tuple[str | None, float]]],
    adapted: list[str],
    warnings: list[tuple[str, str]],
) -> None:
    """What this backend refused for this model at ``endpoint`` before, with reasoning on or
    off as this body asks (exchange.adapt), applied to the final body -- after the operator's
    extra_body, which may be what it refused: name -> the name it wants, or None to leave the
    parameter out."""
    refused = learned.get((endpoint, reasoning_on(payload)))
    if not refused:
        return
    for name, (instead, _) in refused.items():
        if name not in payload:
            continue
        value = payload.pop(name)
        if instead is not None:
            payload[instead] = value
            adapted.append(f"{name} sent as {instead} (the backend asked for it before)")
        else:
            note = f"{name} not sent: the backend refused it for this model before"
            adapted.append(note)
            if name not in _OWN:
                warnings.append((f"{name} (refused)", note))


def _thinking_budget(
    payload: dict[str, Any],
    thinking: dict[str, Any],
    adapted: list[str],
    warnings: list[tuple[str, str]],
) -> None:
    # Anthropic: budget_tokens must be at least 1,024 and below max_tokens (docs.anthropic.com,
    # extended thinking). A client's small num_predict wins over the effort's budget.
    limit = payload.get("max_tokens") or payload.get("max_completion_tokens")
    if not isinstance(limit, int) or limit > thinking["budget_tokens"]:
        return
    if limit > MIN_THINKING_BUDGET:
        payload["thinking"] = {**thinking, "budget_tokens": limit - 1}
        adapted.append(f"thinking budget_tokens lowered to {limit - 1}, under max_tokens")
        return
    del payload["thinking"]
    note = f"think not sent: max_tokens {limit} leaves no room for a thinking budget (min 1024)"
    adapted.append(note)
    warnings.append(("thinking (max_tokens)", note))


def _json_object(
    payload: dict[str, Any],
    profile: BackendProfile,
    adapted: list[str],
    warnings: list[tuple[str, str]],
) -> None:
    mode = profile.json_object
    if mode == "schema":
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": {"type": "object"}},
        }
        adapted.append("format json sent as json_schema {type: object}")
    elif mode == "needs_word":
        _add_instruction(payload, adapted)
    elif mode == "instruction":
        del payload["response_format"]
        _add_instruction(payload, adapted)
        note = f"format json asked by instruction only: {profile.name} has no schema-free mode"
        adapted.append(note)
        warnings.append((f"response_format ({profile.name})", note))
    elif mode == "ignored":
        note = f"format json sent, but the {profile.name} backend ignores response_format"
        adapted.append(note)
        warnings.append((f"response_format ({profile.name})", note))


_NINE = re.compile(r"[A-Za-z0-9]{9}")
_BASE62 = string.digits + string.ascii_letters


def nine_chars(call_id: str) -> str:
    """A tool-call id as 9 letters and digits, the same for the same id (so a call and its
    result still pair), for backends that take no other (Mistral)."""
    if _NINE.fullmatch(call_id):
        return call_id
    n = int.from_bytes(hashlib.blake2b(call_id.encode(), digest_size=8).digest(), "big")
    out = ""
    for _ in range(9):
        n, r = divmod(n, 62)
        out += _BASE62[r]
    return out


def _nine_char_ids(messages: Any, adapted: list[str]) -> None:
    if not isinstance(messages, list):
        return
    changed = False
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    short = nine_chars(call["id"])
                    changed |= short != call["id"]
                    call["id"] = short
        if isinstance(msg.get("tool_call_id"), str):
            short = nine_chars(msg["tool_call_id"])
            changed |= short != msg["tool_call_id"]
            msg["tool_call_id"] = short
    if changed:
        adapted.append("tool-call ids sent as 9 letters and digits")


def _add_instruction(payload: dict[str, Any], adapted: list[str]) -> None:
    """:data:`JSON_INSTRUCTION` in the system message, unless a message mentions JSON."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or any(_mentions_json(m) for m in messages):
        return
    first = messages[0] if messages else None
    if (
        isinstance(first, dict)
        and first.get("role") == "system"
        and isinstance(first.get("content"), str)
    ):
        # One system message, not two: strict chat templates refuse a second.
        messages[0] = {**first, "content": f"{first['content']}\n\n{JSON_INSTRUCTION}"}
    else:
        messages.insert(0, {"role": "system", "content": JSON_INSTRUCTION})
    adapted.append(f"{JSON_INSTRUCTION!r} added to the system message for JSON output")


def _mentions_json(message: Any) -> bool:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return "json" in content.lower()
    if isinstance(content, list):
        return any(
            isinstance(part, dict)
            and isinstance(part.get("text"), str)
            and "json" in part["text"].lower()
            for part in content
        )
    return False
