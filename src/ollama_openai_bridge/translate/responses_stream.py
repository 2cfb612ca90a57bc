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

from ollama_openai_bridge.translate.chunks import ChunkReader
from ollama_openai_bridge.translate.normalise import ToolCall
from ollama_openai_bridge.translate.response_items import (
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

MESSAGE, REASONING = "message", "reasoning"


def sse_event(kind: str, body: Mapping[str, Any]) -> bytes:
    """One SSE event: ``event: <kind>`` and its JSON ``data`` (Codex and the openai SDK read
    ``data``; the ``event`` line serves readers that dispatch on it)."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


class ResponsesStream(ChunkReader):
    """Chat-completion chunks in, Responses events out, for one response (``frame``); the chunks
    are read by :class:`~ollama_openai_bridge.translate.chunks.ChunkReader`."""

    __slots__ = ("_cut", "_frame", "_open", "_output", "_said", "_seq", "_started", "_text")

    def __init__(self, frame: Frame) -> None:
        super().__init__(frame.model, think=frame.reasoning, think_tags=frame.think_tags)
        self._frame = frame
        self._seq = 0
        self._started = False
        self._output: list[dict[str, Any]] = []  # the items done, in output order
        self._open: tuple[str, str, int] | None = None  # (kind, id, output index) streaming now
        self._text: list[str] = []  # the open item's text so far
        self._said = False  # a message item was sent (a response always has one, or calls)
        self._cut = False  # ended by the token limit: the open message is "incomplete"

    def snapshot(self) -> tuple[int, dict[str, Any]]:
        """For an error ending the stream (render.py): the next ``sequence_number`` and the
        Response as streamed so far (its items done), with this stream's id."""
        return self._seq, response(self._frame, "in_progress", list(self._output))

    def _write(
        self,
        content: str | None,
        thinking: str | None,
        ready: list[ToolCall] | None,
        calls: list[Any] | None,
    ) -> bytes:
        out = b""
        if thinking:
            out += self._add(REASONING, thinking)
        if content:
            out += self._add(MESSAGE, content)
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

    def _end(self) -> bytes:
        status, incomplete = outcome(self._finish)  # raises for an "error" finish
        self._cut = status == "incomplete"
        content, thinking, rest = self._held()
        out = self._write(content, thinking, rest, None)
        out += self._close()
        if not self._said and not self.made:
            out += self._begin(MESSAGE) + self._close()  # a response always answers something
        body = response(self._frame, status, self._output, usage_of(self._usage), incomplete)
        kind = "response.incomplete" if incomplete else "response.completed"
        return out + self._event(kind, {"response": body})
