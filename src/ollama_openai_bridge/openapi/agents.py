"""The operations of the two APIs coding agents call, by operationId: OpenAI's Responses API
(Codex, Copilot CLI) and Anthropic's Messages API (Claude Code); translated to chat completions
(issue #17). Kept apart from operations.py, which holds Ollama's and the forwarded OpenAI API's;
openapi/__init__.py merges the two tables."""

from __future__ import annotations

from typing import Any

from ollama_openai_bridge.openapi.operations import HELLO, OPENAI_ERRORS, dumps
from ollama_openai_bridge.openapi.shapes import INT, OBJ, STR, json_content, obj, ref

_RESPONSE = {
    "id": "resp_4f0c2a9e1b7d4c3a8e6f5d2c1b0a9e8f",
    "object": "response",
    "created_at": 1763892000,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "model": "gpt-4o-mini",
    "output": [
        {
            "id": "msg_4f0c2a9e1b7d4c3a8e6f5d2c1b0a9e8f_0",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}
            ],
        }
    ],
    "usage": {
        "input_tokens": 9,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 11,
    },
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": False,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
}
_RESPONSE_EVENTS = (
    "event: response.created\n"
    'data: {"type":"response.created","response":{"id":"resp_4f0c","status":"in_progress",'
    '"output":[]},"sequence_number":0}\n\n'
    "event: response.output_text.delta\n"
    'data: {"type":"response.output_text.delta","item_id":"msg_4f0c_0","output_index":0,'
    '"content_index":0,"delta":"Hello!","logprobs":[],"sequence_number":4}\n\n'
    "event: response.completed\n"
    'data: {"type":"response.completed","response":{"id":"resp_4f0c","status":"completed",'
    '"output":[]},"sequence_number":9}\n\n'
)
AGENT_OPERATIONS: dict[str, dict[str, Any]] = {}
AGENT_OPERATIONS["openai_responses"] = {
    "description": "The OpenAI Responses API (https://platform.openai.com/docs/api-reference/"
    "responses), translated to the backend's `POST /v1/chat/completions`, as Ollama serves it: "
    "**stateless** -- each request carries the whole conversation in `input` (`store: false`); "
    "`previous_response_id`, `conversation`, `prompt` and `background` are refused with 400, "
    "and `store: true` stores nothing. Messages, function calls and their outputs, reasoning; "
    "function tools, namespaces (offered as `<namespace>__<name>`) and custom tools; hosted "
    "tools (`web_search`...) are dropped with a warning. With `stream: true`, the Responses "
    "events (`text/event-stream`): `response.created` ... `response.completed`; an error after "
    "the stream started is an `error` event and `response.failed`.",
    "openai": True,
    "request": {"model": "gpt-4o-mini", "input": "Say hello"},
    "response": {
        "description": "A Response object; with `stream: true`, its events.",
        "content": {
            "application/json": {"schema": OBJ, "example": _RESPONSE},
            "text/event-stream": {
                # each event: its name and its JSON data, which carries the same "type"
                "schema": obj(("event", "data"), event=STR, data=STR),
                "example": _RESPONSE_EVENTS,
            },
        },
    },
    "errors": OPENAI_ERRORS,
}
_ANTHROPIC_ERRORS = (400, 401, 404, 413, 429, 502, 503, 504)
_ANTHROPIC_HELLO = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "gpt-4o-mini",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 9, "output_tokens": 2},
}
_ANTHROPIC_EVENTS = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {**_ANTHROPIC_HELLO, "content": [], "stop_reason": None},
        },
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hello!"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"input_tokens": 9, "output_tokens": 2},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]
AGENT_OPERATIONS.update(
    {
        "anthropic_messages": {
            "description": "Anthropic's Messages API (https://docs.anthropic.com/en/api/messages), "
            "as Ollama serves it since v0.14.0 for Claude Code (`ollama launch claude`) and the "
            "anthropic SDKs; `?beta=true` is accepted. Translated to the backend's "
            "`POST /v1/chat/completions`: system prompts (string or text blocks), messages with "
            "text, image (base64 or URL), tool_use, tool_result and thinking blocks, tools "
            "(Anthropic's own hosted tools are left out, logged), tool_choice, thinking and "
            "output_config.effort as the backend's reasoning control, max_tokens, temperature, "
            "top_p, stop_sequences (top_k through PASSTHROUGH_OPTIONS). With `stream: true` the "
            "answer is Anthropic's event stream (`text/event-stream`, `event:` lines) whatever "
            "`Accept` says; an error after it started is an `event: error`. Errors are "
            "Anthropic's `{type: error, error: {type, message}}`. The inbound key may be sent as "
            "`x-api-key`. See docs/API_COMPATIBILITY.md.",
            "dialect": "anthropic",
            "request": {"model": "gpt-4o-mini", "max_tokens": 1024, "messages": HELLO},
            "response": {
                "description": "The message; with `stream: true`, Anthropic's event stream.",
                "content": {
                    "application/json": {
                        "schema": ref("AnthropicMessage"),
                        "example": _ANTHROPIC_HELLO,
                    },
                    "text/event-stream": {
                        # OpenAPI 3.1: the schema of each event; data is one JSON object
                        "schema": obj(
                            ("event", "data"),
                            event={"enum": [name for name, _ in _ANTHROPIC_EVENTS] + ["error"]},
                            data={**STR, "contentMediaType": "application/json"},
                        ),
                        "example": "".join(
                            f"event: {name}\ndata: {dumps(data)}\n\n"
                            for name, data in _ANTHROPIC_EVENTS
                        ),
                    },
                },
            },
            "errors": _ANTHROPIC_ERRORS,
        },
        "anthropic_count_tokens": {
            "description": "Anthropic's token counting "
            "(https://docs.anthropic.com/en/api/messages-count-tokens). An estimate: "
            "OpenAI-compatible backends have no counting endpoint, so it is the characters of "
            "the system prompt, messages, tool calls and results and tool definitions divided by "
            "4, plus 1,600 per image (as Ollama estimates). A model no backend lists is a 404.",
            "dialect": "anthropic",
            "request": {"model": "gpt-4o-mini", "messages": HELLO},
            "response": json_content(obj(("input_tokens",), input_tokens=INT), {"input_tokens": 3}),
            "errors": (400, 401, 404, 413, 429),
        },
    }
)
