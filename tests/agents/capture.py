"""Record what Claude Code and Codex send to an Ollama server, by playing one (issue #17).

A loopback server speaks just enough of three protocols for an agent to finish a task that uses
one of its own tools: the Anthropic Messages API (``POST /v1/messages``, streamed or not), the
OpenAI Responses API (``POST /v1/responses``, streamed) and Ollama's probes (``/api/version``,
``/api/tags``, ``/v1/models``, ``/api/pull``, ``/api/show``). Its first answer to a request that
offers the agent's shell tool is a call of that tool writing ``hello`` to ``proof.txt``; once the
request carries the tool's result, it answers a short final text. Every request is recorded with
the answer it got.

    python -m tests.agents.capture claude            # run, print a summary
    python -m tests.agents.capture codex --save      # ... and write tests/fixtures/agents/codex_*
    python -m tests.agents.capture claude --drop ping --no-save   # does it need ping events?

``--drop EVENT`` leaves those SSE events out of every stream, ``--no-usage`` leaves usage out of
the Responses API's final event, ``--strace`` logs every connect() the agent makes, ``--netns``
runs the whole capture in a network namespace where only loopback exists.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.agents import agents

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "agents"
MODEL = "qwen3-coder:30b"
PROOF = "printf hello > proof.txt"
FINAL = "Done: proof.txt holds hello. PROOF-OK"
SIDE = "OK"  # the answer to a request that is not the task (a title, a quota probe)
SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "cookie", "proxy-authorization"}
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):024d}"


@dataclass
class Options:
    drop: set[str] = field(default_factory=set)  # SSE event types left out of every stream
    usage: bool = True  # the Responses API's response.completed carries usage
    version: str = "0.13.5"  # what /api/version reports
    listed: str | None = None  # the model /api/tags and /v1/models list (default: the model)
    event_lines: bool = True  # SSE events carry an ``event:`` line as well as ``data:``
    thinking: str | None = None  # None, "signed" or "unsigned": open with a thinking block
    reasoning: bool = False  # Responses API answers open with a reasoning item (reasoning_text)


# --- Anthropic Messages API ------------------------------------------------------------------


def _anthropic_tool_result(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    if not messages or messages[-1].get("role") != "user":
        return False
    content = messages[-1].get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def anthropic_blocks(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The content blocks and stop reason that answer a Messages API request."""
    tools = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
    if _anthropic_tool_result(body):
        return [{"type": "text", "text": FINAL}], "end_turn"
    if "Bash" in tools:
        call = {"command": PROOF, "description": "Write hello to proof.txt"}
        return [
            {"type": "text", "text": "I will write the file."},
            {"type": "tool_use", "id": _id("toolu"), "name": "Bash", "input": call},
        ], "tool_use"
    return [{"type": "text", "text": SIDE}], "end_turn"


def anthropic_message(model: str, blocks: list[dict[str, Any]], stop: str) -> dict[str, Any]:
    return {
        "id": _id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 120,
            "output_tokens": 12,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def anthropic_events(
    model: str, blocks: list[dict[str, Any]], stop: str
) -> list[tuple[str, dict[str, Any]]]:
    """The Messages API's SSE events for a whole answer, deltas in two pieces each."""
    start = anthropic_message(model, [], "")
    start["stop_reason"] = None
    start["usage"]["output_tokens"] = 1
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(blocks):
        first: dict[str, Any]
        if block["type"] == "thinking":
            first = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": block["thinking"]}]
            if block["signature"]:
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif block["type"] == "text":
            first = {"type": "text", "text": ""}
            text = block["text"]
            deltas = [{"type": "text_delta", "text": p} for p in (text[:5], text[5:])]
        else:
            first = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            args = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": p} for p in (args[:10], args[10:])
            ]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": first},
            )
        )
        events.extend(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 12},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


# --- OpenAI Responses API --------------------------------------------------------------------


def shell_call(tools: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """A call of the agent's shell tool writing the proof file, in the arguments it takes."""
    names = {t.get("name") for t in tools if isinstance(t, dict)}
    if "exec_command" in names:
        return "exec_command", {"cmd": PROOF}
    if "shell_command" in names:
        return "shell_command", {"command": PROOF}
    if "shell" in names:
        return "shell", {"command": ["bash", "-lc", PROOF]}
    return None


def responses_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The output items that answer a Responses API request."""
    items = body.get("input")
    last = items[-1] if isinstance(items, list) and items else {}
    if isinstance(last, dict) and last.get("type") in (
        "function_call_output",
        "custom_tool_call_output",
    ):
        return [_message(FINAL)]
    call = shell_call(body.get("tools") or [])
    if call is None:
        return [_message(SIDE)]
    name, arguments = call
    return [
        {
            "id": _id("fc"),
            "type": "function_call",
            "status": "completed",
            "call_id": _id("call"),
            "name": name,
            "arguments": json.dumps(arguments),
        }
    ]


def _message(text: str) -> dict[str, Any]:
    return {
        "id": _id("msg"),
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def responses_events(
    model: str, items: list[dict[str, Any]], usage: bool
) -> list[tuple[str, dict[str, Any]]]:
    """The Responses API's SSE events for a whole answer, each with its sequence_number."""
    response: dict[str, Any] = {
        "id": _id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "model": model,
        "output": [],
        "usage": None,
    }
    raw: list[dict[str, Any]] = [
        {"type": "response.created", "response": dict(response)},
        {"type": "response.in_progress", "response": dict(response)},
    ]
    for index, item in enumerate(items):
        if item["type"] == "reasoning":
            text = item["content"][0]["text"]
            added = {**item, "content": []}
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            raw.append({"type": "response.output_item.added", "output_index": index, "item": added})
            raw.append({"type": "response.reasoning_text.delta", **where, "delta": text})
            raw.append({"type": "response.reasoning_text.done", **where, "text": text})
        elif item["type"] == "message":
            text = item["content"][0]["text"]
            added = {**item, "status": "in_progress", "content": []}
            part = {"type": "output_text", "text": "", "annotations": []}
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            raw.append({"type": "response.output_item.added", "output_index": index, "item": added})
            raw.append({"type": "response.content_part.added", **where, "part": part})
            raw.extend(
                {"type": "response.output_text.delta", **where, "delta": piece}
                for piece in (text[:5], text[5:])
            )
            raw.append({"type": "response.output_text.done", **where, "text": text})
            raw.append({"type": "response.content_part.done", **where, "part": item["content"][0]})
        else:
            added = {**item, "status": "in_progress", "arguments": ""}
            where = {"item_id": item["id"], "output_index": index}
            raw.append({"type": "response.output_item.added", "output_index": index, "item": added})
            raw.append(
                {
                    "type": "response.function_call_arguments.delta",
                    **where,
                    "delta": item["arguments"],
                }
            )
            raw.append(
                {
                    "type": "response.function_call_arguments.done",
                    **where,
                    "arguments": item["arguments"],
                }
            )
        raw.append({"type": "response.output_item.done", "output_index": index, "item": item})
    done = {**response, "status": "completed", "output": items}
    if usage:
        done["usage"] = {
            "input_tokens": 120,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 12,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 132,
        }
    raw.append({"type": "response.completed", "response": done})
    return [(e["type"], {**e, "sequence_number": n}) for n, e in enumerate(raw)]


# --- the server ------------------------------------------------------------------------------


class CaptureServer:
    """The loopback server; :attr:`log` holds every request and its answer, in order."""

    def __init__(self, model: str = MODEL, options: Options | None = None) -> None:
        self.model = model
        self.options = options or Options()
        self.log: list[dict[str, Any]] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CaptureServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="capture", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: Any
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        entry: dict[str, Any] = {
            "t": round(time.monotonic() - self._t0, 3),
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "body": body,
        }
        self.log.append(entry)
        answer = await self._answer(request, body if isinstance(body, dict) else {})
        entry["answer"] = answer
        return answer.pop("_response")  # type: ignore[no-any-return]

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        method, path = request.method, request.path
        if method in ("GET", "HEAD") and path == "/":
            return self._json(200, "Ollama is running", text=True)
        if path == "/api/version":
            return self._json(200, {"version": self.options.version})
        if path == "/api/tags":
            return self._json(200, {"models": [self._tag()]})
        if path in ("/v1/models", "/models"):
            return self._json(200, {"object": "list", "data": [self._openai_model()]})
        if path.startswith("/v1/models/"):
            return self._json(200, self._openai_model())
        if path == "/api/show":
            return self._json(200, self._show())
        if path == "/api/pull":  # NDJSON, each line ended: Codex waits for the success line
            lines = [{"status": "pulling manifest"}, {"status": "success"}]
            text = "".join(json.dumps(line) + "\n" for line in lines)
            response = web.Response(text=text, content_type="application/x-ndjson")
            return {"status": 200, "ndjson": lines, "_response": response}
        if method == "POST" and path == "/v1/messages/count_tokens":
            return self._json(200, {"input_tokens": 120})
        if method == "POST" and path == "/v1/messages":
            return await self._messages(request, body)
        if method == "POST" and path in ("/v1/responses", "/responses"):
            return await self._responses(request, body)
        return self._json(404, {"error": f"capture server: no route for {method} {path}"})

    def _json(self, status: int, payload: Any, text: bool = False) -> dict[str, Any]:
        if text:
            response = web.Response(status=status, text=payload)
        else:
            response = web.json_response(payload, status=status)
        return {"status": status, "json": payload, "_response": response}

    def _tag(self) -> dict[str, Any]:
        name = self.options.listed or self.model
        return {
            "name": name,
            "model": name,
            "modified_at": "2025-01-01T00:00:00Z",
            "size": 1,
            "digest": "0" * 64,
            "details": {"format": "gguf", "family": "qwen3", "parameter_size": "30B"},
        }

    def _openai_model(self) -> dict[str, Any]:
        return {
            "id": self.options.listed or self.model,
            "object": "model",
            "created": 1735689600,
            "owned_by": "library",
        }

    def _show(self) -> dict[str, Any]:
        return {
            "details": {"format": "gguf", "family": "qwen3", "parameter_size": "30B"},
            "model_info": {"general.architecture": "qwen3", "qwen3.context_length": 65536},
            "capabilities": ["completion", "tools"],
        }

    async def _messages(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        blocks, stop = anthropic_blocks(body)
        if self.options.thinking:
            signature = "c2lnbmF0dXJl" if self.options.thinking == "signed" else ""
            thought = {
                "type": "thinking",
                "thinking": "The user wants a file.",
                "signature": signature,
            }
            blocks = [thought, *blocks]
        model = str(body.get("model") or self.model)
        if not body.get("stream"):
            return self._json(200, anthropic_message(model, blocks, stop))
        events = anthropic_events(model, blocks, stop)
        return await self._sse(request, events)

    async def _responses(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
        items = responses_items(body)
        if self.options.reasoning:
            text = [{"type": "reasoning_text", "text": "The user wants a file."}]
            items = [{"id": _id("rs"), "type": "reasoning", "summary": [], "content": text}, *items]
        model = str(body.get("model") or self.model)
        if not body.get("stream"):
            return self._json(404, {"error": "capture server: non-streamed responses not played"})
        events = responses_events(model, items, self.options.usage)
        return await self._sse(request, events)

    async def _sse(
        self, request: web.Request, events: list[tuple[str, dict[str, Any]]]
    ) -> dict[str, Any]:
        events = [(name, data) for name, data in events if name not in self.options.drop]
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for name, data in events:
            head = f"event: {name}\n" if self.options.event_lines else ""
            await response.write(f"{head}data: {json.dumps(data)}\n\n".encode())
        await response.write_eof()
        return {
            "status": 200,
            "sse": [{"event": n, "data": d} for n, d in events],
            "_response": response,
        }


# --- runs and fixtures -----------------------------------------------------------------------


def run_agent(
    agent: str,
    options: Options,
    trace: Path | None,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> tuple[agents.Run, list[dict[str, Any]], list[str], dict[str, str]]:
    """Run one agent against a capture server: (the run, the log, proxy asks, paths to hide)."""
    scratch = Path(tempfile.mkdtemp(prefix=f"capture-{agent}-", dir=os.environ.get("CAPTURE_TMP")))
    home, work = scratch / "home", scratch / "work"
    home.mkdir()
    work.mkdir()
    with CaptureServer(MODEL, options) as server, agents.Blackhole() as hole:
        if agent == "claude":
            env = agents.claude_env(server.url, home, MODEL)
            argv = agents.claude_argv(agents.CLAUDE_PROMPT, MODEL)
        else:
            env = agents.codex_env(server.url + "/v1", home)
            argv = agents.codex_argv(agents.CODEX_PROMPT, MODEL, work)
        env.update(hole.env())
        env.update(extra_env or {})
        argv[-1:-1] = extra_args or []  # before Codex's prompt, among Claude Code's options
        if trace is not None:
            argv = ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace), *argv]
        result = agents.run(argv, env, work)
        log = list(server.log)
        proof = work / "proof.txt"
        result.stdout += (
            f"\n[capture] proof.txt: {proof.read_text()!r}"
            if proof.exists()
            else ("\n[capture] proof.txt: missing")
        )
        hide = {
            str(agents.HERE): "tests/agents",
            str(work): "<workdir>",
            str(home): "<home>",
            str(scratch): "<scratch>",
        }
        hide[re.sub(r"[^A-Za-z0-9]", "-", str(work))] = "-<workdir>"  # Claude Code's project dir
        hide[f"127.0.0.1:{server.port}"] = "127.0.0.1:<port>"
        hide[f"127.0.0.1:{hole.port}"] = "127.0.0.1:<blackhole>"
        asked = list(hole.asked)
    if os.environ.get("CAPTURE_KEEP"):
        print(f"[capture] kept {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return result, log, asked, hide


def _hide_secret(name: str, value: str) -> str:
    """A secret header's value replaced, its scheme (``Bearer``) kept."""
    if name.lower() not in SECRET_HEADERS or not value:
        return value
    scheme, _, token = value.partition(" ")
    return f"{scheme} <redacted>" if token else "<redacted>"


def redact(entry: dict[str, Any], hide: dict[str, str]) -> dict[str, Any]:
    headers = {k.lower(): _hide_secret(k, v) for k, v in entry["headers"].items()}
    text = json.dumps({**entry, "headers": headers})
    for real, shown in sorted(hide.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(json.dumps(real)[1:-1], shown)
    redacted: dict[str, Any] = json.loads(text)
    return redacted


def _slug(entry: dict[str, Any]) -> str:
    return re.sub(r"[^a-z0-9]+", "_", f"{entry['method']} {entry['path']}".lower()).strip("_")


BIG = 2000  # characters: a repeated value this long is replaced by a reference


def _big_values(body: Any) -> list[Any]:
    """The values :func:`save` may replace: big fields, and messages or input items."""
    if not isinstance(body, dict):
        return []
    values = [body[k] for k in ("system", "tools", "instructions") if k in body]
    for key in ("messages", "input"):
        if isinstance(body.get(key), list):
            values.extend(body[key])
    return values


def _same_as(value: Any, seen: dict[str, str], name: str) -> Any:
    """``value``, or a reference to the file that already holds it whole."""
    blob = json.dumps(value, sort_keys=True)
    digest = _digest(value)  # an item's own id aside: Codex gives items new ids every run
    if len(blob) <= BIG:
        return value
    if digest not in seen:
        seen[digest] = name
        return value
    ref: dict[str, Any] = {"$same_as": seen[digest], "sha256": digest, "chars": len(blob)}
    if isinstance(value, dict):  # keep what says what the item is
        ref = {k: value[k] for k in ("type", "role", "id") if k in value} | ref
    return ref


def _digest(value: Any) -> str:
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "id"}
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def save(
    prefix: str, log: list[dict[str, Any]], hide: dict[str, str], notes: dict[str, Any]
) -> list[Path]:
    """One file per request (``<prefix>_NN_<method>_<path>.json``) and a sequence file.

    Big values that repeat another request's exactly (``system``, ``tools``, ``instructions``,
    single ``messages`` or ``input`` items), in this run or in a fixture already saved, are
    replaced by ``{"$same_as": file, "sha256": ..., "chars": ...}`` (an item keeps its ``type``,
    ``role`` and ``id``): the first file that carries a value keeps it whole."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    mine = re.compile(rf"{re.escape(prefix)}_(\d\d_.*|sequence)\.json")
    seen: dict[str, str] = {}  # a big field's digest -> the first file that holds it whole
    for other in sorted(FIXTURES.glob("*.json")):
        if mine.fullmatch(other.name):
            other.unlink()
            continue
        for value in _big_values(json.loads(other.read_text()).get("body")):
            if not (isinstance(value, dict) and "$same_as" in value):
                seen.setdefault(_digest(value), other.name)
    written: list[Path] = []
    sequence = []
    for n, raw in enumerate(log, 1):
        entry = redact(raw, hide)
        name = f"{prefix}_{n:02d}_{_slug(entry)}.json"
        body = entry.get("body")
        if isinstance(body, dict):
            for key in ("system", "tools", "instructions"):
                if key in body:
                    body[key] = _same_as(body[key], seen, name)
            for key in ("messages", "input"):
                if isinstance(body.get(key), list):
                    body[key] = [_same_as(item, seen, name) for item in body[key]]
        sequence.append(
            {
                "file": name,
                "t": entry["t"],
                "method": entry["method"],
                "path": entry["path"],
                "query": entry["query"],
                "status": entry["answer"]["status"],
                "events": [e["event"] for e in entry["answer"].get("sse", [])],
            }
        )
        path = FIXTURES / name
        path.write_text(json.dumps(entry, indent=1, ensure_ascii=False) + "\n")
        written.append(path)
    seq = FIXTURES / f"{prefix}_sequence.json"
    seq.write_text(json.dumps({**notes, "requests": sequence}, indent=1) + "\n")
    written.append(seq)
    return written


def non_loopback(trace: Path) -> list[str]:
    """The connect() calls in an strace log that went anywhere but loopback or a local socket."""
    found = []
    for line in trace.read_text().splitlines():
        if "AF_UNIX" in line or "connect(" not in line:
            continue
        if re.search(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"', line):
            continue
        if "AF_INET" in line:
            found.append(line.split(" ", 1)[1][:200])
    return found


# The fixtures in tests/fixtures/agents: prefix -> arguments (`python -m tests.agents.capture all`).
VARIANTS = {
    "claude_code": ["claude"],
    "codex": ["codex"],
    # No message_start: Claude Code gives up on the stream and asks again with stream false.
    "claude_code_fallback": ["claude", "--drop", "message_start"],
    # Without experimental betas: every tool in full, no defer_loading, fewer body fields.
    "claude_code_nobetas": ["claude", "--env", "CLAUDE_CODE_DISABLE_EXPERIMENTAL_BETAS=1"],
    # A thinking block without signature, and how it comes back in the next request.
    "claude_code_thinking": ["claude", "--thinking", "unsigned"],
    # A reasoning item (reasoning_text), and how it comes back in the next request's input.
    "codex_reasoning": ["codex", "--reasoning"],
    # /api/tags lists no exact match for the model: Codex pulls it first.
    "codex_pull": ["codex", "--listed", "qwen3-coder:latest"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("agent", choices=("claude", "codex", "all"), help="all: every VARIANT")
    parser.add_argument("--save", action="store_true", help="write tests/fixtures/agents/")
    parser.add_argument("--drop", default="", help="SSE event types to leave out, comma-separated")
    parser.add_argument("--no-usage", action="store_true")
    parser.add_argument("--reasoning", action="store_true", help="add a reasoning item")
    parser.add_argument("--thinking", choices=("signed", "unsigned"), help="add a thinking block")
    parser.add_argument("--no-event-lines", action="store_true", help="SSE with data: lines only")
    parser.add_argument("--version", default="0.13.5", help="what /api/version reports")
    parser.add_argument("--listed", default=None, help="the model name /api/tags lists")
    parser.add_argument("--strace", action="store_true", help="log the agent's connect() calls")
    parser.add_argument("--netns", action="store_true", help="run where only loopback exists")
    parser.add_argument("--show", default="", help="print these requests' bodies (1-based, comma)")
    parser.add_argument("--prefix", default="", help="fixture names' prefix (default: the agent's)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the agent")
    parser.add_argument(
        "--arg", action="append", default=[], help="one more argument for the agent"
    )
    args = parser.parse_args(argv)
    if args.netns and os.environ.get("CAPTURE_IN_NETNS") != "1":
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--netns"]
        os.environ["CAPTURE_IN_NETNS"] = "1"
        script = 'ip link set lo up && exec "$@"'
        inner = [sys.executable, "-m", "tests.agents.capture", *rest]
        os.execvp("unshare", ["unshare", "-n", "sh", "-c", script, "sh", *inner])
    if args.agent == "all":
        failed = [p for p, v in VARIANTS.items() if main([*v, "--save", "--prefix", p]) != 0]
        print(f"[capture] failed: {failed}" if failed else "[capture] all variants passed")
        return 1 if failed else 0
    options = Options(
        drop={d for d in args.drop.split(",") if d},
        usage=not args.no_usage,
        version=args.version,
        listed=args.listed,
        event_lines=not args.no_event_lines,
        thinking=args.thinking,
        reasoning=args.reasoning,
    )
    trace = Path(tempfile.mkstemp(suffix=".strace")[1]) if args.strace else None
    extra = dict(e.split("=", 1) for e in args.env)
    result, log, asked, hide = run_agent(args.agent, options, trace, extra, args.arg)
    print(result.report())
    print(f"\n[capture] {len(log)} requests:")
    for n, e in enumerate(log, 1):
        answer = e["answer"]
        events = ",".join(x["event"] for x in answer.get("sse", []))
        body = e["body"] if isinstance(e["body"], dict) else {}
        events = f"stream={body.get('stream')!s:5} " + events if "stream" in body else events
        print(
            f"  {n:2d} {e['t']:7.3f}s {e['method']} {e['path']}{'?' if e['query'] else ''}"
            f"{'&'.join(f'{k}={v}' for k, v in e['query'].items())} -> {answer['status']} {events}"
        )
    for n in (int(x) for x in args.show.split(",") if x):
        print(f"\n[capture] request {n}:\n{json.dumps(redact(log[n - 1], hide), indent=1)[:20000]}")
    print(f"\n[capture] asked of the blackhole proxy: {asked or 'nothing'}")
    if trace is not None:
        print(f"[capture] non-loopback connect() calls: {non_loopback(trace) or 'none'}")
        trace.unlink()
    if args.save:
        agent_name = args.prefix or ("claude_code" if args.agent == "claude" else "codex")
        notes = {
            "agent": agent_name,
            "argv": [redact({"headers": {}, "a": a}, hide)["a"] for a in result.argv],
            "env": {
                k: redact({"headers": {}, "v": v}, hide)["v"] for k, v in sorted(result.env.items())
            },
            "exit": result.returncode,
            "stdout": redact({"headers": {}, "x": result.stdout}, hide)["x"],
            "options": {"drop": sorted(options.drop), "usage": options.usage},
            "blackhole": asked,
        }
        for path in save(agent_name, log, hide, notes):
            print(f"[capture] wrote {path.relative_to(FIXTURES.parents[2])}")
    return 0 if result.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
