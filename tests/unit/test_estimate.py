"""Token estimates for what a backend did not count (translate/estimate.py): characters / 4,
rounded up, and 1,600 per image -- the rule of anthropic.estimate_tokens (count_tokens)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ollama_openai_bridge.translate.anthropic import estimate_tokens
from ollama_openai_bridge.translate.estimate import output_chars, prompt_tokens, tokens

TOOL = {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": [{"role": "user", "content": "x" * 120}]}, 31),  # 124 characters
        ({"messages": [{"role": "user", "content": "hi"}]}, 2),  # "user" + "hi": 6
        ({"messages": []}, 1),  # never 0: a request costs something
        ("not an object", 1),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "abcd"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}},
                        ],
                    }
                ]
            },
            2 + 1600,  # an image is 1,600 tokens, not its base64 characters
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"function": {"name": "get", "arguments": '{"a":1}'}}],
                    }
                ]
            },
            5,  # "assistant" + "get" + '{"a":1}': 19 characters
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "tools": [TOOL]}, None),
        ({"prompt": "x" * 40}, 10),  # completions
        ({"prompt": [[1, 2, 3], [4]]}, 4),  # token ids count as themselves
        ({"input": ["abcd", "efgh"]}, 2),  # embeddings
        ({"input": [5, 6, 7]}, 3),
    ],
)
def test_a_prompt_is_estimated_from_its_characters(body: Any, expected: int | None) -> None:
    if expected is None:  # the tools by their JSON size, as count_tokens counts them
        expected = tokens(6 + len(orjson.dumps(TOOL)))
    assert prompt_tokens(body) == expected


def test_the_same_rule_as_count_tokens() -> None:
    anthropic = {"messages": [{"role": "user", "content": "y" * 99}], "tools": [TOOL]}
    openai = {"messages": [{"role": "user", "content": "y" * 99}], "tools": [TOOL]}
    assert prompt_tokens(openai) == estimate_tokens(anthropic)


@pytest.mark.parametrize(
    ("answer", "chars"),
    [
        ({"choices": [{"message": {"content": "Hello!"}}]}, 6),
        ({"choices": [{"delta": {"content": "Hel"}}]}, 3),
        ({"choices": [{"delta": {"reasoning_content": "hmm", "content": "ok"}}]}, 5),
        ({"choices": [{"delta": {"reasoning": "hmm"}}]}, 3),
        ({"choices": [{"text": "abc"}]}, 3),  # completions
        (
            {"choices": [{"message": {"content": [{"type": "text", "text": "ab"}]}}]},
            2,  # typed parts (Magistral)
        ),
        (
            {
                "choices": [
                    {
                        "message": {
                            "content": None,
                            "tool_calls": [{"function": {"name": "get", "arguments": "{}"}}],
                        }
                    }
                ]
            },
            5,
        ),
        ({"choices": [], "usage": {"prompt_tokens": 1}}, 0),
        ({"data": [{"embedding": [0.1]}]}, 0),  # embeddings produce no text
        (b'{"choices":[{"message":{"content":"abcd"}}]}', 4),  # a relayed answer's bytes
        (b"not json", 0),
        (None, 0),
    ],
)
def test_an_answer_s_characters(answer: Any, chars: int) -> None:
    assert output_chars(answer) == chars


def test_characters_become_tokens_rounded_up() -> None:
    assert [tokens(n) for n in (0, 1, 4, 5, 200, -3)] == [0, 1, 1, 2, 50, 0]
