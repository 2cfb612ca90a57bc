"""A strict fake OpenAI-compatible backend served over a real loopback socket.

It validates requests the way OpenAI does (unknown parameters, empty ``tools``, unpaired tool
messages, non-string tool arguments, ``response_format`` shape, at most 4 ``stop``), so a wrong
translation fails a test instead of passing silently. Tests script its next answers with
:meth:`FakeUpstream.script`; without a script it streams a greeting.

It also produces what aimock cannot: SSE frames and UTF-8 characters split across TCP writes,
errors in the middle of a stream, dropped connections, and slow streams whose cancellation it
records. :attr:`FakeUpstream.faults` puts such faults on any endpoint (chat, completions,
embeddings, models), chosen by the request itself, e.g. by its model name.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

CHAT_PARAMS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "seed",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "service_tier",
        "metadata",
        "store",
        "modalities",
        "prediction",
        "audio",
        "web_search_options",
    }
)
ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


class Invalid(Exception):
    pass


@dataclass
class Script:
    """One scripted answer. ``chunks`` are ``delta`` objects (or raw SSE ``data`` strings)."""

    chunks: list[Any] = field(default_factory=lambda: [{"content": "Hello"}, {"content": "!"}])
    finish_reason: str | None = "stop"
    usage: dict[str, int] | None = field(
        default_factory=lambda: {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    )
    status: int = 200
    error: Any = None  # body for status >= 400
    headers: dict[str, str] = field(default_factory=dict)
    split_at: int | None = None  # write the SSE body in pieces of this many bytes
    delay: float = 0.0  # seconds between chunks (and between pieces)
    first_delay: float = 0.0  # seconds before the response starts
    stall_after: int | None = None  # go silent for 3 s after this many events
    drop_after: int | None = None  # close the connection after this many chunks
    message: dict[str, Any] | None = None  # non-streaming answer's message
    raw_body: bytes | None = None  # send these bytes as the whole body
    content_type: str | None = None
    done_marker: bool = True
    json_body: Any = None  # a non-streamed answer's whole JSON body, instead of the usual one
    truncate_body: bool = False  # a non-streamed answer: promise its length, send half, hang up


def _fail(message: str, status: int = 400, code: str | None = None) -> web.Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return web.json_response(body, status=status)


COMPLETION_PARAMS = frozenset(
    {
        "model",
        "prompt",
        "suffix",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "user",
        "seed",
        "echo",
        "best_of",
    }
)
EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})


def validate_params(body: Any, allowed: frozenset[str], extra: set[str]) -> None:
    if not isinstance(body, dict):
        raise Invalid("body must be an object")
    for key in body:
        if key not in allowed and key not in extra:
            raise Invalid(f"Unrecognized request argument supplied: {key}")
    if not isinstance(body.get("model"), str):
        raise Invalid("you must provide a model parameter")
    if "stream_options" in body and not body.get("stream"):
        raise Invalid("stream_options is only allowed when stream is true")
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if key in body and (isinstance(body[key], bool) or not isinstance(body[key], int | float)):
            raise Invalid(f"{key} must be a number")
    if "max_tokens" in body and (not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1):
        raise Invalid("max_tokens must be a positive integer")
    if "stop" in body and isinstance(body["stop"], list) and len(body["stop"]) > 4:
        raise Invalid("stop: at most 4 sequences")


def validate_chat(body: Any, extra: set[str]) -> None:
    validate_params(body, CHAT_PARAMS, extra)
    if "reasoning_effort" in body and body["reasoning_effort"] not in EFFORTS:
        raise Invalid(f"Invalid value for reasoning_effort: {body['reasoning_effort']!r}")
    if "tools" in body:
        tools = body["tools"]
        if not isinstance(tools, list) or not tools:
            raise Invalid("[] is too short - 'tools'")
        for t in tools:
            if t.get("type") != "function" or not isinstance(
                t.get("function", {}).get("name"), str
            ):
                raise Invalid("invalid tool definition")
    rf = body.get("response_format")
    if rf is not None:
        if rf.get("type") not in ("text", "json_object", "json_schema"):
            raise Invalid("response_format.type invalid")
        if rf["type"] == "json_schema":
            js = rf.get("json_schema")
            if (
                not isinstance(js, dict)
                or not js.get("name")
                or not isinstance(js.get("schema"), dict)
            ):
                raise Invalid("response_format.json_schema needs name and schema")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages must be a non-empty array")
    pending: list[str] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ROLES:
            raise Invalid(f"messages[{i}].role invalid: {role!r}")
        if role == "tool":
            if m.get("tool_call_id") not in pending:
                raise Invalid(
                    f"messages[{i}]: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'"
                )
            pending.remove(m["tool_call_id"])
            continue
        if pending:
            raise Invalid(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'. Missing: {pending}"
            )
        content = m.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    if not url.startswith("data:image/") or ";base64," not in url:
                        raise Invalid(f"messages[{i}]: invalid image URL")
                elif part.get("type") != "text":
                    raise Invalid(f"messages[{i}]: invalid content part")
        elif content is None:
            if not (role == "assistant" and m.get("tool_calls")):
                raise Invalid(f"messages[{i}].content must be a string")
        elif not isinstance(content, str):
            raise Invalid(f"messages[{i}].content must be a string or parts")
        for tc in m.get("tool_calls") or ():
            if role != "assistant":
                raise Invalid("only assistant messages may carry tool_calls")
            if not isinstance(tc.get("id"), str) or tc.get("type") != "function":
                raise Invalid(f"messages[{i}].tool_calls needs id and type")
            if not isinstance(tc["function"].get("arguments"), str):
                raise Invalid(f"messages[{i}].tool_calls[].function.arguments must be a string")
            pending.append(tc["id"])
    if pending:
        raise Invalid(f"tool calls without results: {pending}")


class FakeUpstream:
    def __init__(self, models: list[str] | None = None, api_key: str = "sk-test-upstream") -> None:
        self.default_models = models or ["gpt-4o-mini", "qwen3:8b", "text-embedding-3-small"]
        self.models = list(self.default_models)
        self.api_key = api_key
        self.journal: list[dict[str, Any]] = []
        self.extra_params: set[str] = set()  # parameters accepted beyond OpenAI's (vLLM-like)
        # Extra fields of /v1/models entries, as OpenRouter (context_length, supported_parameters)
        # or vLLM (max_model_len) publish them.
        self.model_entries: dict[str, dict[str, Any]] = {}
        self.completions_supported = True
        self.scripts: deque[Script] = deque()
        # Standing answers for clients we cannot script request by request (JS, n8n): the first
        # rule whose predicate accepts the request body answers it, when no script is queued.
        self.rules: list[tuple[Callable[[dict[str, Any]], bool], Script]] = []
        # Faults on any endpoint: the first (predicate, script) whose predicate accepts the
        # request's (path, decoded body or None) answers it, before scripts and rules. Honoured:
        # status, first_delay, json_body, truncate_body; and, streamed, the chunks (raw strings
        # included), delay and drop_after.
        self.faults: list[tuple[Callable[[str, Any], bool], Script]] = []
        self.cancelled: list[float] = []  # monotonic times at which a stream's client went away
        self.in_progress = 0  # requests being answered right now
        # Every request target as it arrived (path and query, undecoded), routed or not: what a
        # client could make the proxy ask the backend for.
        self.targets: list[str] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # --- control ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def reset(self) -> None:
        self.rules.clear()
        self.faults.clear()
        self.models = list(self.default_models)
        self.extra_params.clear()
        self.completions_supported = True
        self.scripts.clear()
        self.journal.clear()
        self.targets.clear()
        self.cancelled.clear()

    def last(self, path: str = "/v1/chat/completions") -> Any:
        for entry in reversed(self.journal):
            if entry["path"] == path:
                return entry
        raise AssertionError(f"no request to {path}")

    def start(self) -> FakeUpstream:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)

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
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model:.+}", self._model)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    # --- handlers ---------------------------------------------------------------------------

    def _auth(self, request: web.Request) -> web.Response | None:
        if not self.api_key:  # a local backend without keys (vLLM, llama.cpp)
            return None
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _fail("Incorrect API key provided.", 401, "invalid_api_key")
        return None

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self.journal.append({"path": request.path, "headers": dict(request.headers), "body": body})
        return body

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if (denied := self._auth(request)) is not None:
            return denied
        fault = self._fault(request, None)
        if fault is not None:
            if (early := await self._fault_start(fault)) is not None:
                return early
        elif self.scripts and self.scripts[0].status >= 400:
            return await self._error(self.scripts.popleft())
        data = [
            {
                "id": m,
                "object": "model",
                "created": 1721172741,
                "owned_by": "system",
                **self.model_entries.get(m, {}),
            }
            for m in self.models
        ]
        return await self._send_json(request, {"object": "list", "data": data}, fault)

    async def _model(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        fault = self._fault(request, None)
        if fault is not None and (early := await self._fault_start(fault)) is not None:
            return early
        model = request.match_info["model"]
        if model not in self.models:
            return _fail(f"The model `{model}` does not exist", 404, "model_not_found")
        return await self._send_json(
            request,
            {"id": model, "object": "model", "created": 1721172741, "owned_by": "system"},
            fault,
        )

    async def _error(self, s: Script) -> web.Response:
        body = (
            s.error
            if s.error is not None
            else {"error": {"message": "boom", "type": "server_error"}}
        )
        if isinstance(body, bytes | str):
            return web.Response(
                body=body, status=s.status, headers=s.headers, content_type="text/plain"
            )
        return web.json_response(body, status=s.status, headers=s.headers)

    def _fault(self, request: web.Request, body: Any) -> Script | None:
        for accepts, script in self.faults:
            if accepts(request.path, body):
                return script
        return None

    async def _fault_start(self, s: Script) -> web.Response | None:
        """A fault's error answer; else None once its first_delay is over (the answer follows)."""
        if s.status >= 400:
            return await self._error(s)
        if s.first_delay:
            await asyncio.sleep(s.first_delay)
        return None

    async def _send_json(
        self,
        request: web.Request,
        answer: Any,
        s: Script | None,
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        """A non-streamed answer, or the script's ``json_body`` instead; cut in the middle if the
        script says ``truncate_body``."""
        if s is not None and s.json_body is not None:
            answer = s.json_body
        if s is None or not s.truncate_body:
            return web.json_response(answer, headers=headers)
        data = orjson.dumps(answer)
        resp = web.StreamResponse(headers={"Content-Type": "application/json", **(headers or {})})
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        assert request.transport is not None
        request.transport.close()  # abrupt: fewer bytes than Content-Length promised
        return resp

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if (denied := self._auth(request)) is not None:
            return denied
        fault = self._fault(request, body)
        if fault is not None:
            if (early := await self._fault_start(fault)) is not None:
                return early
        elif self.scripts:
            s = self.scripts.popleft()
            if s.status >= 400:
                return await self._error(s)
        if not isinstance(body, dict):
            return _fail("We could not parse the JSON body of your request.")
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if (
            not isinstance(inputs, list)
            or not inputs
            or any(not isinstance(i, str) or not i for i in inputs)
        ):
            return _fail("'$.input' is invalid.")
        if not isinstance(body.get("model"), str) or body["model"] not in self.models:
            return _fail(f"The model `{body.get('model')}` does not exist", 404, "model_not_found")
        data = [
            {"object": "embedding", "index": i, "embedding": [3.0, 4.0 + i, 0.0]}
            for i, _ in enumerate(inputs)
        ]
        return await self._send_json(
            request,
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
            },
            fault,
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if (denied := self._auth(request)) is not None:
            return denied
        fault = self._fault(request, body)
        if fault is not None and (early := await self._fault_start(fault)) is not None:
            return early
        try:
            validate_params(body, COMPLETION_PARAMS, self.extra_params)
            assert isinstance(body, dict)
            if not isinstance(body.get("prompt"), str):
                raise Invalid("prompt must be a string")
            logprobs = body.get("logprobs")
            if logprobs is not None and (
                type(logprobs) is not int or not 0 <= logprobs <= 5  # an integer, not a bool
            ):
                raise Invalid("logprobs must be an integer from 0 to 5")
        except (Invalid, TypeError, AttributeError) as exc:
            return _fail(str(exc))
        if body["model"] not in self.models:
            return _fail(
                f"The model `{body['model']}` does not exist or you do not have access to it.",
                404,
                "model_not_found",
            )
        if not self.completions_supported:
            # What OpenAI answers for chat models on the legacy endpoint.
            return _fail(
                "This is a chat model and not supported in the v1/completions endpoint. "
                "Did you mean to use v1/chat/completions?",
                404,
                None,
            )
        s = fault or (self.scripts.popleft() if self.scripts else Script())
        texts = [c.get("content") or "" for c in s.chunks if isinstance(c, dict)]
        env = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            return await self._send_json(
                request,
                {
                    **env,
                    "choices": [
                        {"index": 0, "text": "".join(texts), "finish_reason": s.finish_reason}
                    ],
                    "usage": s.usage,
                },
                fault,
            )
        if fault is not None:
            return await self._write_events(request, self._completion_events(body, env, s), s)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for text in texts:
            chunk = {**env, "choices": [{"index": 0, "text": text, "finish_reason": None}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        last = {**env, "choices": [{"index": 0, "text": "", "finish_reason": s.finish_reason}]}
        await resp.write(b"data: " + orjson.dumps(last) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(
                b"data: " + orjson.dumps({**env, "choices": [], "usage": s.usage}) + b"\n\n"
            )
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    @staticmethod
    def _completion_events(body: dict[str, Any], env: dict[str, Any], s: Script) -> list[bytes]:
        """A faulty /v1/completions stream: like the usual one, with raw string chunks passed as
        they are and the final chunk and [DONE] only when the script has them."""
        events: list[bytes] = []
        for c in s.chunks:
            if isinstance(c, str):
                events.append(b"data: " + c.encode() + b"\n\n")
                continue
            text = c.get("content") or ""
            chunk = {**env, "choices": [{"index": 0, "text": text, "finish_reason": None}]}
            events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if s.finish_reason:
            last = {**env, "choices": [{"index": 0, "text": "", "finish_reason": s.finish_reason}]}
            events.append(b"data: " + orjson.dumps(last) + b"\n\n")
        if s.usage and (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                b"data: " + orjson.dumps({**env, "choices": [], "usage": s.usage}) + b"\n\n"
            )
        if s.done_marker:
            events.append(b"data: [DONE]\n\n")
        return events

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if (denied := self._auth(request)) is not None:
            return denied
        if not isinstance(body, dict):
            return _fail("We could not parse the JSON body of your request.")
        fault = self._fault(request, body)
        s = fault or (self.scripts.popleft() if self.scripts else self._rule(body))
        if s.status >= 400:
            return await self._error(s)
        try:
            validate_chat(body, self.extra_params)
        except Invalid as exc:
            return _fail(str(exc))
        except (TypeError, AttributeError, KeyError, IndexError) as exc:
            return _fail(f"Invalid request body: {exc}")  # OpenAI validates every shape: 400
        if body["model"] not in self.models:
            return _fail(
                f"The model `{body['model']}` does not exist or you do not have access to it.",
                404,
                "model_not_found",
            )
        if s.raw_body is not None:
            return await self._raw(request, s)
        if s.first_delay:
            await asyncio.sleep(s.first_delay)
        if not body.get("stream"):
            return await self._send_json(request, self._completion(body, s), s, s.headers)
        return await self._stream(request, body, s)

    def _rule(self, body: Any) -> Script:
        for accepts, script in self.rules:
            if isinstance(body, dict) and accepts(body):
                return script
        return Script()

    @staticmethod
    def _envelope(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1767000000,
            "model": body["model"] + "-2024-07-18",
        }

    def _completion(self, body: dict[str, Any], s: Script) -> Any:
        message = s.message
        if message is None:
            text = "".join(c.get("content") or "" for c in s.chunks if isinstance(c, dict))
            message = {"role": "assistant", "content": text}
        return {
            **self._envelope(body),
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": s.finish_reason}],
            "usage": s.usage,
        }

    def _sse_body(self, body: dict[str, Any], s: Script) -> list[bytes]:
        env = self._envelope(body)
        events: list[bytes] = []
        first = {
            **env,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
        events.append(b"data: " + orjson.dumps(first) + b"\n\n")
        for delta in s.chunks:
            if isinstance(delta, str):
                events.append(b"data: " + delta.encode() + b"\n\n")
                continue
            chunk = {**env, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if s.finish_reason:
            last = {**env, "choices": [{"index": 0, "delta": {}, "finish_reason": s.finish_reason}]}
            events.append(b"data: " + orjson.dumps(last) + b"\n\n")
        if s.usage and (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                b"data: " + orjson.dumps({**env, "choices": [], "usage": s.usage}) + b"\n\n"
            )
        if s.done_marker:
            events.append(b"data: [DONE]\n\n")
        return events

    async def _stream(
        self, request: web.Request, body: dict[str, Any], s: Script
    ) -> web.StreamResponse:
        return await self._write_events(request, self._sse_body(body, s), s)

    async def _write_events(
        self, request: web.Request, events: list[bytes], s: Script
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": s.content_type or "text/event-stream", **s.headers}
        )
        await resp.prepare(request)
        if s.split_at:
            blob = b"".join(events)
            events = [blob[i : i + s.split_at] for i in range(0, len(blob), s.split_at)]
        try:
            for n, piece in enumerate(events):
                if s.drop_after is not None and n >= s.drop_after:
                    assert request.transport is not None
                    request.transport.close()  # abrupt: no chunked terminator
                    return resp
                await resp.write(piece)
                if s.delay:
                    await asyncio.sleep(s.delay)
                if s.stall_after is not None and n + 1 == s.stall_after:
                    await asyncio.sleep(3)
            await resp.write_eof()
        except ConnectionResetError:
            self.cancelled.append(time.monotonic())
        except asyncio.CancelledError:
            self.cancelled.append(time.monotonic())
            raise
        return resp

    async def _raw(self, request: web.Request, s: Script) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": s.content_type or "text/event-stream"})
        await resp.prepare(request)
        blob = s.raw_body or b""
        step = s.split_at or len(blob) or 1
        for i in range(0, len(blob), step):
            await resp.write(blob[i : i + step])
            if s.delay:
                await asyncio.sleep(s.delay)
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp
