"""The intake every chat-completion stream translator shares (the streaming half of normalise.py).

A backend's stream is read the same way whatever dialect the client speaks: Ollama NDJSON
(translate/stream.py), Anthropic Messages events (anthropic_answer.py) or Responses events
(responses_stream.py). :class:`ChunkReader` reads each event's shapes -- with normalise.py's
readers -- into ``(content, thinking, whole tool calls)`` and hands them to the dialect's
writer; one place for the per-chunk hot path and for every shape rule, so a rule fixed for one
dialect holds for all (issue #13). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ollama_openai_bridge.errors import SHAPE_ERRORS, malformed
from ollama_openai_bridge.translate.estimate import output_chars
from ollama_openai_bridge.translate.normalise import (
    ToolCall,
    ToolCallAssembler,
    completion_of,
    content_parts,
    expect,
    logprobs_of,
    reasoning_of,
)
from ollama_openai_bridge.translate.thinktags import ThinkSplitter
from ollama_openai_bridge.upstream_errors import stream_error


def matched_stop(choice: Mapping[str, Any], stops: tuple[str, ...]) -> str | None:
    """The stop sequence that ended the answer, when the backend names it: vLLM and SGLang give
    it as the choice's ``stop_reason`` (a token id when a stop token ended it). OpenAI does not
    say, so with it a stop sequence ends an answer without naming it."""
    if not stops:
        return None
    value = choice.get("stop_reason")
    return value if isinstance(value, str) and value in stops else None


_TAGGED = "reasoning split out of <think> tags in the content"


class ChunkReader:
    """The intake every chat-completion stream translator shares: fed the ``data`` of each SSE
    event, it reads the backend's shapes into ``(content, thinking, whole tool calls)`` and hands
    them to :meth:`_write`, which a dialect's translator (translate/stream.py for Ollama,
    anthropic_answer.AnthropicStream, responses_stream.ResponsesStream) turns into its bytes.

    Read here, once for all dialects: ``[DONE]``; an event that is not a JSON object; an error
    event (``{"error"}``, vLLM's ``{"object": "error"}``); the usage chunk; ``finish_reason`` and
    the stop sequence that matched; log probabilities (when asked for); a ``delta``, a whole
    ``message`` (a backend that ignored ``stream``) or ``/v1/completions``' ``text``; typed
    content parts; reasoning fields, and ``<think>`` tags in the content (backend profiles with
    ``think_tags``); tool-call fragments (:class:`ToolCallAssembler`). A field of the wrong type
    anywhere is refused quoting its event (``malformed``), never relayed (ollama-python validates
    every line) nor left to fail at the end."""

    __slots__ = (
        "_calls",
        "_finish",
        "_lp",
        "_matched",
        "_model",
        "_reasoned",
        "_stops",
        "_tags",
        "_think",
        "_usage",
        "adapted",
        "chars",
        "done",
        "made",
        "notes",
    )

    def __init__(
        self,
        model: str,
        *,
        think: bool,
        think_tags: bool = False,
        stops: tuple[str, ...] = (),
        logprobs: bool = False,
    ) -> None:
        """``model``: the client's name (for errors); ``think``: False leaves reasoning out;
        ``think_tags``: split ``<think>`` tags out of the content; ``stops``: the request's stop
        sequences (to name the one that matched); ``logprobs``: the client asked for them."""
        self._model = model
        self._think = think
        self._stops = stops
        # A backend profile that may leave reasoning as <think>...</think> in content.
        self._tags = ThinkSplitter() if think_tags else None
        self._reasoned = False  # a reasoning field was seen: tagged text is a copy of it
        # The log probabilities not written yet (None: not asked for).
        self._lp: list[dict[str, Any]] | None = [] if logprobs else None
        self._calls = ToolCallAssembler()
        self._finish: str | None = None
        self._matched: str | None = None
        self._usage: Mapping[str, Any] | None = None
        self.done = False  # the backend said [DONE]
        self.notes: list[str] = self._calls.notes  # one list: the assembler's notes too
        self.adapted: list[str] = []  # for the DEBUG log: what was done for the backend
        # The calls written, with their client-side shape: what the next turn may need back of
        # them (translate/carry.py).
        self.made: list[tuple[ToolCall, Any]] = []
        # With token budgets only (routes.stream_reply sets it to 0): the characters of text,
        # reasoning and tool calls the backend sent, for an estimate when it reports no usage.
        self.chars: int | None = None

    @property
    def usage(self) -> Mapping[str, Any] | None:
        """The backend's token usage (OpenAI's shape), once its usage chunk has arrived."""
        return self._usage

    @property
    def finish_reason(self) -> str | None:
        """The backend's ``finish_reason``, as it gave it, once one arrived."""
        return self._finish

    @property
    def finished(self) -> bool:
        """The backend ended its answer properly: ``[DONE]`` or a ``finish_reason`` arrived. A
        stream that stops before either was cut short, and must not look complete."""
        return self.done or self._finish is not None

    def stamp(self) -> None:
        """Take the time for what the next events write (once per network read); nothing to
        do for dialects whose events carry no time."""

    def sent(self, ns: int) -> None:
        """The request left for the backend at ``ns`` (perf_counter_ns); nothing to do for
        dialects that report no durations."""

    def feed(self, data: str) -> bytes:
        """One SSE ``data`` payload -> the bytes to send (maybe none).

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

    def feed_completion(self, resp: Any) -> bytes:
        """A backend that ignored ``stream: true`` and answered one JSON completion (or the
        error it carries: :func:`completion_of`)."""
        resp = completion_of(resp, self._model)
        try:
            out = self.feed_chunk(resp)
        except SHAPE_ERRORS:
            raise malformed("an answer that is not a completion", resp) from None
        self.done = True
        return out

    def feed_chunk(self, chunk: Mapping[str, Any]) -> bytes:
        """One decoded event; a field of the wrong type raises TypeError (``feed``'s guard
        makes it :func:`malformed`)."""
        err = chunk.get("error")
        if err:
            raise stream_error(err, client_model=self._model, endpoint="/chat/completions")
        if self.chars is not None:
            self.chars += output_chars(chunk)
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
            if self._stops:
                self._matched = matched_stop(choice, self._stops)
        delta = choice.get("delta") or choice.get("message")
        if delta is None and "text" in choice:
            delta = {"content": choice["text"]}  # /v1/completions streams text, not deltas
        if not delta:
            return b""
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
                self.adapted.append(_TAGGED)
        calls = delta.get("tool_calls")
        ready = None
        if calls is not None and expect(calls, list):
            ready = self._calls.add(calls)
        return self._write(content, thinking, ready, calls)

    def _write(
        self,
        content: str | None,
        thinking: str | None,
        ready: list[ToolCall] | None,
        calls: list[Any] | None,
    ) -> bytes:
        """A dialect's bytes for one event's ``content`` and ``thinking`` (either may be empty)
        and the tool calls it completed (``ready``); ``calls``: the call fragments the event carried
        (complete or not; None: none)."""
        raise NotImplementedError

    def finish(self) -> bytes:
        """The closing bytes, after the last event: what the think-tag splitter and the
        assembler held back, and the dialect's end (:meth:`_end`). Called outside ``feed``'s
        guard: should what the events left fail to translate, the error quotes it rather than
        escaping as a 500."""
        try:
            return self._end()
        except SHAPE_ERRORS:
            state = {
                "finish_reason": self._finish,
                "usage": self._usage,
                "calls": self._calls.state(),
            }
            raise malformed("a stream whose end cannot be translated", state) from None

    def _held(self) -> tuple[str, str | None, list[ToolCall]]:
        """What was held back, once the events are over: ``(content, thinking, calls)`` --
        text the think-tag splitter kept (a tag could have been cut) and the calls the
        assembler could not yet tell complete."""
        content, thinking = "", None
        if self._tags is not None:
            content, tagged = self._tags.flush()
            if tagged and self._think and not self._reasoned:
                thinking = tagged
        return content, thinking, self._calls.drain() if self._calls else []

    def _end(self) -> bytes:
        """The dialect's closing bytes (see :meth:`finish`)."""
        raise NotImplementedError
