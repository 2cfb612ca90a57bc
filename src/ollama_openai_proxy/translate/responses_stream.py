"""OpenAI chat-completion stream -> OpenAI Responses stream (``POST /v1/responses``, issue #17).

:class:`ResponsesStream` is fed the ``data`` of each SSE event, as ``stream.StreamTranslator`` is,
and returns the Responses events to send (``event:`` and ``data:`` lines, each event with its
``sequence_number``), knowing nothing of HTTP. The sequence is OpenAI's
(openai-python ``types/responses/response_stream_event.py``; ollama/ollama
``openai/responses.go`` ResponsesStreamConverter):

* ``response.created``, ``response.in_progress``, before the first item;
* per item, ``response.output_item.added`` ... ``response.output_item.done`` with the whole item:
  a ``reasoning`` item (``reasoning_summary_part.added``, ``reasoning_summary_text.delta``...),
  a ``message`` (``content_part.added``, ``output_text.delta``, ``output_text.done``,
  ``content_part.done``), a ``function_call`` (``function_call_arguments.delta`` and ``.done``,
  sent whole as soon as the call is complete: ``normalise.ToolCallAssembler``);
* ``response.completed`` with the whole Response and its ``usage``, or ``response.incomplete``
  for a token-limit stop.

Codex needs an ``output_item.done`` per item and the final ``response.completed`` (without it,
it retries the turn five times and fails); the openai SDK's stream helper needs the ``added``
events before the deltas and the same response id throughout (tests/agents/README.md). A failure
after the first event is rendered by ``render.Renderer`` from :meth:`ResponsesStream.snapshot`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ollama_openai_proxy.errors import SHAPE_ERRORS, malformed
from ollama_openai_proxy.translate.normalise import (
    ToolCall,
    ToolCallAssembler,
    completion_of,
    content_parts,
    expect,
    reasoning_of,
)
from ollama_openai_proxy.translate.response_items import (
    Frame,
    call_item,
    made,
    message_item,
    outcome,
    reasoning_item,
    response,
    text_part,
    usage_of,
)
from ollama_openai_proxy.translate.thinktags import ThinkSplitter
from ollama_openai_proxy.upstream_errors import stream_error

MESSAGE, REASONING = "message", "reasoning"


def sse_event(kind: str, body: Mapping[str, Any]) -> bytes:
    """One SSE event: ``event: <kind>`` and its JSON ``data`` (Codex and the openai SDK read
    ``data``; the ``event`` line serves readers that dispatch on it)."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


class ResponsesStream:
    """Chat-completion chunks in, Responses events out, for one response (``frame``)."""

    __slots__ = (
        "_calls",
        "_cut",
        "_finish",
        "_frame",
        "_open",
        "_output",
        "_reasoned",
        "_said",
        "_seq",
        "_started",
        "_tags",
        "_text",
        "_usage",
        "adapted",
        "done",
        "made",
        "notes",
    )

    def __init__(self, frame: Frame) -> None:
        self._frame = frame
        self._calls = ToolCallAssembler()
        self._tags = ThinkSplitter() if frame.think_tags else None
        self._reasoned = False  # a reasoning field was seen: tagged text is a copy of it
        self._seq = 0
        self._started = False
        self._output: list[dict[str, Any]] = []  # the items done, in output order
        self._open: tuple[str, str, int] | None = None  # (kind, id, output index) streaming now
        self._text: list[str] = []  # the open item's text so far
        self._said = False  # a message item was sent (a response always has one, or calls)
        self._cut = False  # ended by the token limit: the open message is "incomplete"
        self._finish: str | None = None
        self._usage: Mapping[str, Any] | None = None
        self.done = False  # the backend said [DONE]
        self.notes: list[str] = self._calls.notes
        self.adapted: list[str] = []
        self.made: list[tuple[ToolCall, Any]] = []  # for the tool-call store (carry.py)

    @property
    def usage(self) -> Mapping[str, Any] | None:
        """The backend's token usage, once its usage chunk has arrived."""
        return self._usage

    @property
    def finished(self) -> bool:
        """The backend ended its answer properly: ``[DONE]`` or a ``finish_reason`` arrived."""
        return self.done or self._finish is not None

    def stamp(self) -> None:
        """Nothing to stamp: Responses events carry no per-event time."""

    def snapshot(self) -> tuple[int, dict[str, Any]]:
        """For an error ending the stream (render.py): the next ``sequence_number`` and the
        Response as streamed so far (its items done), with this stream's id."""
        return self._seq, response(self._frame, "in_progress", list(self._output))

    # --- input ------------------------------------------------------------------------------

    def feed(self, data: str) -> bytes:
        """One SSE ``data`` payload -> the events to send (maybe none).

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
            raise malformed("a malformed stream event", data) from None

    def feed_chunk(self, chunk: Mapping[str, Any]) -> bytes:
        """One decoded chunk; a field of the wrong type raises TypeError."""
        err = chunk.get("error")
        if err:
            raise stream_error(err, client_model=self._frame.model, endpoint="/chat/completions")
        usage = chunk.get("usage")
        if usage is not None and expect(usage, dict):
            self._usage = usage
        choices = chunk.get("choices")
        if not choices:
            return b""
        choice = choices[0]
        finish = choice.get("finish_reason")
        if finish is not None and expect(finish, str):
            self._finish = finish
        delta = choice.get("delta") or choice.get("message")
        return self._delta(delta) if delta else b""

    def feed_completion(self, resp: Any) -> bytes:
        """A backend that ignored ``stream: true`` and answered one JSON completion."""
        resp = completion_of(resp, self._frame.model)
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
        thinking = reasoning_of(delta)
        if parted:
            thinking = thinking + parted if thinking else parted
        if content and self._tags is not None:
            content, tagged = self._tags.feed(content)
            if thinking:
                self._reasoned = True  # the backend separates it: tags only repeat it
            elif tagged and not self._reasoned:
                thinking = tagged
            if tagged and not self.adapted:
                self.adapted.append("reasoning split out of <think> tags in the content")
        out = b""
        if thinking and self._frame.reasoning:
            out += self._add(REASONING, thinking)
        if content:
            out += self._add(MESSAGE, content)
        calls = delta.get("tool_calls")
        if calls is not None and expect(calls, list):
            ready = self._calls.add(calls)
            if ready:
                out += self._send_calls(ready)
        return out

    # --- output -----------------------------------------------------------------------------

    def _event(self, kind: str, body: dict[str, Any]) -> bytes:
        out = b""
        if not self._started:
            self._started = True
            for first in ("response.created", "response.in_progress"):
                out += self._event(first, {"response": response(self._frame, "in_progress", [])})
        seq = self._seq
        self._seq += 1
        return out + sse_event(kind, {"type": kind, **body, "sequence_number": seq})

    def _add(self, kind: str, text: str) -> bytes:
        """``text`` for the open item of ``kind``, opening it (and closing another) first."""
        out = b""
        if self._open is None or self._open[0] != kind:
            out += self._close()
            out += self._begin(kind)
        assert self._open is not None
        _, item_id, index = self._open
        self._text.append(text)
        if kind == MESSAGE:
            body = {"item_id": item_id, "output_index": index, "content_index": 0}
            return out + self._event(
                "response.output_text.delta", {**body, "delta": text, "logprobs": []}
            )
        body = {"item_id": item_id, "output_index": index, "summary_index": 0, "delta": text}
        return out + self._event("response.reasoning_summary_text.delta", body)

    def _begin(self, kind: str) -> bytes:
        index = len(self._output)
        part: dict[str, Any]
        if kind == MESSAGE:
            item_id = self._frame.item_id("msg", index)
            item = {**message_item(item_id, "", "in_progress"), "content": []}
            part_event = "response.content_part.added"
            part = {"content_index": 0, "part": text_part("")}
            self._said = True
        else:
            item_id = self._frame.item_id("rs", index)
            item = {"id": item_id, "type": "reasoning", "summary": []}
            part_event = "response.reasoning_summary_part.added"
            part = {"summary_index": 0, "part": {"type": "summary_text", "text": ""}}
        self._open = (kind, item_id, index)
        self._text = []
        out = self._event("response.output_item.added", {"output_index": index, "item": item})
        return out + self._event(part_event, {"item_id": item_id, "output_index": index, **part})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        kind, item_id, index = self._open
        self._open = None
        text = "".join(self._text)
        where = {"item_id": item_id, "output_index": index}
        if kind == MESSAGE:
            item = message_item(item_id, text, "incomplete" if self._cut else "completed")
            body = {**where, "content_index": 0}
            out = self._event("response.output_text.done", {**body, "text": text, "logprobs": []})
            out += self._event("response.content_part.done", {**body, "part": text_part(text)})
        else:
            item = reasoning_item(item_id, text)
            body = {**where, "summary_index": 0}
            out = self._event("response.reasoning_summary_text.done", {**body, "text": text})
            out += self._event(
                "response.reasoning_summary_part.done",
                {**body, "part": {"type": "summary_text", "text": text}},
            )
        self._output.append(item)
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def _send_calls(self, calls: list[ToolCall]) -> bytes:
        """Each whole call as its item's events, at once (its arguments in one delta)."""
        out = self._close()
        for call in calls:
            index = len(self._output)
            item = call_item(self._frame, call, index)
            self.made.append(made(call))
            where = {"item_id": item["id"], "output_index": index}
            if item["type"] == "custom_tool_call":
                value, prefix, last = item["input"], "response.custom_tool_call_input", "input"
            else:
                value, prefix, last = (
                    item["arguments"],
                    "response.function_call_arguments",
                    "arguments",
                )
            added = {**item, "status": "in_progress", last: ""}
            out += self._event("response.output_item.added", {"output_index": index, "item": added})
            out += self._event(prefix + ".delta", {**where, "delta": value})
            out += self._event(prefix + ".done", {**where, last: value})
            out += self._event("response.output_item.done", {"output_index": index, "item": item})
            self._output.append(item)
        return out

    def finish(self) -> bytes:
        """The items still open or held back, and ``response.completed`` (or
        ``response.incomplete``). Called after the last event, outside ``feed``'s guard: should
        what the events left fail to translate, the error quotes it rather than escaping."""
        try:
            return self._end()
        except SHAPE_ERRORS:
            state = {"finish_reason": self._finish, "usage": self._usage}
            raise malformed("a stream whose end cannot be translated", state) from None

    def _end(self) -> bytes:
        status, incomplete = outcome(self._finish)  # raises for an "error" finish
        self._cut = status == "incomplete"
        out = b""
        if self._tags is not None:
            content, thinking = self._tags.flush()
            if thinking and self._frame.reasoning and not self._reasoned:
                out += self._add(REASONING, thinking)
            if content:
                out += self._add(MESSAGE, content)
        if self._calls:
            rest = self._calls.drain()
            if rest:
                out += self._send_calls(rest)
        out += self._close()
        if not self._said and not self.made:
            out += self._begin(MESSAGE) + self._close()  # a response always answers something
        body = response(self._frame, status, self._output, usage_of(self._usage), incomplete)
        kind = "response.incomplete" if incomplete else "response.completed"
        return out + self._event(kind, {"response": body})
