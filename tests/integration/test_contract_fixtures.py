"""Golden test: every fixture of the shared Ollama wire contract, sent through the real app.

The fixture files are found by a glob at collection time, so a fixture added to
``tests/fixtures/contract/`` is driven without touching this module. Each file is recognised by
its shape (the keys it carries, see ``plan``) and turned into one or more cases; a file with a
shape this module does not know how to drive becomes a case that FAILS with the reason (never a
skip), and so does an unknown key in a known shape: a new field may change what the fixture means.

The shapes, and how each is driven:

* exchange (``request`` + ``response``): an Ollama request and real Ollama's answer. The backend
  is made to answer what that answer implies (the inverse of the mapping in contract §4.2: text
  -> ``delta.content``, thinking -> ``reasoning_content``, tool calls -> SSE fragments, counts ->
  ``usage``, ``done_reason`` -> ``finish_reason``), the request goes to the app, and the answer is
  compared field by field. What the backend received is checked against the mapping rules of
  contract §4.1, §4.3, §4.4, §4.8 (``expected_upstream_chat``).
* raw cases (``cases`` of ``request_raw``): bodies sent byte for byte.
* mapping (``ollama_request`` + ``expected_openai_request``): written for a proxy. The backend
  answers the fixture's ``openai_response`` / ``openai_stream`` verbatim; both the request the
  backend recorded and the app's answer are compared with the fixture.
* error mapping (``cases`` of ``openai_status`` / ``openai_event``): backend failures.
* client wire (``client`` + ``headers`` + ``request``): what real clients send; the backend must
  receive a valid translation, the answer must meet ``expected_response_requirements`` and the
  streaming rules of contract §5.7.
* conversation (``first_request``/``first_response``, ``second_request``...): as exchanges, in order.

Field rules (``rule``): every field is compared exactly unless it is inherently variable for a
proxy; each exception is written down, with its reason, in ``rule`` and ``optional``. Where
the contract itself lets a proxy answer otherwise than Ollama, exactly that alternative is
accepted too: 400/405/501 "not supported" for model management (§4.6,
``unsupported_alternative``), a shorter pull progress stream (§4.6, ``check_progress``), 502 for
a backend 5xx (§4.9, ``mapping_error``).

The app runs in-process (``httpx.ASGITransport``, lifespan entered with
``app.router.lifespan_context``), against the strict ``FakeUpstream`` on a loopback port, or
against ``Canned`` (below) for what the fake cannot be told to answer.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import struct
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from ollama_openai_bridge.app import create_app
from tests.conftest import FIXTURES
from tests.fake_upstream import FakeUpstream, Script
from tests.servers import settings_for

UPSTREAM_KEY = "sk-test-upstream"  # what settings_for() gives the app for the backend
Errors = list[str]


class UnknownShape(Exception):
    """The fixture has a shape this module cannot drive: the case fails with this message."""


Driver = Callable[[FakeUpstream], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Case:
    id: str
    fixture: str  # file name
    run: Driver


# --- field rules ------------------------------------------------------------------------------

DURATIONS = frozenset({"total_duration", "load_duration", "prompt_eval_duration", "eval_duration"})
CAPABILITIES = frozenset(
    {"completion", "tools", "insert", "vision", "embedding", "thinking", "image", "audio"}
)
# Texts produced by Go's encoding/json inside Ollama; a Python proxy cannot reproduce them, and
# chat_bad_json.json says so ("exact text is informational; shape and status matter").
GO_DECODER_TEXT = ("unexpected EOF", "invalid character", "json: cannot unmarshal")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
DIGEST = re.compile(r"^[0-9a-f]{64}$")
VERSION = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$")


@dataclass(frozen=True)
class View:
    """How one expected answer is read: which endpoint produced it, and whether the fixture was
    written for a proxy (``mapping_*``: only clock-derived fields vary) or captured from Ollama
    (model-file and runtime facts vary as well)."""

    endpoint: str
    mapping: bool = False


def _names(path: Sequence[str | int]) -> list[str]:
    return [p for p in path if isinstance(p, str)]


def rule(view: View, path: Sequence[str | int], expected: Any) -> str:
    """How the field at ``path`` is compared. ``exact`` unless written otherwise here."""
    names = _names(path)
    key = path[-1] if path and isinstance(path[-1], str) else None
    if key == "created_at":
        # The proxy stamps its own clock on every answer (contract §4.2: created_at = now).
        return "time"
    if key in DURATIONS:
        # Measured wall time (§4.2 "Durations ... when the backend gives none"), so the value
        # varies; the type must be Ollama's (integer nanoseconds, §1.4) and never 0 (omitempty).
        return "duration"
    if view.mapping:
        return "exact"  # everything else a proxy fixture shows follows from the backend's answer
    if key in ("modified_at", "expires_at"):
        # A model file's mtime / the runner's unload time on the machine that recorded the
        # fixture; an OpenAI backend publishes neither (§4.5, §4.6 synthesise them).
        return "time"
    if key == "error" and isinstance(expected, str):
        if (path and isinstance(path[0], int)) or expected.startswith(GO_DECODER_TEXT):
            # An error line inside a stream carries the model runner's text (a crash in
            # llama.cpp), and decoder errors Go's wording: neither exists in a proxy. The line
            # must still be {"error": "<non-empty string>"} (§3.5).
            return "text"
        return "exact"  # Ollama's own wording ("model is required", ...), which clients show
    ep = view.endpoint
    if ep == "/api/version" and key == "version":
        # The build's version string, a deployment setting here (OLLAMA_VERSION); the contract
        # only requires dotted integers with an optional suffix (§2.2, Open WebUI parses it).
        return "version"
    if ep == "/api/embed" and names == ["embeddings"]:
        # The fixture's vectors are 10-value excerpts of 768-dimensional ones, so they are not
        # unit length although Ollama L2-normalises (§2.8). The backend answers the excerpt;
        # the proxy must answer the same direction, normalised.
        return "unit_vectors"
    if ep in ("/api/tags", "/api/ps") and names[:1] == ["models"]:
        if key in ("size", "size_vram", "context_length"):
            # Bytes of the model file / of VRAM, and the runner's allocated num_ctx: facts of
            # a local llama.cpp runner; a backend's /v1/models has none (§4.5: size 0).
            return "shape"
        if key == "digest":
            return "digest"  # the blob's sha256; the proxy has no blob (§4.5: sha256 of the id)
        if key == "capabilities":
            return "capabilities"  # "newer servers only" (§2.3); optional for a proxy (§4.5)
        if "details" in names:
            if key == "families":
                return "nullable_strings"  # "array or null" (§2.3); §4.5 gives null
            if key in ("family", "parameter_size", "quantization_level"):
                return "shape"  # read from the GGUF file; §4.5 leaves them empty for a proxy
    if ep == "/api/show":
        if key == "capabilities":
            # What the proxy can do with the model on its backend (§4.6 synthesises them):
            # `insert` follows the backend's /v1/completions, which Ollama's llama3.2 lacks.
            return "capabilities"
        if key == "license":
            return "optional_shape"  # model-file text, omitempty (§2.4)
        if key in ("modelfile", "parameters", "template"):
            return "shape"  # generated from the model file: a proxy synthesises its own (§4.6)
        if names[:1] == ["details"] and key in ("parameter_size", "quantization_level"):
            return "shape"  # GGUF facts an OpenAI backend does not publish
        if names[:1] == ["model_info"] and len(names) == 2:
            if key == "general.architecture" or (key or "").endswith(".context_length"):
                return "exact"  # §4.6 requires these two; clients size prompts from them
            if key == "general.basename":
                return "shape"  # required (§4.6), but the GGUF's display name is file metadata
            return "optional_shape"  # tensor counts, tokenizer data...: file metadata
    return "exact"


def optional(view: View, path: Sequence[str | int], kind: str) -> bool:
    """May the field be absent from the app's answer although the fixture shows it?"""
    if kind in ("optional_shape", "capabilities"):
        return True
    # Ollama omits zero durations (omitempty, §1.5). A proxy has no load phase (§4.2: "omit if
    # 0"), and the split of the total between prompt and eval time needs a first-token time
    # that a non-streaming call, or a stream that arrives in one read, does not have. The total
    # is always measurable, so it is required.
    return kind == "duration" and path[-1] != "total_duration"


def extra_allowed(
    view: View, path: Sequence[str | int], key: str, expected: dict[str, Any]
) -> bool:
    """May the app's answer carry ``key`` although the fixture does not show it?"""
    if key in DURATIONS and DURATIONS & expected.keys():
        return True  # a metrics object: which durations are non-zero varies (see ``optional``)
    names = _names(path)
    if view.endpoint == "/api/generate" and key == "context" and not names:
        # The fixtures were recorded as "context omitted (proxy cannot produce token ids)";
        # issue #17 returns it as Ollama does, on the final answer (its own tests:
        # tests/unit/translate/test_conversation.py, test_ollama_features.py).
        return expected.get("done") is True
    if view.endpoint == "/api/tags" and names[:1] == ["models"]:
        # Ollama 0.30.0 added these to each entry (api/types.go ListModelResponse,
        # ModelDetails), after the fixtures were recorded: optional in §2.3, and §4.5 lets a
        # proxy add capabilities. Their values are checked by tests/unit/translate/test_models.
        if names == ["models"] and key == "capabilities":
            return True
        if names == ["models", "details"] and key in ("context_length", "embedding_length"):
            return True
    # model_info is an open map of GGUF keys (§2.4)
    return not view.mapping and view.endpoint == "/api/show" and _names(path) == ["model_info"]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def same_scalar(actual: Any, expected: Any) -> bool:
    """Equal JSON scalars: true is not 1, but 1 and 1.0 are the same JSON number."""
    kinds = {_json_type(actual), _json_type(expected)}
    return actual == expected and (len(kinds) == 1 or kinds == {"integer", "number"})


def _where(path: Sequence[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) or "(body)"


def _check_kind(kind: str, actual: Any, expected: Any, where: str, errs: Errors) -> None:
    def bad(why: str) -> None:
        errs.append(f"{where}: {why}; got {actual!r}, fixture has {expected!r}")

    if kind == "time":
        if not (isinstance(actual, str) and RFC3339.match(actual)):
            bad("not an RFC 3339 timestamp")
    elif kind == "duration":
        if _json_type(actual) != "integer" or actual <= 0:
            bad("not a positive integer of nanoseconds")
    elif kind in ("shape", "optional_shape"):
        if _json_type(actual) != _json_type(expected):
            bad(f"not of JSON type {_json_type(expected)}")
    elif kind == "digest":
        if not (isinstance(actual, str) and DIGEST.match(actual)):
            bad("not 64 lowercase hex digits without a sha256: prefix")
    elif kind == "capabilities":
        if not (isinstance(actual, list) and all(c in CAPABILITIES for c in actual)):
            bad(f"not a list of {sorted(CAPABILITIES)}")
    elif kind == "nullable_strings":
        if actual is not None and not (
            isinstance(actual, list) and all(isinstance(x, str) for x in actual)
        ):
            bad("neither null nor a list of strings")
    elif kind == "version":
        if not (isinstance(actual, str) and VERSION.match(actual)):
            bad("not a dotted numeric version")
    elif kind == "text":
        if not (isinstance(actual, str) and actual):
            bad("not a non-empty string")
    elif kind == "unit_vectors":
        _check_unit_vectors(actual, expected, where, errs)
    else:  # pragma: no cover - a typo in ``rule``
        raise AssertionError(f"unknown rule {kind}")


def _check_unit_vectors(actual: Any, expected: Any, where: str, errs: Errors) -> None:
    if not (isinstance(actual, list) and len(actual) == len(expected)):
        errs.append(f"{where}: expected {len(expected)} vectors, got {actual!r}")
        return
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        if not (isinstance(a, list) and len(a) == len(e)):
            errs.append(f"{where}[{i}]: expected {len(e)} numbers, got {a!r}")
            continue
        norm_a, norm_e = math.hypot(*a), math.hypot(*e)
        cosine = sum(x * y for x, y in zip(a, e, strict=True)) / (norm_a * norm_e or 1.0)
        if abs(norm_a - 1.0) > 1e-6 or abs(cosine - 1.0) > 1e-9:
            errs.append(
                f"{where}[{i}]: not the fixture's vector L2-normalised (norm {norm_a}, "
                f"cosine {cosine}); got {a!r}"
            )


def compare(
    actual: Any, expected: Any, view: View, errs: Errors, path: tuple[str | int, ...] = ()
) -> None:
    """Field by field, both ways: missing fields, extra fields and different values all count."""
    kind = rule(view, path, expected) if path else "exact"
    where = _where(path)
    if kind != "exact":
        _check_kind(kind, actual, expected, where, errs)
        return
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            errs.append(f"{where}: expected an object {expected!r}, got {actual!r}")
            return
        for key, value in expected.items():
            sub = (*path, key)
            if key in actual:
                compare(actual[key], value, view, errs, sub)
            elif not optional(view, sub, rule(view, sub, value)):
                errs.append(f"{_where(sub)}: missing (fixture has {value!r})")
        for key in actual.keys() - expected.keys():
            if not extra_allowed(view, path, key, expected):
                errs.append(f"{_where((*path, key))}: not in the fixture; got {actual[key]!r}")
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            errs.append(f"{where}: expected {expected!r}, got {actual!r}")
            return
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            compare(a, e, view, errs, (*path, i))
    elif not same_scalar(actual, expected):
        errs.append(f"{where}: expected {expected!r}, got {actual!r}")


# --- expectations for requests the backend receives -------------------------------------------


@dataclass(frozen=True)
class SynthId:
    """An id the proxy invents (implementation-defined, §4.1 and the mapping fixture's notes):
    any string, but the same one wherever the same marker appears, and distinct per marker."""

    key: str


@dataclass(frozen=True)
class JsonText:
    """A JSON document carried in a string (OpenAI tool-call arguments). Compared decoded:
    whitespace and key order inside the string carry no meaning."""

    value: Any


@dataclass(frozen=True)
class Either:
    """Any one of these values (where the contract names alternatives)."""

    options: tuple[Any, ...]


def match(
    actual: Any, expected: Any, errs: Errors, ids: dict[str, str], path: tuple[str | int, ...] = ()
) -> None:
    """Exact comparison of a request body, with the markers above."""
    where = _where(path)
    if isinstance(expected, SynthId):
        if not isinstance(actual, str) or not actual:
            errs.append(f"{where}: expected a synthesised id, got {actual!r}")
        elif ids.setdefault(expected.key, actual) != actual:
            errs.append(f"{where}: id {actual!r} should be {ids[expected.key]!r} (same call)")
        elif list(ids.values()).count(actual) > 1:
            errs.append(f"{where}: id {actual!r} is used for two different calls")
    elif isinstance(expected, JsonText):
        try:
            decoded = json.loads(actual) if isinstance(actual, str) else actual
        except ValueError:
            decoded = actual
        if not isinstance(actual, str) or decoded != expected.value:
            errs.append(f"{where}: expected a JSON string of {expected.value!r}, got {actual!r}")
    elif isinstance(expected, Either):
        for option in expected.options:
            trial: Errors = []
            match(actual, option, trial, dict(ids), path)
            if not trial:
                match(actual, option, errs, ids, path)  # bind the ids of the matching option
                return
        errs.append(f"{where}: expected one of {expected.options!r}, got {actual!r}")
    elif isinstance(expected, dict):
        if not isinstance(actual, dict):
            errs.append(f"{where}: expected {expected!r}, got {actual!r}")
            return
        for key in expected.keys() | actual.keys():
            if key not in actual:
                errs.append(f"{_where((*path, key))}: missing (expected {expected[key]!r})")
            elif key not in expected:
                errs.append(f"{_where((*path, key))}: not expected; got {actual[key]!r}")
            else:
                match(actual[key], expected[key], errs, ids, (*path, key))
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            errs.append(f"{where}: expected {expected!r}, got {actual!r}")
            return
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            match(a, e, errs, ids, (*path, i))
    elif not same_scalar(actual, expected):
        errs.append(f"{where}: expected {expected!r}, got {actual!r}")


_SIGNATURES = (  # §4.1: MIME type sniffed from the base64 of the magic bytes
    ("iVBORw0KGgo", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
)


def data_url(b64: str) -> str:
    mime = next((m for prefix, m in _SIGNATURES if b64.startswith(prefix)), "image/jpeg")
    return f"data:{mime};base64,{b64}"


def _user_content(text: str, images: list[str] | None) -> Any:
    if not images:
        return text
    # §4.1: a text part, then one image_url part per image. With no text at all (the image-only
    # user turns of @langchain/ollama, §5.4.7) the text part may be left out.
    parts = [{"type": "image_url", "image_url": {"url": data_url(img)}} for img in images]
    with_text = [{"type": "text", "text": text}, *parts]
    return with_text if text else Either((parts, with_text))


def expected_chat_messages(messages: list[dict[str, Any]]) -> list[Any]:
    """The OpenAI messages an Ollama history must become (§4.1)."""
    out: list[Any] = []
    pending: list[tuple[Any, str]] = []  # unanswered (id, name) of the last assistant turn
    for i, m in enumerate(messages):
        role = m["role"].lower()
        content = m.get("content") or ""
        if role == "tool":
            # tool_call_id if present, else the earliest unanswered call of that tool_name,
            # else the next unanswered call in order.
            cid, name = m.get("tool_call_id"), m.get("tool_name")
            found = next((c for c in pending if cid and c[0] == cid), None)
            found = found or next((c for c in pending if name and c[1] == name), None)
            found = found or (pending[0] if pending and not cid else None)
            if found is None:
                raise UnknownShape(f"messages[{i}]: a tool result the contract pairs with nothing")
            pending.remove(found)
            out.append({"role": "tool", "tool_call_id": found[0], "content": content})
            continue
        if pending:
            raise UnknownShape(f"messages[{i}]: tool calls without results before it")
        msg: dict[str, Any] = {"role": role, "content": _user_content(content, m.get("images"))}
        calls = m.get("tool_calls") if role == "assistant" else None
        if calls:
            msg["content"] = content or Either((None, ""))  # "null or ''"
            msg["tool_calls"] = []
            for j, tc in enumerate(calls):
                fn = tc["function"]
                call_id: Any = tc.get("id") or SynthId(f"{i}.{j}")
                args = fn.get("arguments")
                msg["tool_calls"].append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": fn["name"],
                            "arguments": args if isinstance(args, str) else JsonText(args or {}),
                        },
                    }
                )
                pending.append((call_id, fn["name"]))
        out.append(msg)
    if pending:
        raise UnknownShape("the history ends with tool calls that have no results")
    return out


def expected_upstream_params(req: dict[str, Any], model: str) -> dict[str, Any]:
    """The OpenAI parameters of a chat/generate request, besides messages and think (§4.1, §4.8)."""
    stream = req.get("stream") is not False  # absent => true (§4.1)
    out: dict[str, Any] = {"model": model, "stream": stream}
    if stream:
        out["stream_options"] = {"include_usage": True}
    opts = req.get("options") or {}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if opts.get(name) is not None:
            out[name] = opts[name]
    if isinstance(opts.get("seed"), int) and opts["seed"] >= 0:
        out["seed"] = opts["seed"]
    if isinstance(opts.get("num_predict"), int) and opts["num_predict"] > 0:
        out["max_tokens"] = opts["num_predict"]
    stop = opts.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stops:
        out["stop"] = stops[:4]
    if req.get("tools"):  # omitted when empty (§4.1)
        out["tools"] = req["tools"]
    if req.get("logprobs"):
        out["logprobs"] = True
        if req.get("top_logprobs"):
            out["top_logprobs"] = req["top_logprobs"]
    # Everything else (keep_alive, think, format, num_ctx, top_k, mirostat, ...) has no
    # OpenAI parameter or is checked by the caller: it must not appear.
    return out


def _effort(think: Any) -> str | None:
    if think is None or think is False:
        return None
    return "medium" if think is True else ("high" if think == "max" else str(think))


def expected_upstream_chat(
    sent: dict[str, Any], req: dict[str, Any], endpoint: str, model: str, errs: Errors
) -> None:
    """Check what the backend received for an Ollama chat/generate request (§4.1, §4.3)."""
    body = dict(sent)
    fmt = req.get("format")
    rf = body.pop("response_format", None)
    if fmt == "json":
        match(rf, {"type": "json_object"}, errs, {}, ("response_format",))
    elif isinstance(fmt, dict):
        # §4.1: json_schema with a name (OpenAI requires one) and the schema; "strict" optional
        js = (rf or {}).get("json_schema") if isinstance(rf, dict) else None
        if not (
            isinstance(rf, dict)
            and rf.get("type") == "json_schema"
            and isinstance(js, dict)
            and isinstance(js.get("name"), str)
            and js["name"]
            and js.get("schema") == fmt
            and set(js) <= {"name", "schema", "strict"}
        ):
            errs.append(f".response_format: expected a named json_schema of {fmt!r}, got {rf!r}")
    elif rf is not None:
        errs.append(f".response_format: not expected; got {rf!r}")
    effort = body.pop("reasoning_effort", None)
    # think -> reasoning_effort (§4.1), sent only to models the proxy knows can think: a model
    # not known to think may get none ("warn when unsupported").
    if effort is not None and effort != _effort(req.get("think")):
        errs.append(
            f".reasoning_effort: expected {_effort(req.get('think'))!r} or none, got {effort!r}"
        )
    messages = body.pop("messages", None)
    match(body, expected_upstream_params(req, model), errs, {})
    if endpoint == "/api/chat":
        expected = expected_chat_messages(req.get("messages") or [])
    else:  # /api/generate as chat: [system], user(prompt + images) (§4.3)
        expected = [{"role": "system", "content": req["system"]}] if req.get("system") else []
        expected.append(
            {"role": "user", "content": _user_content(req.get("prompt") or "", req.get("images"))}
        )
    # Optional extras the contract allows: "name" on tool results, "reasoning_content" for
    # assistant thinking in the history (§4.1).
    history = [dict(m) if isinstance(m, dict) else m for m in messages or []]
    for m in history:
        if isinstance(m, dict) and m.get("role") == "tool":
            m.pop("name", None)
        if isinstance(m, dict) and m.get("role") == "assistant":
            m.pop("reasoning_content", None)
    match(history, expected, errs, {}, ("messages",))


# --- the backend's answers, derived from Ollama's ---------------------------------------------


def _parts(line: dict[str, Any], endpoint: str) -> tuple[str, str | None, list[dict[str, Any]]]:
    """(text, thinking, tool calls) of one Ollama answer or stream line."""
    if endpoint == "/api/generate":
        return line.get("response") or "", line.get("thinking"), line.get("tool_calls") or []
    msg = line.get("message") or {}
    return msg.get("content") or "", msg.get("thinking"), msg.get("tool_calls") or []


def _usage(line: dict[str, Any]) -> dict[str, int] | None:
    prompt, completion = line.get("prompt_eval_count"), line.get("eval_count")
    if prompt is None and completion is None:
        return None
    p, c = prompt or 0, completion or 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _finish(done_reason: Any, calls: bool) -> str:
    # The inverse of §4.2: tool_calls -> stop, length -> length, stop -> stop
    if done_reason == "length":
        return "length"
    if done_reason == "stop":
        return "tool_calls" if calls else "stop"
    raise UnknownShape(f"no OpenAI finish_reason gives done_reason {done_reason!r}")


def _openai_call(call: dict[str, Any]) -> dict[str, Any]:
    fn = call["function"]
    return {
        "id": call.get("id"),
        "type": "function",
        "function": {"name": fn["name"], "arguments": json.dumps(fn.get("arguments") or {})},
    }


def script_for(endpoint: str, answer: dict[str, Any]) -> Script:
    """What the backend must answer for the app to give Ollama's ``answer`` (§4.2 inverted)."""
    if "body" in answer:
        body = answer["body"]
        text, thinking, calls = _parts(body, endpoint)
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
        if thinking:
            message["reasoning_content"] = thinking
        if calls:
            message["tool_calls"] = [_openai_call(c) for c in calls]
        return Script(
            message=message,
            finish_reason=_finish(body.get("done_reason"), bool(calls)),
            usage=_usage(body),
        )
    lines = answer["lines"]
    chunks: list[Any] = []
    any_calls = False
    for line in lines[:-1]:
        if line.get("done") is not False or "error" in line:
            raise UnknownShape("a stream with a done or error line before its last line")
        text, thinking, calls = _parts(line, endpoint)
        delta: dict[str, Any] = {}
        if thinking:
            delta["reasoning_content"] = thinking
        if text:
            delta["content"] = text
        if delta:
            chunks.append(delta)
        for position, call in enumerate(calls):
            # As OpenAI streams them: id and name first, the arguments in two pieces.
            any_calls = True
            index = call["function"].get("index", position)
            first = _openai_call(call)
            args = first["function"]["arguments"]
            first["index"] = index
            first["function"]["arguments"] = args[: len(args) // 2]
            chunks.append({"tool_calls": [first]})
            rest = {"index": index, "function": {"arguments": args[len(args) // 2 :]}}
            chunks.append({"tool_calls": [rest]})
    last = lines[-1]
    if "error" in last:
        # Output began, then the backend went away: the fake closes the connection after the
        # role chunk and these chunks.
        return Script(chunks=chunks, finish_reason=None, usage=None, drop_after=1 + len(chunks))
    if last.get("done") is not True:
        raise UnknownShape("a stream whose last line is neither done:true nor an error")
    return Script(
        chunks=chunks, finish_reason=_finish(last.get("done_reason"), any_calls), usage=_usage(last)
    )


# --- backends and the app ---------------------------------------------------------------------


class Canned:
    """A tiny OpenAI-compatible backend for what FakeUpstream cannot be told to answer: chosen
    embedding vectors, a chosen ``/v1/models`` body, and a stream cut by a TCP reset. It checks
    the key and records every request, like the fake."""

    def __init__(
        self,
        *,
        models: dict[str, Any] | None = None,
        embeddings: dict[str, Any] | None = None,
        reset_after: list[dict[str, Any]] | None = None,
    ) -> None:
        self.models = models or {"object": "list", "data": []}
        self.embeddings = embeddings
        self.reset_after = reset_after  # stream these deltas, then reset the connection
        self.journal: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Canned:
        app = web.Application()
        app.router.add_get("/v1/models", self._list)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def sent(self, path: str) -> list[Any]:
        return [e["body"] for e in self.journal if e["path"] == path]

    async def _record(self, request: web.Request) -> web.Response | None:
        raw = await request.read()
        self.journal.append({"path": request.path, "body": json.loads(raw) if raw else None})
        if request.headers.get("Authorization") != f"Bearer {UPSTREAM_KEY}":
            return web.json_response({"error": {"message": "Incorrect API key"}}, status=401)
        return None

    async def _list(self, request: web.Request) -> web.StreamResponse:
        return await self._record(request) or web.json_response(self.models)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._record(request)) is not None:
            return denied
        body = self.journal[-1]["body"]
        inputs = body.get("input") if isinstance(body, dict) else None
        inputs = [inputs] if isinstance(inputs, str) else inputs
        # OpenAI's rules: known parameters only, a non-empty list of non-empty strings.
        unknown = set(body or {}) - {"model", "input", "encoding_format", "dimensions", "user"}
        if (
            unknown
            or not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(i, str) and i for i in inputs)
            or self.embeddings is None
        ):
            return web.json_response({"error": {"message": f"invalid: {body!r}"}}, status=400)
        return web.json_response(self.embeddings)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if (denied := await self._record(request)) is not None:
            return denied
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for delta in [{"role": "assistant", "content": ""}, *(self.reset_after or ())]:
            chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await asyncio.sleep(0.05)  # let the proxy send its first line
        transport = request.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()  # linger 0: the kernel sends RST, "connection reset" at the proxy
        return resp


@asynccontextmanager
async def proxy(upstream_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, its lifespan entered, reached in-process (sockets would add nothing)."""
    app = create_app(settings_for(upstream_url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:11434", timeout=20
        ) as client,
    ):
        yield client


async def send(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    if body is None:
        return await client.request(method, path, headers=headers)
    return await client.request(method, path, json=body, headers=headers)


def inference_calls(fake: FakeUpstream) -> list[Any]:
    return [e["body"] for e in fake.journal if e["path"] != "/v1/models"]


def fake_models(*names: str | None) -> list[str]:
    """Backend ids for client names: the name, and the name without Ollama's default tag,
    which the proxy strips when it has not looked at the backend's list (§1.3, §4.5)."""
    out: list[str] = []
    for name in names:
        if name:
            out.extend(n for n in dict.fromkeys((name, name.removesuffix(":latest"))))
    return out


def model_of(request: Any) -> str | None:
    if not isinstance(request, dict):
        return None
    return request.get("model") or request.get("name")


# --- checking an answer -----------------------------------------------------------------------


def check_content_type(actual: str | None, expected: str | None, errs: Errors) -> None:
    """Media type exact; the fixture's parameters must be there. A charset=utf-8 the fixture
    does not show is accepted on application/json only: JSON is UTF-8 by definition (RFC 8259),
    whereas NDJSON is specified without one (§1.1)."""
    if expected is None:
        return
    if actual is None:
        errs.append(f"content-type: missing, fixture has {expected!r}")
        return

    def split(value: str) -> tuple[str, set[str]]:
        media, *params = (p.strip().lower() for p in value.split(";"))
        return media, {p.replace(" ", "") for p in params if p}

    media, params = split(actual)
    exp_media, exp_params = split(expected)
    extra = params - exp_params
    charset_only = media == "application/json" and extra == {"charset=utf-8"}
    if media != exp_media or not exp_params <= params or (extra and not charset_only):
        errs.append(f"content-type: expected {expected!r}, got {actual!r}")


def ndjson(resp: httpx.Response, errs: Errors) -> list[Any]:
    """NDJSON framing (§3.2): one compact object per \\n-terminated line, no blank lines."""
    text = resp.text
    if not text.endswith("\n"):
        errs.append(f"stream: does not end with a newline: {text[-80:]!r}")
    out: list[Any] = []
    for i, raw in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")):
        if not raw.strip():
            errs.append(f"stream line {i}: blank line")
            continue
        try:
            out.append(json.loads(raw))
        except ValueError:
            errs.append(f"stream line {i}: not JSON: {raw!r}")
    return out


def check_answer(
    resp: httpx.Response,
    expected: dict[str, Any],
    view: View,
    errs: Errors,
    statuses: Sequence[int] | None = None,
) -> None:
    """Status, content type and body of one answer against a fixture's ``response``."""
    want = expected["status"]
    if resp.status_code not in (statuses or (want,)):
        errs.append(f"status: expected {want}, got {resp.status_code}: {resp.text[:300]!r}")
        return
    check_content_type(resp.headers.get("content-type"), expected.get("content_type"), errs)
    if "body_text" in expected:
        if resp.text != expected["body_text"]:
            errs.append(f"body: expected {expected['body_text']!r}, got {resp.text!r}")
    elif "body" in expected:
        try:
            body = resp.json()
        except ValueError:
            errs.append(f"body: not JSON: {resp.text[:300]!r}")
            return
        compare(body, expected["body"], view, errs)
    elif "lines" in expected:
        lines = ndjson(resp, errs)
        if view.endpoint == "/api/pull":
            check_progress(lines, expected["lines"], errs)
        elif len(lines) != len(expected["lines"]):
            errs.append(f"stream: expected {len(expected['lines'])} lines, got {lines!r}")
        else:
            for i, (a, e) in enumerate(zip(lines, expected["lines"], strict=True)):
                compare(a, e, view, errs, (i,))
    else:
        raise UnknownShape(f"a response with neither body, body_text nor lines: {expected!r}")


def check_progress(lines: list[Any], expected: list[Any], errs: Errors) -> None:
    """Pull progress: a proxy has no layers to download, and §4.6 lets it answer "a short
    progress stream ending in" success. So the lines must be some of Ollama's lines, exactly,
    in Ollama's order, ending with the last one ({"status": "success"}, §2.10)."""
    rest = iter(expected)
    if not lines or lines[-1] != expected[-1]:
        errs.append(f"stream: must end with {expected[-1]!r}; got {lines!r}")
    if not all(any(line == e for e in rest) for line in lines):
        errs.append(f"stream: not a subsequence of the fixture's lines; got {lines!r}")


def unsupported_alternative(resp: httpx.Response) -> bool:
    """§4.6: a proxy may answer the model-management endpoints (delete, copy, create, push,
    blobs) with 400/405/501 and {"error": "...not supported by this proxy"} instead of
    emulating Ollama's empty 200."""
    if resp.status_code not in (400, 405, 501):
        return False
    try:
        body = resp.json()
    except ValueError:
        return False
    return (
        resp.headers.get("content-type", "").startswith("application/json")
        and set(body) == {"error"}
        and "not supported" in str(body["error"])
    )


def fail_if(errs: Errors, what: str) -> None:
    if errs:
        pytest.fail(f"{what}:\n  " + "\n  ".join(errs), pytrace=False)


# --- drivers ----------------------------------------------------------------------------------

MANAGEMENT = ("/api/delete", "/api/copy", "/api/create", "/api/push")
VARIANTS = {  # extra answers of an exchange fixture, and the backend state that produces them
    "variant_empty": "empty",  # the backend lists no model
    "response_not_found": "not_found",  # the backend does not have the request's model
}


def exchange(
    name: str, fx: dict[str, Any], answer: dict[str, Any], state: str = "normal"
) -> Driver:
    endpoint, method, request = fx["endpoint"], fx["method"], fx["request"]
    view = View(endpoint)
    model = model_of(request)

    async def run(fake: FakeUpstream) -> None:
        errs: Errors = []
        ok = answer["status"] == 200 and state == "normal"
        local = False  # answered by the app alone (load/unload)
        listed: list[str] = []  # the models an /api/tags or /api/ps answer shows
        if endpoint in ("/api/embed", "/api/embeddings"):
            await _embed_exchange(endpoint, request, answer, errs)
            fail_if(errs, name)
            return
        if endpoint in ("/api/chat", "/api/generate"):
            fake.models = fake_models(model) if ok else ["gpt-4o-mini"]
            local = ok and answer.get("body", {}).get("done_reason") in ("load", "unload")
            if ok and not local:
                fake.script(script_for(endpoint, answer))
        elif endpoint == "/api/tags":
            listed = [m["name"] for m in answer.get("body", {}).get("models", [])]
            fake.models = [] if state == "empty" else listed  # as they are, in this order
        elif endpoint == "/api/ps":
            listed = [m["name"] for m in answer.get("body", {}).get("models", [])]
            fake.models = fake_models(*listed)  # each is used before /api/ps, below
        elif endpoint in ("/api/show", "/api/pull", *MANAGEMENT):
            fake.models = fake_models(model) if ok else ["gpt-4o-mini"]
        elif endpoint not in ("/", "/api/version"):
            raise UnknownShape(f"no driver for endpoint {endpoint}")
        async with proxy(fake.url) as client:
            if endpoint == "/api/ps":  # use each model the fixture shows as loaded
                for loaded in listed:
                    warm = {"model": loaded, "messages": [{"role": "user", "content": "hi"}]}
                    r = await client.post("/api/chat", json={**warm, "stream": False})
                    assert r.status_code == 200, r.text
            resp = await send(client, method, endpoint, request)
        if endpoint in MANAGEMENT and unsupported_alternative(resp):
            return
        check_answer(resp, answer, view, errs)
        calls = inference_calls(fake)
        if endpoint in ("/api/chat", "/api/generate") and answer["status"] == 200:
            if local:  # load/unload: answered without inference (§4.7)
                if calls:
                    errs.append(f"backend: no call expected for a load/unload, got {calls!r}")
            elif len(calls) != 1:
                errs.append(f"backend: expected one completion call, got {calls!r}")
            else:
                expected_upstream_chat(calls[0], request, endpoint, str(model), errs)
        elif answer["status"] == 400 and calls:
            errs.append(f"backend: an invalid request must not reach it; got {calls!r}")
        fail_if(errs, name)

    return run


async def _embed_exchange(
    endpoint: str, request: dict[str, Any], answer: dict[str, Any], errs: Errors
) -> None:
    body = answer["body"]
    vectors = body.get("embeddings") if endpoint == "/api/embed" else [body.get("embedding")]
    backend = {
        "object": "list",
        "model": request["model"],
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": body.get("prompt_eval_count", 1), "total_tokens": 1},
    }
    async with Canned(embeddings=backend) as canned, proxy(canned.url) as client:
        resp = await send(client, "POST", endpoint, request)
    check_answer(resp, answer, View(endpoint), errs)
    sent = canned.sent("/v1/embeddings")
    if endpoint == "/api/embed" and not vectors:
        if sent:  # empty input: answered locally, OpenAI rejects empty input (§2.8, §4.4)
            errs.append(f"backend: no call expected for empty input, got {sent!r}")
        return
    text = request.get("input") if endpoint == "/api/embed" else request.get("prompt")
    expected: dict[str, Any] = {
        "model": request["model"],
        # §4.4: "input": <string or list>; the legacy endpoint sends [prompt]
        "input": Either((text, [text]))
        if isinstance(text, str) and endpoint == "/api/embed"
        else ([text] if isinstance(text, str) else text),
        "encoding_format": "float",
    }
    if request.get("dimensions"):
        expected["dimensions"] = request["dimensions"]
    if len(sent) != 1:
        errs.append(f"backend: expected one embeddings call, got {sent!r}")
    else:
        match(sent[0], expected, errs, {})


def raw_case(name: str, fx: dict[str, Any], case: dict[str, Any]) -> Driver:
    async def run(fake: FakeUpstream) -> None:
        errs: Errors = []
        fake.models = ["llama3.2"]
        async with proxy(fake.url) as client:
            resp = await client.request(
                fx["method"],
                fx["endpoint"],
                content=case["request_raw"].encode(),
                headers={"Content-Type": "application/json"},
            )
        check_answer(resp, case["response"], View(fx["endpoint"]), errs)
        if case["response"]["status"] == 400 and inference_calls(fake):
            errs.append(f"backend: an invalid body must not reach it; got {fake.journal!r}")
        fail_if(errs, name)

    return run


def _mark_ids(value: Any, client_ids: set[str]) -> Any:
    """Ids the expected OpenAI request shows but the client did not send were synthesised by
    the fixture's author; their format is implementation-defined (the fixture's notes)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in ("id", "tool_call_id") and isinstance(v, str) and v not in client_ids:
                out[k] = SynthId(v)
            elif k == "arguments" and isinstance(v, str):
                out[k] = JsonText(json.loads(v))  # a JSON document; its whitespace is free
            else:
                out[k] = _mark_ids(v, client_ids)
        return out
    if isinstance(value, list):
        return [_mark_ids(v, client_ids) for v in value]
    return value


def _client_ids(value: Any) -> set[str]:
    if isinstance(value, dict):
        own = {v for k, v in value.items() if k in ("id", "tool_call_id") and isinstance(v, str)}
        return own.union(*(_client_ids(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_client_ids(v) for v in value))
    return set()


def _sse(events: list[Any]) -> bytes:
    return b"".join(
        b"data: " + (e if isinstance(e, str) else json.dumps(e)).encode() + b"\n\n" for e in events
    )


def mapping_chat(name: str, fx: dict[str, Any]) -> Driver:
    async def run(fake: FakeUpstream) -> None:
        errs: Errors = []
        req, want = fx["ollama_request"], fx["expected_openai_request"]
        fake.models = [want["model"]]
        if "openai_stream" in fx:
            fake.script(Script(raw_body=_sse(fx["openai_stream"])))
        else:
            raw = json.dumps(fx["openai_response"]).encode()
            fake.script(Script(raw_body=raw, content_type="application/json"))
        async with proxy(fake.url) as client:
            resp = await client.post(fx["endpoint"], json=req)
        view = View(fx["endpoint"], mapping=True)
        if "expected_ollama_lines" in fx:
            answer = {"status": 200, "content_type": "application/x-ndjson"}
            check_answer(resp, {**answer, "lines": fx["expected_ollama_lines"]}, view, errs)
        else:
            answer = {"status": 200, "content_type": "application/json; charset=utf-8"}
            check_answer(resp, {**answer, "body": fx["expected_ollama_response"]}, view, errs)
        calls = inference_calls(fake)
        if len(calls) != 1:
            errs.append(f"backend: expected one call, got {calls!r}")
        else:
            match(calls[0], _mark_ids(want, _client_ids(req)), errs, {})
            for dropped in fx.get("dropped_with_warning", ()):
                if dropped.split()[0] in calls[0]:
                    errs.append(f"backend: {dropped.split()[0]} must not be sent ({dropped})")
        fail_if(errs, name)

    return run


def mapping_embed(name: str, endpoint: str, fx: dict[str, Any], backend: dict[str, Any]) -> Driver:
    async def run(fake: FakeUpstream) -> None:
        errs: Errors = []
        async with Canned(embeddings=backend) as canned, proxy(canned.url) as client:
            resp = await client.post(endpoint, json=fx["ollama_request"])
        answer = {"status": 200, "content_type": "application/json; charset=utf-8"}
        view = View(endpoint, mapping=True)
        check_answer(resp, {**answer, "body": fx["expected_ollama_response"]}, view, errs)
        sent = canned.sent("/v1/embeddings")
        if len(sent) != 1:
            errs.append(f"backend: expected one embeddings call, got {sent!r}")
        else:
            match(sent[0], fx["expected_openai_request"], errs, {})
        fail_if(errs, name)

    return run


def mapping_tags(name: str, fx: dict[str, Any]) -> Driver:
    async def run(fake: FakeUpstream) -> None:
        errs: Errors = []
        async with Canned(models=fx["openai_response"]) as canned, proxy(canned.url) as client:
            resp = await client.get(fx["endpoint"])
        answer = {"status": 200, "content_type": "application/json; charset=utf-8"}
        view = View(fx["endpoint"], mapping=True)
        check_answer(resp, {**answer, "body": fx["expected_ollama_response"]}, view, errs)
        # name_resolution: the client's name -> the backend id a request for it must reach,
        # with the client's name echoed in the answer (§1.3).
        fake.models = [m["id"] for m in fx["openai_response"]["data"]]
        async with proxy(fake.url) as client:
            for client_name, backend_id in fx.get("name_resolution", {}).items():
                body = {"model": client_name, "messages": [{"role": "user", "content": "hi"}]}
                r = await client.post("/api/chat", json={**body, "stream": False})
                if r.status_code != 200 or r.json().get("model") != client_name:
                    errs.append(f"{client_name}: expected 200 echoing the name, got {r.text!r}")
                elif fake.last()["body"]["model"] != backend_id:
                    errs.append(
                        f"{client_name}: backend got model {fake.last()['body']['model']!r}, "
                        f"expected {backend_id!r}"
                    )
        fail_if(errs, name)

    return run


def mapping_error(name: str, case: dict[str, Any], stream: bool) -> Driver:
    async def run(fake: FakeUpstream) -> None:
        errs: Errors = []
        model = case.get("client_model", "gpt-4o-mini")
        chat = {
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        }
        if "openai_event" in case:
            if case["openai_event"] != "connection reset":
                raise UnknownShape(f"no way to produce the backend event {case['openai_event']!r}")
            async with (
                Canned(reset_after=[{"content": "Hello"}]) as canned,
                proxy(canned.url) as client,
            ):
                resp = await client.post("/api/chat", json=chat)
            if resp.status_code != case["expected_status"]:
                errs.append(f"status: expected {case['expected_status']}, got {resp.status_code}")
            lines = ndjson(resp, errs)
            # output, then exactly one error line and no done line (§3.5). The text after the
            # colon is the fixture's example: aiohttp keeps a reset only in its message text
            # (client_proto.py connection_lost), which the proxy does not parse, so a reset and a
            # close both read "upstream stream interrupted: connection closed early".
            expected = case["expected_last_line"]["error"].partition(":")[0] + ":"
            last = lines[-1].get("error") if lines else None
            if not isinstance(last, str) or not last.startswith(expected):
                errs.append(f"last line: expected {expected}..., got {lines!r}")
            if any("error" in x or x.get("done") for x in lines[:-1]) or len(lines) < 2:
                errs.append(f"lines before the error: expected output only, got {lines!r}")
            fail_if(errs, name)
            return
        error = case.get("openai_body", case.get("openai_body_text"))
        async with proxy(fake.url) as client:
            # scripted after the start, whose model-list fetch would take the scripted error
            fake.script(Script(status=case["openai_status"], error=error))
            resp = await client.post("/api/chat", json=chat)
        statuses = [case["expected_status"]]
        if case["expected_status"] == 500 and case["openai_status"] >= 500:
            statuses.append(502)  # §4.9: "5xx -> 500 (or 502)"
        body = case["expected_body"]
        if case["openai_status"] >= 500:
            # A documented choice (docs/API_COMPATIBILITY.md, "backend 5xx"): the message says
            # the backend failed, so users do not debug the proxy or their client.
            body = {"error": f"upstream error (HTTP {case['openai_status']}): {body['error']}"}
        answer = {
            "status": case["expected_status"],
            "content_type": "application/json; charset=utf-8",  # §4.9: always JSON
            "body": body,
        }
        check_answer(resp, answer, View("/api/chat", mapping=True), errs, statuses)
        fail_if(errs, name)

    return run


# The requirements a client_wire fixture may state, as checks on the streamed lines.
REQUIREMENTS: dict[str, Callable[[list[dict[str, Any]]], bool]] = {
    "every line has message{role,content}": lambda lines: all(
        isinstance(x.get("message"), dict)
        and x["message"].get("role") == "assistant"
        and isinstance(x["message"].get("content"), str)
        for x in lines
    ),
    'no thinking:"" keys': lambda lines: all(
        x.get("message", {}).get("thinking", None) != "" for x in lines
    ),
    "counts only on the done line": lambda lines: all(
        ("eval_count" in x or "prompt_eval_count" in x) == bool(x.get("done")) for x in lines
    ),
    # Ollama's layout (ollama/ollama#7836; the shared contract's correction of these fixtures)
    "each tool call on its own line": lambda lines: (
        [
            [
                (c["function"]["index"], c["function"]["name"], c["function"]["arguments"])
                for c in x["message"]["tool_calls"]
            ]
            for x in lines
            if x.get("message", {}).get("tool_calls")
        ]
        == [[(0, "get_weather", {"city": "Tokyo"})], [(1, "get_weather", {"city": "Paris"})]]
    ),
}
# What the backend answers a client_wire request: reasoning, text and two tool calls in
# fragments, so that every requirement above has something to bite on.
WIRE_SCRIPT = Script(
    chunks=[
        {"reasoning_content": "The user wants the weather."},
        {"content": "Let me "},
        {"content": "check."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"ci'},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Tokyo"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ]
        },
    ],
    finish_reason="tool_calls",
    usage={"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
)


def client_wire(name: str, fx: dict[str, Any]) -> Driver:
    requirements = fx.get("expected_response_requirements", [])
    unknown = [r for r in requirements if r not in REQUIREMENTS]
    if unknown:
        raise UnknownShape(f"expected_response_requirements this module cannot check: {unknown}")
    request = fx["request"]
    if request.get("stream") is False:
        raise UnknownShape("a non-streaming client_wire request (only streams are driven)")

    async def run(fake: FakeUpstream) -> None:
        errs: Errors = []
        fake.models = fake_models(request["model"])
        fake.script(WIRE_SCRIPT)
        async with proxy(fake.url) as client:
            resp = await send(client, fx["method"], fx["endpoint"], request, fx["headers"])
        if resp.status_code != 200:
            fail_if([f"status {resp.status_code}: {resp.text}"], name)
        check_content_type(resp.headers.get("content-type"), "application/x-ndjson", errs)
        lines = ndjson(resp, errs)
        # §5.7 for every stream: exactly one done:true line, last; text as the backend sent it
        if [x.get("done") for x in lines] != [False] * (len(lines) - 1) + [True]:
            errs.append(f"stream: exactly one done line, last, expected; got {lines!r}")
        text = "".join(x.get("message", {}).get("content", "") for x in lines)
        if text != "Let me check.":
            errs.append(f"stream: content {text!r}, expected 'Let me check.'")
        for requirement in requirements or [*REQUIREMENTS]:
            if not REQUIREMENTS[requirement](lines):
                errs.append(f"requirement {requirement!r} not met: {lines!r}")
        calls = inference_calls(fake)
        if len(calls) != 1:
            errs.append(f"backend: expected one call, got {calls!r}")
        else:
            expected_upstream_chat(calls[0], request, fx["endpoint"], request["model"], errs)
        fail_if(errs, name)

    return run


def conversation(name: str, fx: dict[str, Any], turns: list[str]) -> Driver:
    async def run(fake: FakeUpstream) -> None:
        errs: Errors = []
        endpoint = fx["endpoint"]
        for turn in turns:
            request, body = fx[f"{turn}_request"], fx[f"{turn}_response"]
            fake.reset()
            fake.models = fake_models(request["model"])
            stream = request.get("stream") is not False
            answer = (
                {"status": 200, "content_type": "application/x-ndjson", "lines": body}
                if stream
                else {
                    "status": 200,
                    "content_type": "application/json; charset=utf-8",
                    "body": body,
                }
            )
            fake.script(script_for(endpoint, answer))
            async with proxy(fake.url) as client:
                resp = await send(client, fx["method"], endpoint, request, fx.get("headers"))
            turn_errs: Errors = []
            check_answer(resp, answer, View(endpoint), turn_errs)
            calls = inference_calls(fake)
            if len(calls) != 1:
                turn_errs.append(f"backend: expected one call, got {calls!r}")
            else:
                expected_upstream_chat(calls[0], request, endpoint, request["model"], turn_errs)
            errs.extend(f"{turn}: {e}" for e in turn_errs)
        fail_if(errs, name)

    return run


# --- recognising a fixture's shape ------------------------------------------------------------

DOCUMENTATION = {"description", "notes", "assertions", "client"}  # prose, read by people
TURN = re.compile(r"^(first|second|third|fourth|fifth)_(request|response)$")
ORDER = ("first", "second", "third", "fourth", "fifth")


def _require(fx: dict[str, Any], required: set[str], allowed: set[str]) -> None:
    missing = required - fx.keys()
    extra = fx.keys() - required - allowed - DOCUMENTATION
    if missing or extra:
        raise UnknownShape(f"missing keys {sorted(missing)}, unrecognised keys {sorted(extra)}")


def _check_answer_shape(answer: Any) -> None:
    if not (
        isinstance(answer, dict)
        and "status" in answer
        and len({"body", "body_text", "lines"} & answer.keys()) == 1
        and answer.keys() <= {"status", "content_type", "body", "body_text", "lines"}
    ):
        raise UnknownShape(f"an answer that is not status + body|body_text|lines: {answer!r}")


def _plan(stem: str, fx: Any) -> list[tuple[str, Driver]]:
    if not isinstance(fx, dict):
        raise UnknownShape("the fixture is not a JSON object")
    keys = fx.keys()
    if {"request", "response"} <= keys:  # exchange
        _require(fx, {"endpoint", "method", "request", "response"}, set(VARIANTS))
        out = [("", exchange(stem, fx, fx["response"]))]
        _check_answer_shape(fx["response"])
        for variant, state in VARIANTS.items():
            if variant in fx:
                _check_answer_shape(fx[variant])
                out.append((variant, exchange(f"{stem}.{variant}", fx, fx[variant], state)))
        return out
    if "ollama_request" in keys:  # mapping of one request
        endpoint = fx.get("endpoint")
        if endpoint == "/api/chat":
            _require(
                fx,
                {"endpoint", "ollama_request", "expected_openai_request"},
                {
                    "openai_response",
                    "openai_stream",
                    "expected_ollama_response",
                    "expected_ollama_lines",
                    "dropped_with_warning",
                },
            )
            pairs = (
                {"openai_response", "expected_ollama_response"},
                {"openai_stream", "expected_ollama_lines"},
            )
            if not any(p <= keys for p in pairs) or all(p & keys for p in pairs):
                raise UnknownShape(
                    "needs openai_response + expected_ollama_response, or "
                    "openai_stream + expected_ollama_lines"
                )
            return [("", mapping_chat(stem, fx))]
        if endpoint == "/api/embed":
            required = {
                "endpoint",
                "ollama_request",
                "expected_openai_request",
                "openai_response",
                "expected_ollama_response",
            }
            _require(fx, required, {"legacy_variant"})
            out = [("", mapping_embed(stem, "/api/embed", fx, fx["openai_response"]))]
            if "legacy_variant" in fx:
                legacy = fx["legacy_variant"]
                _require(legacy, required - {"endpoint", "openai_response"}, set())
                # No backend answer given: the one vector the legacy answer shows (§4.4).
                backend = {
                    "object": "list",
                    "model": legacy["ollama_request"]["model"],
                    "data": [
                        {
                            "object": "embedding",
                            "index": 0,
                            "embedding": legacy["expected_ollama_response"]["embedding"],
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
                # §4.4: the legacy variant of /api/embed is /api/embeddings.
                driver = mapping_embed(f"{stem}.legacy", "/api/embeddings", legacy, backend)
                out.append(("legacy_variant", driver))
            return out
        raise UnknownShape(f"no mapping driver for endpoint {endpoint!r}")
    if "openai_response" in keys and fx.get("endpoint") == "/api/tags":
        _require(
            fx, {"endpoint", "openai_response", "expected_ollama_response"}, {"name_resolution"}
        )
        return [("", mapping_tags(stem, fx))]
    if "cases" in keys and "endpoint" not in keys:  # backend errors -> Ollama errors
        _require(fx, {"cases"}, set())
        out = []
        for i, case in enumerate(fx["cases"]):
            when = case.get("when")
            if "openai_status" in case and when == "before streaming":
                label = f"case{i}-{case['openai_status']}"
                out.append((f"{label}-stream", mapping_error(f"{stem}.{label}", case, True)))
                out.append((f"{label}-nonstream", mapping_error(f"{stem}.{label}", case, False)))
            elif "openai_event" in case and when == "after first NDJSON line was sent":
                out.append((f"case{i}-midstream", mapping_error(f"{stem}.case{i}", case, True)))
            else:
                raise UnknownShape(f"cases[{i}]: an error case of unknown kind: {case!r}")
        return out
    if "cases" in keys:  # raw request bodies
        _require(fx, {"endpoint", "method", "cases"}, set())
        out = []
        for i, case in enumerate(fx["cases"]):
            if set(case) != {"request_raw", "response"}:
                raise UnknownShape(f"cases[{i}]: expected request_raw + response, got {set(case)}")
            _check_answer_shape(case["response"])
            out.append((f"case{i}", raw_case(f"{stem}.case{i}", fx, case)))
        return out
    turns = [m.group(1) for k in keys if (m := TURN.match(k)) and m.group(2) == "request"]
    if turns:  # a conversation: request/response pairs in order
        turns.sort(key=ORDER.index)
        turn_keys = {f"{t}_{kind}" for t in turns for kind in ("request", "response")}
        _require(fx, {"endpoint", "method", *turn_keys}, {"headers"})
        return [("", conversation(stem, fx, turns))]
    if {"request", "headers"} <= keys:  # what a client sends, no answer recorded
        _require(
            fx, {"endpoint", "method", "headers", "request"}, {"expected_response_requirements"}
        )
        if fx["endpoint"] != "/api/chat":
            raise UnknownShape(f"no client_wire driver for endpoint {fx['endpoint']!r}")
        return [("", client_wire(stem, fx))]
    raise UnknownShape(f"no known fixture shape has the keys {sorted(keys)}")


def plan(path: Path) -> list[Case]:
    stem = path.stem

    def failing(why: str) -> Driver:
        async def run(fake: FakeUpstream) -> None:
            pytest.fail(f"{path.name}: cannot drive this fixture: {why}", pytrace=False)

        return run

    try:
        planned = _plan(stem, json.loads(path.read_text()))
    except (ValueError, UnknownShape, KeyError, TypeError, AttributeError) as exc:
        return [Case(stem, path.name, failing(f"{type(exc).__name__}: {exc}"))]
    return [Case(f"{stem}.{label}" if label else stem, path.name, run) for label, run in planned]


FILES = sorted(FIXTURES.glob("*.json"))
CASES = [case for path in FILES for case in plan(path)]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_contract_fixture(case: Case, upstream: FakeUpstream) -> None:
    try:
        asyncio.run(case.run(upstream))
    except UnknownShape as exc:  # found while driving (e.g. a history it cannot pair)
        pytest.fail(f"{case.fixture}: cannot drive this fixture: {exc}", pytrace=False)


def test_every_fixture_file_is_driven() -> None:
    """An empty glob would make the parametrised test skip silently; a file without cases would
    go unread."""
    assert FILES, f"no fixtures in {FIXTURES}"
    assert {c.fixture for c in CASES} == {p.name for p in FILES}
