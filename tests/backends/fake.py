"""A fake OpenAI-compatible backend whose behaviour is a named rule set (see ``rulesets``).

:class:`FakeBackend` is a :class:`~tests.fake_upstream.FakeUpstream`: the journal, ``targets``,
scripts, standing rules, faults and the streaming machinery (split writes, delays, drops) are
the same. What differs is *which* requests it accepts and *how* it answers:

* a :class:`RuleSet` routes request paths (Azure's deployments, Gemini's ``/v1beta/openai``),
  authenticates (``api-key`` or ``Bearer``), runs its checks, each of which may refuse the request
  with the backend's own status and error body (a :class:`Refusal`), and decides whether the model
  thinks and how its reasoning is shown (a ``reasoning`` field, ``reasoning_content``, ``<think>``
  tags in the content, or nothing);
* scripts are written backend-neutrally: ``{"think": "..."}`` deltas are the model's reasoning and
  are rendered in the rule set's shape (or dropped when the model does not think for this request);
  ``{"content": ...}`` and ``{"tool_calls": [...]}`` deltas are OpenAI's.

Every journal entry also records the rule set's decision: ``refused`` (the refusal's status) or
``thinking`` (whether the model reasoned) -- so a test can tell that a parameter was *ignored*.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from tests.fake_upstream import FakeUpstream, Script


@dataclass
class Refusal:
    """An error answer, in the backend's own shape (a dict, a list for Gemini, or bytes)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    """What a check sees: the decoded request, its endpoint kind and the model it is for."""

    kind: str  # "chat", "embeddings", "models"
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any
    deployment: str | None = None  # Azure's deployment in the path
    model: str = ""  # the model the rule set resolved (an Azure deployment's model)

    @property
    def params(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}

    def messages(self) -> list[dict[str, Any]]:
        msgs = self.params.get("messages")
        return [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []


Check = Callable[[Request], "Refusal | None"]
# How reasoning is shown: "hidden" (never returned), "reasoning" (message/delta field),
# "reasoning_content" (DeepSeek's field), "tags" (<think>...</think> at the start of the content),
# "tags+reasoning_content" (both: llama.cpp's deepseek-legacy).
REASONING_STYLES = ("hidden", "reasoning", "reasoning_content", "tags", "tags+reasoning_content")


def never(_: Request) -> bool:
    return False


def hidden(_: Request) -> str:
    return "hidden"


@dataclass
class RuleSet:
    """One backend's documented behaviour. Checks run in order; the first refusal answers."""

    name: str
    summary: str
    models: tuple[str, ...]
    base_path: str = "/v1"
    # (method, path, query) -> (kind, deployment) or a Refusal; None means "the OpenAI routes".
    route: Callable[[str, str, Mapping[str, str]], tuple[str, str | None] | Refusal] | None = None
    # Returns a Refusal for a missing or wrong credential; gets the fake's key.
    auth: Callable[[Request, str], Refusal | None] | None = None
    resolve_model: Callable[[Request], str | Refusal] | None = None
    chat_checks: Sequence[Check] = ()
    embedding_checks: Sequence[Check] = ()
    thinks: Callable[[Request], bool] = never
    reasoning: Callable[[Request], str] = hidden
    tool_calls: str = "openai"  # or "gemini": streamed calls without index, finish "stop"
    # "option": a usage-only chunk when stream_options.include_usage asks for it; "always": usage
    # on the finish chunk, asked or not (Mistral); "last": a usage-only chunk, asked or not
    # (OpenRouter).
    stream_usage: str = "option"
    # SSE comment lines sent before the first event (OpenRouter's keep-alives).
    stream_comments: tuple[str, ...] = ()
    # Extra fields of the /models entries, per model (OpenRouter's supported_parameters).
    model_entries: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reasoning_tokens: bool = False  # usage.completion_tokens_details.reasoning_tokens
    embedding_dimensions: bool = True  # honours "dimensions" (else it is ignored)
    not_found: Callable[[str], Refusal] | None = None  # answer to an unknown route
    unknown_model: Callable[[str], Refusal] | None = None


def openai_error(
    message: str,
    param: str | None = None,
    code: str | None = None,
    status: int = 400,
    type_: str = "invalid_request_error",
) -> Refusal:
    """OpenAI's error object (platform.openai.com/docs/guides/error-codes)."""
    return Refusal(
        status, {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def bearer_auth(req: Request, key: str) -> Refusal | None:
    if not key or req.headers.get("Authorization") == f"Bearer {key}":
        return None
    return openai_error("Incorrect API key provided.", code="invalid_api_key", status=401)


def openai_routes(base: str) -> Callable[[str, str, Mapping[str, str]], tuple[str, None] | Refusal]:
    table = {
        ("POST", f"{base}/chat/completions"): "chat",
        ("POST", f"{base}/embeddings"): "embeddings",
        ("GET", f"{base}/models"): "models",
    }

    def route(method: str, path: str, query: Mapping[str, str]) -> tuple[str, None] | Refusal:
        kind = table.get((method, path))
        if kind is None and method == "GET" and path.startswith(f"{base}/models/"):
            kind = "model"
        if kind is None:
            return openai_error(f"Invalid URL ({method} {path})", status=404)
        return kind, None

    return route


DEFAULT_THINKING = "Thinking it over."


class FakeBackend(FakeUpstream):
    """A FakeUpstream that behaves like the backend ``ruleset`` describes."""

    def __init__(self, ruleset: RuleSet, api_key: str = "sk-test-upstream") -> None:
        super().__init__(models=list(ruleset.models), api_key=api_key)
        self.ruleset = ruleset
        self.model_entries = {m: dict(e) for m, e in ruleset.model_entries.items()}

    def start(self) -> FakeBackend:
        super().start()
        return self

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL an OpenAI client would be given for this backend."""
        return self.root + self.ruleset.base_path

    def last(self, path: str | None = None) -> Any:
        """The last journal entry (for ``path``, if given)."""
        for entry in reversed(self.journal):
            if path is None or entry["path"] == path:
                return entry
        raise AssertionError(f"no request to {path}")

    async def _start(self) -> None:
        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.targets.append(request.raw_path)
            self.in_progress += 1
            try:
                return await handler(request)
            finally:
                self.in_progress -= 1

        app = web.Application(client_max_size=256 * 1024 * 1024, middlewares=[count])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    # --- dispatch -----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        entry = self.journal[-1]
        entry["query"] = dict(request.query)
        rs = self.ruleset
        route = rs.route or openai_routes(rs.base_path)
        routed = route(request.method, request.path, request.query)
        if isinstance(routed, Refusal):
            return self._refuse(entry, routed)
        kind, deployment = routed
        req = Request(kind, request.path, request.query, request.headers, body, deployment)
        auth = rs.auth or bearer_auth
        if (denied := auth(req, self.api_key)) is not None:
            return self._refuse(entry, denied)
        fault = self._fault(request, body if kind != "models" else None)
        if fault is not None and (early := await self._fault_start(fault)) is not None:
            return early
        if kind in ("models", "model"):
            return await self._list_models(request, req, fault)
        if not isinstance(body, dict):
            return self._refuse(entry, openai_error("We could not parse the JSON body."))
        if fault is None and self.scripts and self.scripts[0].status >= 400:
            return await self._error(self.scripts.popleft())
        resolved = rs.resolve_model(req) if rs.resolve_model else str(body.get("model", ""))
        if isinstance(resolved, Refusal):
            return self._refuse(entry, resolved)
        req.model = resolved
        for check in rs.chat_checks if kind == "chat" else rs.embedding_checks:
            if (refusal := check(req)) is not None:
                return self._refuse(entry, refusal)
        if req.model not in self.models:
            missing = rs.unknown_model or _model_not_found
            return self._refuse(entry, missing(req.model))
        if kind == "embeddings":
            return await self._embed(request, req, fault)
        script = fault or (self.scripts.popleft() if self.scripts else self._rule(body))
        thinking = rs.thinks(req)
        entry["thinking"] = thinking
        return await self._answer(request, req, script, thinking)

    def _refuse(self, entry: dict[str, Any], refusal: Refusal) -> web.Response:
        entry["refused"] = refusal.status
        if isinstance(refusal.body, bytes | str):
            return web.Response(
                body=refusal.body,
                status=refusal.status,
                headers=refusal.headers,
                content_type="text/plain",
            )
        return web.json_response(refusal.body, status=refusal.status, headers=refusal.headers)

    async def _list_models(
        self, request: web.Request, req: Request, fault: Script | None
    ) -> web.StreamResponse:
        entry = {"object": "model", "created": 1721172741, "owned_by": "system"}
        if req.kind == "model":
            model = req.path.rsplit("/models/", 1)[1]
            if model not in self.models:
                return self._refuse(self.journal[-1], _model_not_found(model))
            return await self._send_json(request, {"id": model, **entry}, fault)
        data = [{"id": m, **entry, **self.model_entries.get(m, {})} for m in self.models]
        return await self._send_json(request, {"object": "list", "data": data}, fault)

    async def _embed(
        self, request: web.Request, req: Request, fault: Script | None
    ) -> web.StreamResponse:
        inputs = req.params.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return self._refuse(self.journal[-1], openai_error("'$.input' is invalid."))
        dims = req.params.get("dimensions") if self.ruleset.embedding_dimensions else None
        size = dims if isinstance(dims, int) and dims > 0 else 3
        data = [
            {"object": "embedding", "index": i, "embedding": [0.5 + i] + [0.0] * (size - 1)}
            for i in range(len(inputs))
        ]
        usage = {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}
        answer = {"object": "list", "data": data, "model": req.model, "usage": usage}
        return await self._send_json(request, answer, fault)

    # --- answers ------------------------------------------------------------------------------

    @staticmethod
    def _envelope(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1767000000,
            "model": body.get("model") or "",
        }

    @staticmethod
    def _canonical(script: Script, thinking: bool) -> list[Any]:
        """The script's deltas as the model produced them for this request: reasoning first
        when it thinks (a default one if the script has none), none when it does not."""
        chunks = list(script.chunks)
        has_think = any(isinstance(c, dict) and "think" in c for c in chunks)
        if not thinking:
            return [c for c in chunks if not (isinstance(c, dict) and set(c) == {"think"})]
        if not has_think:
            chunks.insert(0, {"think": DEFAULT_THINKING})
        return chunks

    def _usage(self, script: Script, thinking: bool) -> dict[str, Any] | None:
        if script.usage is None:
            return None
        usage: dict[str, Any] = dict(script.usage)
        if self.ruleset.reasoning_tokens:
            usage["completion_tokens_details"] = {"reasoning_tokens": 5 if thinking else 0}
        return usage

    async def _answer(
        self, request: web.Request, req: Request, script: Script, thinking: bool
    ) -> web.StreamResponse:
        body = req.params
        if script.raw_body is not None:
            return await self._raw(request, script)
        if script.first_delay:
            await asyncio.sleep(script.first_delay)
        chunks = self._canonical(script, thinking)
        style = self.ruleset.reasoning(req) if thinking else "hidden"
        if not body.get("stream"):
            return await self._send_json(
                request, self._message(req, script, chunks, style, thinking), script, script.headers
            )
        events = list(self._events(req, script, chunks, style, thinking))
        return await self._write_events(request, events, script)

    def _message(
        self, req: Request, script: Script, chunks: list[Any], style: str, thinking: bool
    ) -> dict[str, Any]:
        message = script.message
        finish = script.finish_reason
        if message is None:
            reasoning = "".join(c["think"] for c in chunks if isinstance(c, dict) and "think" in c)
            content = "".join(c.get("content") or "" for c in chunks if isinstance(c, dict))
            calls: dict[int, dict[str, Any]] = {}
            for c in chunks:
                for tc in (c.get("tool_calls") or []) if isinstance(c, dict) else []:
                    _merge_call(calls, tc)
            message = {"role": "assistant", "content": content or None}
            if "tags" in style and reasoning:
                message["content"] = f"<think>{reasoning}</think>{content}"
            if style.endswith("reasoning_content") and reasoning:
                message["reasoning_content"] = reasoning
            elif style == "reasoning" and reasoning:
                message["reasoning"] = reasoning
            if calls:
                message["tool_calls"] = [calls[i] for i in sorted(calls)]
                if self.ruleset.tool_calls == "gemini":
                    sign_first_call(message["tool_calls"], req.model)
                if finish == "stop":
                    finish = "tool_calls"
        return {
            **self._envelope(req.params),
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": self._usage(script, thinking),
        }

    def _events(
        self, req: Request, script: Script, chunks: list[Any], style: str, thinking: bool
    ) -> Iterator[bytes]:
        env = self._envelope(req.params)

        def event(delta: Any, finish: str | None = None, **extra: Any) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return b"data: " + orjson.dumps({**env, "choices": [choice], **extra}) + b"\n\n"

        for comment in self.ruleset.stream_comments:
            yield b": " + comment.encode() + b"\n\n"
        yield event({"role": "assistant", "content": ""})
        open_tag = False  # a <think> tag was opened in the content and not yet closed
        saw_calls = False
        for item in chunks:
            if isinstance(item, str):
                yield b"data: " + item.encode() + b"\n\n"
                continue
            delta = dict(item)
            if "think" in delta:
                text = delta["think"]
                if "tags" in style:
                    if open_tag:
                        shown: dict[str, Any] = {"content": text}
                    else:  # open the tag, split across two chunks
                        open_tag = True
                        yield event({"content": "<thi"})
                        shown = {"content": "nk>" + text}
                    if style == "tags+reasoning_content":
                        shown["reasoning_content"] = text
                    yield event(shown)
                elif style in ("reasoning", "reasoning_content"):
                    yield event({style: text})
                continue
            if open_tag:  # the answer starts: close the think tag, split across two chunks
                open_tag = False
                first, rest = "</thi", "nk>"
                yield event({"content": first})
                if "content" in delta:
                    delta["content"] = rest + (delta["content"] or "")
                else:
                    yield event({"content": rest})
            if delta.get("tool_calls"):
                saw_calls = True
                if self.ruleset.tool_calls == "gemini":
                    yield from (event(d) for d in _gemini_calls(delta, req.model))
                    continue
            yield event(delta)
        if open_tag:
            yield event({"content": "</think>"})
        finish = script.finish_reason
        if saw_calls and finish == "tool_calls" and self.ruleset.tool_calls == "gemini":
            # Gemini's stream ends tool-call answers with "stop" (googleapis/python-genai#2868).
            finish = "stop"
        usage = self._usage(script, thinking)
        wants_usage = (req.params.get("stream_options") or {}).get("include_usage")
        if finish:
            extra = {"usage": usage} if usage and self.ruleset.stream_usage == "always" else {}
            yield event({}, finish, **extra)
        mode = self.ruleset.stream_usage
        if usage and (mode == "last" or (wants_usage and mode == "option")):
            yield b"data: " + orjson.dumps({**env, "choices": [], "usage": usage}) + b"\n\n"
        if script.done_marker:
            yield b"data: [DONE]\n\n"


def _merge_call(calls: dict[int, dict[str, Any]], tc: dict[str, Any]) -> None:
    """Fold one streamed tool-call delta into complete calls (OpenAI's non-streamed shape)."""
    index = tc.get("index", len(calls))
    fn = tc.get("function") or {}
    call = calls.setdefault(
        index,
        {"id": tc.get("id"), "type": "function", "function": {"name": "", "arguments": ""}},
    )
    call["id"] = call["id"] or tc.get("id")
    call["function"]["name"] += fn.get("name") or ""
    call["function"]["arguments"] += fn.get("arguments") or ""
    if "extra_content" in tc:
        call["extra_content"] = tc["extra_content"]


def thought_signature(name: str, arguments: Any) -> str:
    """The signature this fake gives a call: opaque to clients, and checkable without state
    (hosted.gemini_signatures recomputes it from the replayed call)."""
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        args = arguments
    digest = hashlib.sha256(f"{name}:{json.dumps(args, sort_keys=True)}".encode()).digest()
    return base64.b64encode(digest[:24]).decode()


def sign_first_call(calls: list[dict[str, Any]], model: str) -> None:
    """Gemini 3 signs the first function call of a step; parallel calls after it carry none
    (ai.google.dev/gemini-api/docs/thought-signatures, "parallel function calls"). The
    OpenAI-compatible endpoint puts it in the call's ``extra_content``."""
    if calls and model.startswith("gemini-3") and "extra_content" not in calls[0]:
        fn = calls[0]["function"]
        signature = thought_signature(fn["name"], fn.get("arguments") or "{}")
        calls[0]["extra_content"] = {"google": {"thought_signature": signature}}


def _gemini_calls(delta: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """Gemini streams each tool call whole, in its own chunk, with no ``index``
    (THU-MAIC/OpenMAIC#1556, open-webui/computer#224); Gemini 3 adds a thought signature that
    must come back in the next request (same reports)."""
    calls: dict[int, dict[str, Any]] = {}
    for tc in delta["tool_calls"]:
        _merge_call(calls, tc)
    ordered = [calls[i] for i in sorted(calls)]
    sign_first_call(ordered, model)
    return [{"role": "assistant", "tool_calls": [call]} for call in ordered]


def _model_not_found(model: str) -> Refusal:
    return openai_error(
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        status=404,
    )


# --- helpers for rule sets ----------------------------------------------------------------------


def one_of(values: Sequence[str]) -> str:
    """``'a', 'b', and 'c'`` as OpenAI lists supported values."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def mentions(req: Request, word: str) -> bool:
    """Whether any message's text mentions ``word`` (case-insensitive)."""
    pattern = re.compile(re.escape(word), re.IGNORECASE)
    for m in req.messages():
        content = m.get("content")
        parts = content if isinstance(content, list) else [content]
        for part in parts:
            text = part.get("text") if isinstance(part, dict) else part
            if isinstance(text, str) and pattern.search(text):
                return True
    return False


@contextlib.contextmanager
def serving(ruleset: RuleSet, api_key: str = "sk-test-upstream") -> Iterator[FakeBackend]:
    """A started FakeBackend for ``ruleset``, stopped afterwards."""
    fake = FakeBackend(ruleset, api_key).start()
    try:
        yield fake
    finally:
        fake.stop()
