"""A system message that is not the conversation's first (Claude Code ends its first request with
one; Codex sends developer items between turns; Ollama clients may send one anywhere): kept in
place, or folded into the leading system message where the backend profile says its chat
templates take one system message, first (profiles.SystemTurns). Golden pairs through the real
schemas and translators of every route (issue #17)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.profiles import PROFILES
from ollama_openai_bridge.schemas import (
    CHAT,
    MESSAGES,
    RESPONSES,
    MessagesRequest,
    ResponsesRequest,
    parse,
)
from ollama_openai_bridge.translate import anthropic, responses
from ollama_openai_bridge.translate.chat import UpstreamRequest, chat_request, synth_id
from tests.conftest import agent_request


def messages_body(body: dict[str, Any]) -> MessagesRequest:
    """A Messages request as the route reads it."""
    req: MessagesRequest = parse(MESSAGES, orjson.dumps(body))
    return req


def responses_body(body: dict[str, Any]) -> ResponsesRequest:
    """A Responses request as the route reads it."""
    req: ResponsesRequest = parse(RESPONSES, orjson.dumps(body))
    return req


FOLDED = "the vllm backend's chat templates take one system message, first"


def ollama(profile: str, messages: list[dict[str, Any]]) -> UpstreamRequest:
    p = PROFILES[profile]
    req = CHAT.validate_python({"model": "m", "messages": messages, "stream": False})
    return chat_request(req, Target.of("m", p), Policy(profile=p))


def roles(up: UpstreamRequest) -> list[str]:
    return [m["role"] for m in up.payload["messages"]]


LATE = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "system", "content": "From now on answer in French."},
    {"role": "user", "content": "sky?"},
]


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        # OpenAI takes system messages anywhere: the reference request, unchanged
        (
            "openai-reference",
            [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "system", "content": "From now on answer in French."},
                {"role": "user", "content": "sky?"},
            ],
        ),
        # the model's template takes one system message, first (vllm-project/vllm#41114)
        (
            "vllm",
            [
                {"role": "system", "content": "Be terse.\n\nFrom now on answer in French."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "sky?"},
            ],
        ),
    ],
)
def test_a_late_system_message_kept_or_folded(profile: str, expected: list[dict[str, Any]]) -> None:
    up = ollama(profile, LATE)
    assert up.payload["messages"] == expected
    folds = [a for a in up.adapted if "folded" in a]
    assert folds == (
        []
        if profile == "openai-reference"
        else [f"1 system message(s) after the first message folded into the leading one: {FOLDED}"]
    )


@pytest.mark.parametrize(
    "profile",
    sorted(name for name, p in PROFILES.items() if p.system_turns == "fold"),
)
def test_every_folding_profile_sends_one_leading_system_message(profile: str) -> None:
    up = ollama(profile, LATE)
    assert roles(up) == ["system", "user", "assistant", "user"]


def test_without_a_leading_system_message_one_is_made() -> None:
    up = ollama("vllm", [{"role": "user", "content": "hi"}, {"role": "system", "content": "S"}])
    assert up.payload["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
    ]


def test_two_leading_system_messages_become_one() -> None:
    # Qwen3.5's template raises for any system message but the first, a second leading one too
    msgs = [{"role": "system", "content": "A"}, {"role": "system", "content": "B"}, *LATE[1:2]]
    up = ollama("llamacpp", msgs)
    assert up.payload["messages"] == [
        {"role": "system", "content": "A\n\nB"},
        {"role": "user", "content": "hi"},
    ]


def test_a_system_message_between_calls_and_results_does_not_unpair_them() -> None:
    # Folded out of the history before it could close the round of tool calls.
    call = {"function": {"name": "ls", "arguments": {}}}
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": "list"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "system", "content": "Hook: ls ran."},
        {"role": "tool", "content": "a.txt", "tool_name": "ls"},
    ]
    up = ollama("vllm", msgs)
    assert up.payload["messages"] == [
        {"role": "system", "content": "Hook: ls ran."},
        {"role": "user", "content": "list"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": synth_id(1, 0),
                    "type": "function",
                    "function": {"name": "ls", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": synth_id(1, 0), "content": "a.txt"},
    ]
    assert up.notes == []


def test_claude_codes_first_request_ends_with_a_system_turn() -> None:
    # As captured: messages [user, system]; the top-level system prompt leads.
    body = agent_request("claude_code_01_post_v1_messages.json")
    conv = anthropic.read_request(messages_body(body))
    p = PROFILES["vllm"]
    up = anthropic.messages_request(conv, Target.of("m", p), Policy(profile=p))
    messages = up.payload["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "You have been invoked in the following environment" in messages[0]["content"]
    assert messages[0]["content"].index("# Environment") > 0  # after the top-level prompt
    again = anthropic.read_request(messages_body(body))
    kept = anthropic.messages_request(again, Target("m"), Policy())
    assert [m["role"] for m in kept.payload["messages"]] == ["system", "user", "system"]


def test_codexs_developer_items_between_turns() -> None:
    body = {
        "model": "m",
        "instructions": "You are Codex.",
        "input": [
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": "Sandbox: read-only."},
            {"role": "user", "content": "ls"},
        ],
    }
    parsed = responses.read_request(responses_body(body))
    p = PROFILES["sglang"]
    up = responses.chat_request(parsed, Target.of("m", p), Policy(profile=p))
    assert up.payload["messages"] == [
        {"role": "system", "content": "You are Codex.\n\nSandbox: read-only."},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "ls"},
    ]
