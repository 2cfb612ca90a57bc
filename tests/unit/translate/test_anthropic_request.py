"""Anthropic Messages requests -> the OpenAI chat-completion request (translate/anthropic.py):
golden pairs, one rule each, through the real schema as the route reads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from ollama_openai_bridge.errors import BadRequest
from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.profiles import PROFILES
from ollama_openai_bridge.schemas import MESSAGES, parse
from ollama_openai_bridge.translate.anthropic import (
    Converted,
    estimate_tokens,
    messages_request,
    read_request,
)
from ollama_openai_bridge.translate.chat import UpstreamRequest
from tests.fake_upstream import validate_chat

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
AGENTS = Path(__file__).resolve().parents[2] / "fixtures" / "agents"
HI = [{"role": "user", "content": "hi"}]


def read(**fields: Any) -> Converted:
    body = {"model": "m", "max_tokens": 64, "messages": HI, **fields}
    req = parse(MESSAGES, orjson.dumps(body))  # as the route reads it
    return read_request(req)


def send(
    target: Target | None = None, policy: Policy | None = None, **fields: Any
) -> UpstreamRequest:
    conv = read(**fields)
    return messages_request(conv, target or Target("m"), policy or Policy())


def test_golden_minimal_request() -> None:
    up = send(system="be terse")
    assert up.payload == {
        "model": "m",
        "messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}],
        "stream": False,  # Anthropic answers whole unless asked to stream
        "max_tokens": 64,
    }
    assert up.notes == []


def test_stream_asks_for_usage() -> None:
    up = send(stream=True)
    assert up.payload["stream"] is True
    assert up.payload["stream_options"] == {"include_usage": True}


def test_system_blocks_are_joined_and_cache_control_is_reported_once() -> None:
    conv = read(
        system=[
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1;"},
            {"type": "text", "text": "You are an agent.", "cache_control": {"type": "ephemeral"}},
        ],
        metadata={"user_id": "u"},
        context_management={"edits": []},
        speed="fast",
    )
    assert conv.chat["messages"][0] == {
        "role": "system",
        "content": "x-anthropic-billing-header: cc_version=2.1;\nYou are an agent.",
    }
    keys = [key for key, _ in conv.ignored]
    assert keys == [
        "cache_control (anthropic)",
        "metadata (anthropic)",
        "context_management (anthropic)",
    ]
    assert conv.unknown == ["speed"]  # a field the API does not have: logged by name


def test_golden_tool_round_trip() -> None:
    """tool_use -> tool_calls (the client's id kept, input as JSON text); tool_result -> a tool
    message right after the calls, then the user's own text; is_error marked in the text."""
    up = send(
        messages=[
            {"role": "user", "content": "weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "two calls", "signature": ""},
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_2",
                        "name": "weather",
                        "input": {"city": "Rome"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "no data"}],
                        "is_error": True,
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
        tools=[
            {
                "name": "weather",
                "description": "Weather of a city",
                "input_schema": {
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }
        ],
    )
    assert up.payload["messages"] == [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no data"},
        {"role": "user", "content": "and?"},
    ]
    # input_schema as parameters, without the draft marker Zod's export adds
    assert up.payload["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
                "description": "Weather of a city",
            },
        }
    ]
    validate_chat(up.payload, set())  # what a strict OpenAI server accepts


def test_thinking_goes_back_where_the_backend_wants_it() -> None:
    """DeepSeek's thinking mode wants each assistant turn's reasoning back; the signature means
    nothing to it."""
    profile = PROFILES["deepseek"]
    up = send(
        target=Target.of("deepseek-chat", profile),
        policy=Policy(profile=profile),
        messages=[
            *HI,
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "hello"},
                ],
            },
            {"role": "user", "content": "again"},
        ],
    )
    assert up.payload["messages"][1] == {
        "role": "assistant",
        "content": "hello",
        "reasoning_content": "hmm",
    }


def test_images_base64_and_url_and_a_tool_results_image() -> None:
    up = send(
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                    {"type": "text", "text": "what is it?"},
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [
                            {"type": "text", "text": "the screenshot:"},
                            {"type": "image", "source": {"type": "base64", "data": PNG}},
                        ],
                    }
                ],
            },
        ]
    )
    messages = up.payload["messages"]
    assert messages[0]["content"] == [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
    ]
    # A tool message takes only text (OpenAI): the image rides on a user message after it.
    assert messages[2] == {"role": "tool", "tool_call_id": "t1", "content": "the screenshot:"}
    assert messages[3] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}],
    }
    assert "a tool result's image was sent in the user message after it" in up.notes


def test_mid_conversation_system_messages_stay_system_messages() -> None:
    """Claude Code sends its environment as a system turn after the user's first message."""
    up = send(
        messages=[
            *HI,
            {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},
            {"role": "system", "content": "plain"},
            {
                "role": "user",
                "content": [
                    {"type": "mid_conv_system", "content": [{"type": "text", "text": "rules"}]},
                    {"type": "text", "text": "go"},
                ],
            },
        ]
    )
    assert up.payload["messages"][1:] == [
        {"role": "system", "content": "# Environment"},
        {"role": "system", "content": "plain"},
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "go"},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            {
                "tool_choice": {"type": "function", "function": {"name": "f"}},
                "parallel_tool_calls": False,
            },
        ),
        (
            {"type": "auto", "disable_parallel_tool_use": True},
            {"tool_choice": "auto", "parallel_tool_calls": False},
        ),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    tool = {"name": "f", "input_schema": {"type": "object"}}
    up = send(tools=[tool], tool_choice=choice)
    assert {
        k: v for k, v in up.payload.items() if k in ("tool_choice", "parallel_tool_calls")
    } == expected


def test_hosted_tools_are_left_out_with_a_warning_and_extras_reported() -> None:
    conv = read(
        tools=[
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"type": "bash_20250124", "name": "bash"},
            {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
            {"name": "Later", "input_schema": {"type": "object"}, "defer_loading": True},
            {"type": "custom", "name": "f", "input_schema": {"type": "object"}, "strict": True},
        ],
        tool_choice={"type": "any"},
    )
    assert [t["function"]["name"] for t in conv.chat["tools"]] == ["Later", "f"]
    assert [key for key, _ in conv.ignored] == [
        "tool web_search_20250305 (anthropic)",
        "tool bash_20250124 (anthropic)",
        "tool text_editor_20250728 (anthropic)",
        "tools.defer_loading (anthropic)",
        "tools.strict (anthropic)",
    ]
    only_hosted = read(
        tools=[{"type": "web_search_20250305", "name": "web_search"}], tool_choice={"type": "any"}
    )
    assert "tools" not in only_hosted.chat
    up = messages_request(only_hosted, Target("m"), Policy())
    assert "tool_choice" not in up.payload  # OpenAI refuses tool_choice without tools
    assert "tool_choice without tools (or none a backend can run); ignored" in up.notes


def test_sampling_stop_sequences_and_top_k() -> None:
    up = send(temperature=0.2, top_p=0.9, top_k=40, stop_sequences=["END", "STOP"])
    assert {k: up.payload[k] for k in ("temperature", "top_p", "stop", "max_tokens")} == {
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END", "STOP"],
        "max_tokens": 64,
    }
    assert "top_k" not in up.payload
    assert up.dropped_options == ["top_k"]  # logged with the PASSTHROUGH_OPTIONS hint
    forwarded = send(policy=Policy(passthrough={"top_k": "top_k"}), top_k=40)
    assert forwarded.payload["top_k"] == 40
    assert read(stop_sequences=["END"]).stops == ("END",)


THINKER = Target("o4-mini", "reasoning_effort", thinking=True, efforts=("low", "medium", "high"))


@pytest.mark.parametrize(
    ("fields", "target", "expected", "note"),
    [
        (
            {"thinking": {"type": "enabled", "budget_tokens": 2000}},
            THINKER,
            {"reasoning_effort": "medium"},
            None,
        ),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 1024}},
            THINKER,
            {"reasoning_effort": "low"},
            None,
        ),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 60000}},
            THINKER,
            {"reasoning_effort": "high"},
            None,
        ),
        (
            {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}},
            THINKER,
            {"reasoning_effort": "high"},
            None,
        ),
        ({"output_config": {"effort": "low"}}, THINKER, {"reasoning_effort": "low"}, None),
        ({"thinking": {"type": "adaptive"}}, THINKER, {"reasoning_effort": "medium"}, None),
        # adaptive: a model not known to reason has decided; nothing sent, nothing to say
        ({"thinking": {"type": "adaptive", "display": "omitted"}}, Target("m"), {}, None),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 2000}},
            Target("m"),
            {},
            "think requested for a model not known to think; no reasoning parameter sent",
        ),
        (
            {"thinking": {"type": "disabled"}},
            Target(
                "gpt-5",
                "reasoning_effort",
                thinking=True,
                think_off={"reasoning_effort": "minimal"},
            ),
            {"reasoning_effort": "minimal"},
            None,
        ),
    ],
)
def test_thinking_as_the_backends_reasoning_control(
    fields: dict[str, Any], target: Target, expected: dict[str, Any], note: str | None
) -> None:
    up = send(target=target, **fields)
    assert {k: v for k, v in up.payload.items() if k == "reasoning_effort"} == expected
    assert (note in up.notes) if note else up.notes == []


def test_thinking_disabled_leaves_reasoning_out_of_the_answer() -> None:
    assert read(thinking={"type": "disabled"}).think is False
    assert read(thinking={"type": "adaptive"}).think is True


def test_structured_output_is_a_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    up = send(output_config={"format": {"type": "json_schema", "schema": schema}})
    assert up.payload["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }


def test_plain_text_documents_are_text_and_others_are_noted() -> None:
    up = send(
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "doc"},
                    },
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": "JVBERi0=",
                        },
                    },
                    {"type": "search_result", "source": "s", "title": "t", "content": []},
                    {"type": "text", "text": "summarise"},
                ],
            }
        ]
    )
    assert up.payload["messages"] == [{"role": "user", "content": "doc\nsummarise"}]
    assert up.notes == [
        "document of source type 'base64' at messages.0.content.1 cannot be sent",
        "content block 'search_result' on a user message; dropped",
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"max_tokens": 0},
            "invalid value for 'max_tokens': Input should be greater than or equal to 1",
        ),
        ({"messages": []}, "invalid value for 'messages': List should have at least 1 item"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "invalid role 'tool' at messages.0"),
        (
            {"messages": [{"role": "user", "content": ["x"]}]},
            "messages.0.content.0 must be an object",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]}
                ]
            },
            "tool_use block missing required 'name' field",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ]
            },
            "invalid image source at messages.0.content.0",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "base64", "data": "%%"}}],
                    }
                ]
            },
            "invalid image at messages.0.images.0: not valid base64",
        ),
        (
            {
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "some"},
            },
            "tool_choice.type",
        ),
        (
            {"thinking": {"type": "sometimes"}},
            "thinking.type must be enabled, adaptive or disabled",
        ),
        ({"output_config": {"effort": "extreme"}}, "output_config.effort must be one of"),
        ({"output_config": {"format": {"type": "json_object"}}}, "output_config.format must be"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema must be an object"),
    ],
)
def test_invalid_requests_are_400s_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        send(**fields)


def test_claude_codes_first_request() -> None:
    """The request Claude Code 2.1.332 sent first (tests/fixtures/agents): a system array with
    cache_control, a mid-conversation system turn, tools with $schema and defer_loading,
    thinking adaptive with effort high, metadata, context_management."""
    capture = json.loads((AGENTS / "claude_code_01_post_v1_messages.json").read_text())
    conv = read_request(MESSAGES.validate_json(orjson.dumps(capture["body"])))
    up = messages_request(conv, Target("qwen3-coder:30b"), Policy())
    payload = up.payload
    assert [m["role"] for m in payload["messages"]] == ["system", "user", "system"]
    assert payload["messages"][0]["content"].startswith("x-anthropic-billing-header:")
    assert len(payload["tools"]) == 12
    assert all("$schema" not in t["function"]["parameters"] for t in payload["tools"])
    assert payload["max_tokens"] == 32000
    assert payload["stream"] is True
    assert "reasoning_effort" not in payload  # adaptive, a model not known to reason
    assert up.notes == []
    assert sorted({key for key, _ in conv.ignored}) == [
        "cache_control (anthropic)",
        "context_management (anthropic)",
        "metadata (anthropic)",
        "thinking.display (anthropic)",
        "tools.defer_loading (anthropic)",
    ]
    validate_chat(payload, set())
    assert estimate_tokens(capture["body"]) > 10_000  # about 48 KB of prompt and tools


def test_estimate_counts_text_tools_and_images() -> None:
    body = {
        "model": "m",
        "system": "a" * 40,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "b" * 36}, {"type": "image", "source": {}}],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": "c" * 8}],
            },
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    }
    tool_chars = len(orjson.dumps(body["tools"][0]))
    chars = 40 + 4 + 36 + 9 + 1 + len('{"x":1}') + 4 + 8 + tool_chars
    assert estimate_tokens(body) == -(-chars // 4) + 1600
    assert estimate_tokens({"model": "m", "messages": []}) == 1
