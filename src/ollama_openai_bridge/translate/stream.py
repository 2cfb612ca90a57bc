"""OpenAI chat-completion stream -> Ollama NDJSON stream (contract §3, §4.2).

:class:`StreamTranslator` is fed the ``data`` of each SSE event and returns the NDJSON bytes to
send, knowing nothing of HTTP. The rules it keeps, and the clients that need them:

* no line for role-only or empty deltas -- Open WebUI turns an empty non-final line into a
  ``finish_reason: "stop"`` chunk (utils/misc.py:819);
* ``thinking`` only when non-empty -- @langchain/ollama shows ``thinking ?? content``, so an empty
  string would hide the text (chat_models.ts:810);
* tool calls arrive in fragments; they are assembled (``normalise.ToolCallAssembler``) and each
  is sent whole on its own line as soon as it is complete, with ``function.index`` and ``id``, as
  Ollama does (ollama/ollama#7836) -- Haystack's streaming accumulator counts one call per line;
* token counts only on the final line -- @langchain/ollama sums them over every line;
* exactly one ``done: true`` line, last, with ``done_reason`` and durations in nanoseconds.

The backend's events are read by :class:`~ollama_openai_bridge.translate.chunks.ChunkReader`,
the intake the Anthropic and Responses streams share; this module writes Ollama's lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from ollama_openai_bridge.translate.answer import done_reason, tool_call_to_ollama
from ollama_openai_bridge.translate.chunks import ChunkReader
from ollama_openai_bridge.translate.durations import metrics
from ollama_openai_bridge.translate.ndjson import dumps, line, rfc3339
from ollama_openai_bridge.translate.normalise import ToolCall


class StreamTranslator(ChunkReader):
    """The Ollama NDJSON writer over :class:`~ollama_openai_bridge.translate.chunks.ChunkReader`
    (which reads every backend's event shapes)."""

    __slots__ = (
        "_clock",
        "_context_of",
        "_first_ns",
        "_generate",
        "_last_ns",
        "_prefix",
        "_said",
        "_sent_ns",
        "_start_ns",
        "_ts",
        "_wall",
    )

    def __init__(
        self,
        model: str,
        *,
        generate: bool,
        think: bool,
        start_ns: int,
        think_tags: bool = False,
        clock: Callable[[], int] = time.perf_counter_ns,
        wall: Callable[[], int] = time.time_ns,
        context_of: Callable[[str, list[str]], list[int]] | None = None,
        logprobs: bool = False,
    ) -> None:
        """``context_of(answer, notes)``: the ``context`` for the final generate line, from
        the whole answer text (translate/conversation.py); None: no context (chat, raw).
        ``logprobs``: the client asked for them; each line carries those of its tokens."""
        super().__init__(model, think=think, think_tags=think_tags, logprobs=logprobs)
        # Every line starts the same way: encode the model name once per stream.
        self._prefix = b'{"model":' + dumps(model) + b',"created_at":"'
        self._generate = generate
        self._context_of = context_of
        self._said: list[str] | None = [] if context_of is not None else None  # answer text
        self._start_ns = start_ns
        self._sent_ns = 0  # when the request left for the backend (sent()); 0: unknown
        self._clock = clock
        self._wall = wall
        self._first_ns = 0
        self._last_ns = 0
        self._ts = b""
        self.stamp()

    def sent(self, ns: int) -> None:
        """The request left for the backend at ``ns`` (the ``clock``'s reading): the time from
        arrival to then is ``load_duration``, Ollama's time to load the model, and the prompt
        evaluation starts there."""
        self._sent_ns = ns

    def _write(
        self,
        content: str | None,
        thinking: str | None,
        ready: list[ToolCall] | None,
        calls: list[Any] | None,
    ) -> bytes:
        if not content and not thinking:
            if calls:
                self._tick()
            return self._call_lines(ready) if ready else b""
        self._tick()
        out = self._text_line(content or "", thinking)
        return out + self._call_lines(ready) if ready else out

    def _tick(self) -> None:
        now = self._clock()
        if not self._first_ns:
            self._first_ns = now
        self._last_ns = now

    # --- output -----------------------------------------------------------------------------

    def stamp(self) -> None:
        """Take the time for the lines that follow. The caller stamps once per network read:
        events that arrived together share their arrival time, and formatting a timestamp per
        line was a measurable part of the per-chunk cost."""
        self._ts = rfc3339(self._wall()).encode()

    def _text_line(self, content: str, thinking: str | None) -> bytes:
        if self._said is not None:
            self._said.append(content)
        ts = self._ts
        extra = b',"thinking":' + dumps(thinking) if thinking else b""
        end = b',"done":false}\n'
        if self._lp:  # Ollama's Logprobs, top level, per line (api/types.go ChatResponse)
            end = b',"done":false,"logprobs":' + orjson.dumps(self._lp) + b"}\n"
            self._lp = []
        if self._generate:
            return self._prefix + ts + b'","response":' + dumps(content) + extra + end
        return (
            self._prefix
            + ts
            + b'","message":{"role":"assistant","content":'
            + dumps(content)
            + extra
            + b"}"
            + end
        )

    def _call_lines(self, calls: list[ToolCall]) -> bytes:
        """One line per whole call (ollama/ollama#7836). A generate stream has no place for
        calls: Ollama's own /api/generate sends none."""
        if self._generate:
            self.notes.append("tool calls in a generate stream are not supported; dropped")
            return b""
        out = b""
        start = self._calls.given - len(calls)
        for i, call in enumerate(calls):
            ollama = tool_call_to_ollama(call, start + i, self.notes)
            out += line(
                {
                    "model": self._model,
                    "created_at": self._ts.decode(),
                    "message": {"role": "assistant", "content": "", "tool_calls": [ollama]},
                    "done": False,
                }
            )
            self.made.append((call, ollama))  # only once its line exists: it will be sent
        return out

    def _end(self) -> bytes:
        """The calls not sent yet (each on its own line) and the single final ``done: true``
        line."""
        end = self._clock()
        created_at = rfc3339(self._wall())
        out = b""
        content, thinking, rest = self._held()
        if content or thinking:
            out += self._text_line(content, thinking)
        if rest:
            self._ts = created_at.encode()
            out += self._call_lines(rest)
        final: dict[str, Any] = {"model": self._model, "created_at": created_at}
        if self._generate:
            final["response"] = ""  # @langchain/ollama's Ollama LLM ignores text on this line
        else:
            final["message"] = {"role": "assistant", "content": ""}
        final["done"] = True
        final["done_reason"] = done_reason(self._finish)
        if self._lp:  # scored tokens no text line carried (a chunk of logprobs alone)
            final["logprobs"] = self._lp
        if self._context_of is not None and self._said is not None:
            final["context"] = self._context_of("".join(self._said), self.notes)
        first = self._first_ns or end
        sent = self._sent_ns or self._start_ns
        final.update(
            metrics(
                self._usage,
                end - self._start_ns,
                first - sent,
                self._last_ns - first,
                max(sent - self._start_ns, 1) if self._sent_ns else 0,
            )
        )
        out += line(final)
        return out
