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

Fields are type-checked where they are read (:func:`~ollama_openai_proxy.translate.chat.expect`),
inside ``feed``'s guard: a wrong type is refused quoting its event, never relayed (ollama-python
validates every line) nor left to fail in :meth:`StreamTranslator.finish`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ollama_openai_proxy.errors import SHAPE_ERRORS, malformed
from ollama_openai_proxy.translate.answer import done_reason, tool_call_to_ollama
from ollama_openai_proxy.translate.durations import metrics
from ollama_openai_proxy.translate.ndjson import dumps, line, rfc3339
from ollama_openai_proxy.translate.normalise import (
    ToolCall,
    ToolCallAssembler,
    completion_of,
    content_parts,
    expect,
    logprobs_of,
    reasoning_of,
)
from ollama_openai_proxy.translate.thinktags import ThinkSplitter
from ollama_openai_proxy.upstream_errors import stream_error


class StreamTranslator:
    __slots__ = (
        "_calls",
        "_clock",
        "_context_of",
        "_finish",
        "_first_ns",
        "_generate",
        "_last_ns",
        "_lp",
        "_model",
        "_prefix",
        "_reasoned",
        "_said",
        "_sent_ns",
        "_start_ns",
        "_tags",
        "_think",
        "_ts",
        "_usage",
        "_wall",
        "adapted",
        "done",
        "made",
        "notes",
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
        self._model = model
        # Every line starts the same way: encode the model name once per stream.
        self._prefix = b'{"model":' + dumps(model) + b',"created_at":"'
        self._generate = generate
        self._think = think
        # A backend profile that may leave reasoning as <think>...</think> in content.
        self._tags = ThinkSplitter() if think_tags else None
        self._reasoned = False  # a reasoning field was seen: tagged text is a copy of it
        self._context_of = context_of
        # The log probabilities not yet sent (None: not asked for): each text line takes them.
        self._lp: list[dict[str, Any]] | None = [] if logprobs else None
        self._said: list[str] | None = [] if context_of is not None else None  # answer text
        self._start_ns = start_ns
        self._sent_ns = 0  # when the request left for the backend (sent()); 0: unknown
        self._clock = clock
        self._wall = wall
        self._calls = ToolCallAssembler()
        self._finish: str | None = None
        self._usage: Mapping[str, Any] | None = None
        self._first_ns = 0
        self._last_ns = 0
        self._ts = b""
        self.stamp()
        self.done = False  # the backend said [DONE]
        self.notes: list[str] = self._calls.notes  # one list: the assembler's notes too
        self.adapted: list[str] = []  # for the DEBUG log: what was done for the backend
        # The calls sent, with their Ollama shape: what the next turn may need back of them
        # (translate/carry.py).
        self.made: list[tuple[ToolCall, dict[str, Any]]] = []

    @property
    def usage(self) -> Mapping[str, Any] | None:
        """The backend's token usage, once its usage chunk has arrived."""
        return self._usage

    def sent(self, ns: int) -> None:
        """The request left for the backend at ``ns`` (the ``clock``'s reading): the time from
        arrival to then is ``load_duration``, Ollama's time to load the model, and the prompt
        evaluation starts there."""
        self._sent_ns = ns

    # --- input ------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """The backend ended its answer properly: ``[DONE]`` or a ``finish_reason`` arrived. A
        stream that stops before either was cut short, and must not look complete."""
        return self.done or self._finish is not None

    def feed(self, data: str) -> bytes:
        """One SSE ``data`` payload -> NDJSON bytes to send (maybe empty).

        Raises :class:`UpstreamStatusError` for an error event and
        :class:`UpstreamProtocolError` (quoting the event) for one of the wrong shape."""
        if data == "[DONE]":
            self.done = True
            return b""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise malformed("a stream event that is not JSON", data) from None
        if not isinstance(chunk, dict):
            raise malformed("a stream event that is not an object", data)
        try:
            return self.feed_chunk(chunk)
        except SHAPE_ERRORS:
            # a wrong type anywhere in the event: e.g. {"choices":["x"]}, tool_calls an object
            raise malformed("a malformed stream event", data) from None

    def feed_chunk(self, chunk: Mapping[str, Any]) -> bytes:
        """One decoded event; a field of the wrong type raises TypeError (the caller's guard
        makes it :func:`malformed`)."""
        err = chunk.get("error")
        if err:
            raise stream_error(err, client_model=self._model, endpoint="/chat/completions")
        usage = chunk.get("usage")
        if usage is not None and expect(usage, dict):  # null on every chunk but one: no call
            self._usage = usage
        choices = chunk.get("choices")
        if not choices:
            if chunk.get("object") == "error":  # vLLM's error object, as an event
                raise stream_error(chunk, client_model=self._model, endpoint="/chat/completions")
            return b""
        choice = choices[0]
        if self._lp is not None:
            lp = choice.get("logprobs")
            if lp:
                self._lp.extend(logprobs_of(lp))
        finish = choice.get("finish_reason")
        if finish is not None and expect(finish, str):
            self._finish = finish
        delta = choice.get("delta") or choice.get("message")
        if delta is None and "text" in choice:
            delta = {"content": choice["text"]}  # /v1/completions streams text, not deltas
        if not delta:
            return b""
        return self._delta(delta)

    def feed_completion(self, resp: Any) -> bytes:
        """A backend that ignored ``stream: true`` and answered one JSON completion."""
        resp = completion_of(resp, self._model)
        try:
            out = self.feed_chunk(resp)
        except SHAPE_ERRORS:
            raise malformed("an answer that is not a completion", resp) from None
        self.done = True
        return out

    def _delta(self, delta: Mapping[str, Any]) -> bytes:
        content = delta.get("content")
        parted = None
        if content is not None and not isinstance(content, str):
            content, parted = content_parts(content)  # Magistral's typed parts
        thinking = reasoning_of(delta) if self._think else None
        if parted and self._think:
            thinking = thinking + parted if thinking else parted
        if content and self._tags is not None:
            content, tagged = self._tags.feed(content)
            if thinking:
                self._reasoned = True  # the backend separates it: tags only repeat it
            elif tagged and self._think and not self._reasoned:
                thinking = tagged
            if tagged and not self.adapted:
                self.adapted.append("reasoning split out of <think> tags in the content")
        calls = delta.get("tool_calls")
        ready = None
        if calls is not None and expect(calls, list):
            ready = self._calls.add(calls)
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

    def finish(self) -> bytes:
        """The tool calls not sent yet (each on its own line) and the single final ``done: true``
        line.

        Called after the last event, outside ``feed``'s guard: should what the events left
        still fail to translate, the error quotes it rather than escaping as a 500."""
        try:
            return self._finish_lines()
        except SHAPE_ERRORS:
            state = {
                "finish_reason": self._finish,
                "usage": self._usage,
                "calls": self._calls.state(),
            }
            raise malformed("a stream whose end cannot be translated", state) from None

    def _finish_lines(self) -> bytes:
        end = self._clock()
        created_at = rfc3339(self._wall())
        out = b""
        if self._tags is not None:
            content, thinking = self._tags.flush()
            keep = thinking if self._think and not self._reasoned else None
            if content or keep:
                out += self._text_line(content, keep)
        if self._calls:
            self._ts = created_at.encode()
            rest = self._calls.drain()
            if rest:
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
