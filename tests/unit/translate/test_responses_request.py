"""/v1/responses requests -> chat completions (translate/responses.py): golden pairs, Codex's
captured requests, and every refusal in OpenAI's notation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ollama_openai_bridge.errors import BadRequest, echo
from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.profiles import PROFILES
from ollama_openai_bridge.schemas import RESPONSES
from ollama_openai_bridge.translate.chat import UpstreamRequest
from ollama_openai_bridge.translate.response_tools import Named
from ollama_openai_bridge.translate.responses import Parsed, chat_request, read_request
from tests.conftest import agent_request

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
LOOKUP = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


def translate(
    req: dict[str, Any], target: Target | None = None, policy: Policy | None = None
) -> tuple[Parsed, UpstreamRequest]:
    parsed = read_request(RESPONSES.validate_json(orjson.dumps(req)))
    return parsed, chat_request(parsed, target or Target(req["model"]), policy or Policy())


def test_golden_request() -> None:
    """Every rule at once: instructions and a developer message as one system message, parts
    with an image, an assistant's text and two calls in one message, a result given as parts,
    a namespace and a custom tool flattened, a forced tool, sampling, reasoning, a schema."""
    req = {
        "model": "m",
        "instructions": "Be terse.",
        "input": [
            {"type": "message", "role": "developer", "content": "Use tools."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is "},
                    {"type": "input_text", "text": "this?"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Looking.", "annotations": []}],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "status": "completed",
                "call_id": "call_a",
                "name": "lookup",
                "namespace": "kb",
                "arguments": '{"q": "x"}',
            },
            {"type": "custom_tool_call", "call_id": "call_b", "name": "patch", "input": "*** x"},
            {"type": "function_call_output", "call_id": "call_a", "output": "found"},
            {
                "type": "custom_tool_call_output",
                "call_id": "call_b",
                "output": [{"type": "input_text", "text": "applied"}],
            },
        ],
        "tools": [
            {
                "type": "namespace",
                "name": "kb",
                "description": "d",
                "tools": [
                    {"type": "function", "name": "lookup", "parameters": LOOKUP, "strict": True}
                ],
            },
            {"type": "custom", "name": "patch", "description": "Apply a patch."},
            {"type": "web_search", "external_web_access": True},
        ],
        "tool_choice": {"type": "function", "name": "lookup", "namespace": "kb"},
        "parallel_tool_calls": False,
        "max_output_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {
            "format": {"type": "json_schema", "name": "answer", "schema": LOOKUP, "strict": True}
        },
        "store": False,
    }
    parsed, up = translate(req, Target("m", thinking=True))
    assert up.payload == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be terse.\n\nUse tools."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is "},
                    {"type": "text", "text": "this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Looking.",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "kb__lookup", "arguments": '{"q": "x"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "patch", "arguments": '{"input":"*** x"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "found"},
            {"role": "tool", "tool_call_id": "call_b", "content": "applied"},
        ],
        "stream": False,
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 100,
        "reasoning_effort": "high",
        "tools": [
            {
                "type": "function",
                "function": {"name": "kb__lookup", "parameters": LOOKUP, "strict": True},
            },
            {
                "type": "function",
                "function": {
                    "name": "patch",
                    "description": "Apply a patch.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "input": {"type": "string", "description": "the tool's input"}
                        },
                        "required": ["input"],
                    },
                },
            },
        ],
        "tool_choice": {"type": "function", "function": {"name": "kb__lookup"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": LOOKUP, "strict": True},
        },
    }
    assert parsed.names.by_flat == {
        "kb__lookup": Named("lookup", "kb"),
        "patch": Named("patch", None, custom=True),
    }
    assert [key for key, _ in up.warnings] == ["responses hosted tool web_search"]
    assert parsed.echo["tool_choice"] == req["tool_choice"]
    assert parsed.echo["store"] is False


def test_a_string_input_is_one_user_message_and_streams_ask_for_usage() -> None:
    parsed, up = translate({"model": "m", "input": "hi", "stream": True})
    assert up.payload == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert parsed.stream
    assert parsed.reasoning
    assert parsed.echo == {
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


def test_codex_second_turn_as_captured() -> None:
    """Codex's request after its tool ran (tests/fixtures/agents/codex_05): two developer
    messages as one system message, the call and its output paired by call_id, the functions
    and the namespace's members offered, web_search dropped, and every field it sends that has
    no chat equivalent warned about once."""
    body = agent_request("codex_05_post_v1_responses.json")
    parsed, up = translate(body)
    messages = up.payload["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "user", "assistant", "tool"]
    developer = ["\n".join(p["text"] for p in i["content"]) for i in body["input"][:2]]
    assert messages[0]["content"] == "\n\n".join(developer)
    assert messages[3]["tool_calls"] == [
        {
            "id": "call_000000000000000000000005",
            "type": "function",
            "function": {
                "name": "exec_command",
                "arguments": '{"cmd": "printf hello > proof.txt"}',
            },
        }
    ]
    assert messages[4]["tool_call_id"] == "call_000000000000000000000005"
    assert messages[4]["content"].startswith("Chunk ID:")
    names = [t["function"]["name"] for t in up.payload["tools"]]
    assert "exec_command" in names
    assert all(len(n) <= 64 and n.replace("_", "").replace("-", "").isalnum() for n in names)
    namespace = next(t for t in body["tools"] if t["type"] == "namespace")
    members = [t["name"] for t in namespace["tools"]]
    assert [n for n in names if n.startswith("multi_agent_v1__")] == [
        f"multi_agent_v1__{m}" for m in members
    ]
    assert parsed.names.by_flat["multi_agent_v1__" + members[0]] == Named(
        members[0], "multi_agent_v1"
    )
    assert up.payload["tool_choice"] == "auto"
    assert up.payload["parallel_tool_calls"] is True
    assert {key for key, _ in up.warnings} == {
        "responses hosted tool web_search",
        "responses include",
        "responses prompt_cache_key",
    }
    assert parsed.unknown == ["client_metadata"]  # Codex's own: logged by name (logs.WarnOnce)


def test_codex_reasoning_goes_back_where_the_profile_wants_it() -> None:
    """codex_reasoning_05: the reasoning item before the call becomes the assistant turn's
    reasoning for a backend that wants it back (DeepSeek: reasoning_content), and is not sent
    to one that does not."""
    body = agent_request("codex_reasoning_05_post_v1_responses.json")
    _, plain = translate(body)
    assert "reasoning_content" not in plain.payload["messages"][3]
    deepseek = Policy(profile=PROFILES["deepseek"])
    _, up = translate(body, Target.of("deepseek-chat", deepseek.profile), deepseek)
    assert up.payload["messages"][3]["reasoning_content"] == "The user wants a file."


def test_consecutive_calls_share_one_assistant_message_and_results_follow() -> None:
    _, up = translate(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "go"},
                {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "b", "name": "f", "arguments": '{"x":1}'},
                {"type": "function_call_output", "call_id": "b", "output": "2"},
                {"type": "function_call_output", "call_id": "a", "output": "1"},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""},
                {"type": "function_call_output", "call_id": "c", "output": "3"},
            ],
            "tools": [{"type": "function", "name": "f"}],
        }
    )
    messages = up.payload["messages"]
    assert [m["role"] for m in messages] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "tool",
    ]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["a", "b"]
    assert [m["tool_call_id"] for m in messages[2:4]] == ["b", "a"]
    assert messages[4]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert up.payload["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
        }
    ]


def test_an_unanswered_call_and_an_orphan_result_keep_the_history_valid() -> None:
    """The chat history builder's rules apply (translate/chat.py _History): a call with no
    result gets an empty one, a result with no call becomes a user message; both noted."""
    _, up = translate(
        {
            "model": "m",
            "input": [
                {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
                {"role": "user", "content": "next"},
                {"type": "function_call_output", "call_id": "zz", "output": "late"},
            ],
        }
    )
    assert up.payload["messages"] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": ""},
        {"role": "user", "content": "next"},
        {"role": "user", "content": "[tool result] late"},
    ]
    assert len(up.notes) == 2


def test_namespace_names_stay_unique_and_short() -> None:
    long = "n" * 40
    parsed, up = translate(
        {
            "model": "m",
            "input": "x",
            "tools": [
                {"type": "function", "name": "a__b"},
                {
                    "type": "namespace",
                    "name": "a",
                    "description": "",
                    "tools": [{"type": "function", "name": "b"}],
                },
                {
                    "type": "namespace",
                    "name": long,
                    "description": "",
                    "tools": [{"type": "function", "name": "f" * 40}],
                },
            ],
        }
    )
    names = [t["function"]["name"] for t in up.payload["tools"]]
    assert names[:2] == ["a__b", "a__b_2"]
    assert len(names[2]) == 64
    assert names[2].startswith(long + "__")
    assert parsed.names.by_flat["a__b_2"] == Named("b", "a")
    assert parsed.names.by_flat["a__b"] == Named("a__b")


def test_tool_choice_forms() -> None:
    tools = [{"type": "function", "name": "f"}, {"type": "function", "name": "g"}]
    _, up = translate({"model": "m", "input": "x", "tools": tools, "tool_choice": "required"})
    assert up.payload["tool_choice"] == "required"
    _, up = translate(
        {
            "model": "m",
            "input": "x",
            "tools": tools,
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "g"}],
            },
        }
    )
    assert [t["function"]["name"] for t in up.payload["tools"]] == ["g"]
    assert up.payload["tool_choice"] == "required"
    _, up = translate(
        {"model": "m", "input": "x", "tools": tools, "tool_choice": {"type": "web_search"}}
    )
    assert "tool_choice" not in up.payload
    assert [k for k, _ in up.warnings] == ["responses tool_choice web_search"]
    # no tools left: neither tool_choice nor parallel_tool_calls (OpenAI refuses them alone)
    _, up = translate(
        {
            "model": "m",
            "input": "x",
            "tools": [{"type": "file_search"}],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
        }
    )
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(up.payload)


def test_reasoning_effort_none_switches_reasoning_off() -> None:
    target = Target("gpt-5", thinking=True, think_off={"reasoning_effort": "minimal"})
    parsed, up = translate(
        {"model": "gpt-5", "input": "x", "reasoning": {"effort": "none"}}, target
    )
    assert up.payload["reasoning_effort"] == "minimal"
    assert parsed.reasoning is False


def test_json_object_and_plain_text_formats() -> None:
    _, up = translate(
        {"model": "m", "input": "json please", "text": {"format": {"type": "json_object"}}}
    )
    assert up.payload["response_format"] == {"type": "json_object"}
    _, up = translate({"model": "m", "input": "x", "text": {"format": {"type": "text"}}})
    assert "response_format" not in up.payload


def test_fields_without_an_equivalent_are_warned_about_once_each() -> None:
    parsed, up = translate(
        {
            "model": "m",
            "input": "x",
            "store": True,
            "truncation": "auto",
            "metadata": {"a": "b"},
            "user": "u",
            "top_logprobs": 2,
            "client_metadata": {"x": 1},
        }
    )
    assert {k for k, _ in up.warnings} == {
        "responses store",
        "responses truncation",
        "responses metadata",
        "responses user",
        "responses top_logprobs",
    }
    assert parsed.unknown == ["client_metadata"]
    assert set(up.payload) == {"model", "messages", "stream"}


def test_hosted_call_items_are_dropped_with_a_warning_and_images_off_user_messages_noted() -> None:
    _, up = translate(
        {
            "model": "m",
            "input": [
                {"type": "web_search_call", "id": "ws_1", "status": "completed"},
                {
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Found it."}],
                },
                {
                    "type": "function_call_output",
                    "call_id": "q",
                    "output": [{"type": "input_image", "image_url": "https://example.com/a.png"}],
                },
                {
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "https://example.com/b.png"}],
                },
            ],
        }
    )
    assert up.payload["messages"][0] == {"role": "assistant", "content": "Found it."}
    assert up.payload["messages"][-1] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "https://example.com/b.png"}}],
    }
    assert [k for k, _ in up.warnings] == ["responses input web_search_call"]
    assert "images on a tool message are not supported upstream; dropped" in up.notes


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "stateless"),
        ({"conversation": "conv_1"}, "conversation", "stateless"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt", "stores no prompts"),
        ({"background": True}, "background", "keeps no responses"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "stateless"),
        ({"input": [{"type": "telepathy"}]}, "input[0].type", "unknown input item type"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "must be user"),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
            "required",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "a", "arguments": "{}"}]},
            "input[0].name",
            "required",
        ),
        (
            {"input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
            "required",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
            "not supported",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
            "Files API",
        ),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_image", "image_url": "data:image/png;base64,%%"}
                        ],
                    }
                ]
            },
            "input[0].content[0].image_url",
            "base64",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
            "string",
        ),
        ({"tools": [{"type": "function"}]}, "tools[0]", "name is required"),
        (
            {"tools": [{"type": "namespace", "name": "n", "tools": [{"type": "web_search"}]}]},
            "tools[0].tools[0]",
            "function and custom",
        ),
        (
            {"tools": [{"type": "function", "name": "f"}], "tool_choice": "sometimes"},
            "tool_choice",
            "auto, none or required",
        ),
        (
            {
                "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "function", "name": "g"},
            },
            "tool_choice",
            "not among the tools",
        ),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort", "invalid"),
        (
            {"text": {"format": {"type": "json_schema", "name": "x"}}},
            "text.format.schema",
            "required",
        ),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type", "invalid"),
        ({"input": []}, "input", "input is required"),
        ({"input": [{"type": "web_search_call", "id": "ws"}]}, "input", "input is required"),
    ],
)
def test_refusals_name_the_field(extra: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(BadRequest) as info:
        translate({"model": "m", "input": "x", **extra})
    assert info.value.status == 400
    assert info.value.param == param
    assert words in info.value.message


def test_reasoning_items_join_and_go_with_their_own_assistant_turn_only() -> None:
    deepseek = Policy(profile=PROFILES["deepseek"])
    target = Target.of("deepseek-chat", deepseek.profile)
    think = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "a"}]}
    raw = {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "b"}]}
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    result = {"type": "function_call_output", "call_id": "c", "output": "ok"}
    parsed, up = translate(
        {
            "model": "deepseek-chat",
            "input": [think, {"role": "user", "content": "hi"}, think, raw, call, result],
        },
        target,
        deepseek,
    )
    messages = up.payload["messages"]
    assert "reasoning_content" not in messages[0]  # the first one had no assistant turn
    assert messages[1]["reasoning_content"] == "a\n\nb"
    assert "a reasoning item with no assistant turn after it: not sent" in parsed.adapted


def test_unknown_fields_are_named_for_the_handler_to_log_once() -> None:
    """The names go to logs.WarnOnce.names: one line per request, whatever their number."""
    parsed, up = translate({"model": "m", "input": "x", **{f"f{i}": i for i in range(50)}})
    assert parsed.unknown == [f"f{i}" for i in range(50)]
    assert up.warnings == []
    long = "x" * 1000
    parsed, _ = translate({"model": "m", "input": "x", long: 1})
    assert parsed.unknown == [echo(long)]  # a client's name, bounded for the log
