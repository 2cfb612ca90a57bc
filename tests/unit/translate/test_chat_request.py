from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from ollama_openai_bridge.errors import BadRequest
from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.schemas import CHAT, GENERATE
from ollama_openai_bridge.translate.chat import (
    chat_request,
    completion_request,
    generate_request,
    messages_to_openai,
    uses_completions,
)
from tests.conftest import contract

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def chat(req: dict[str, Any], target: Target | None = None) -> Any:
    # Through the real schema, as the route does: clients' extra fields are ignored there.
    return chat_request(
        CHAT.validate_python(req), target or Target(req.get("model", "m")), Policy()
    )


def normalise_arguments(payload: dict[str, Any]) -> dict[str, Any]:
    """Tool-call argument strings compared as JSON values (whitespace is not a contract), and
    synthesised ids renamed by order of appearance (their format is implementation-defined; the
    pairing of call and result is what matters)."""
    ids: dict[str, str] = {}
    for m in payload["messages"]:
        for tc in m.get("tool_calls") or ():
            tc["function"]["arguments"] = orjson.loads(tc["function"]["arguments"])
            tc["id"] = ids.setdefault(tc["id"], f"id{len(ids)}")
        if m["role"] == "tool":
            m["tool_call_id"] = ids[m["tool_call_id"]]
    return payload


def test_golden_tools_roundtrip_request() -> None:
    fx = contract("mapping_chat_tools_roundtrip.json")
    up = chat(fx["ollama_request"])
    assert normalise_arguments(up.payload) == normalise_arguments(fx["expected_openai_request"])
    assert sorted(up.dropped_options) == ["mirostat", "num_ctx"]


def test_golden_images_format_options_request() -> None:
    fx = contract("mapping_chat_images_format_think.json")
    up = chat(fx["ollama_request"], Target("vision-reasoner", "reasoning_effort", thinking=True))
    assert up.payload == fx["expected_openai_request"]
    assert sorted(up.dropped_options) == ["num_ctx", "repeat_penalty", "top_k"]


def test_stream_defaults_to_true_and_requests_usage() -> None:
    up = chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert up.payload["stream"] is True
    assert up.payload["stream_options"] == {"include_usage": True}


def test_non_streaming_has_no_stream_options() -> None:
    up = chat({"model": "m", "stream": False, "messages": [{"role": "user", "content": "hi"}]})
    assert up.payload["stream"] is False
    assert "stream_options" not in up.payload


def test_roles_content_and_unknown_fields() -> None:
    up = chat(
        {
            "model": "m",
            "keep_alive": "5m",
            "truncate": True,
            "metadata": {"x": 1},
            "messages": [
                {"role": "System", "content": "be terse"},
                {"role": "user", "content": "hi", "extra": 1},
                {"role": "assistant"},  # ollama-python drops empty content
                {"role": "user", "content": "again", "images": []},
            ],
        }
    )
    assert up.payload["messages"] == [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "again"},
    ]


def test_empty_tools_dropped_nonempty_kept() -> None:
    assert (
        "tools" not in chat({"messages": [{"role": "user", "content": "x"}], "tools": []}).payload
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert (
        chat({"messages": [{"role": "user", "content": "x"}], "tools": tools}).payload["tools"]
        == tools
    )


def test_invalid_role_is_400() -> None:
    with pytest.raises(BadRequest, match=r"invalid message role 'robot' at messages\.0"):
        chat({"messages": [{"role": "robot", "content": "x"}]})


def test_model_is_the_upstream_id_given() -> None:
    up = chat_request(
        CHAT.validate_python({"model": "alias", "messages": [{"role": "user", "content": "x"}]}),
        Target("real-id"),
        Policy(),
    )
    assert up.payload["model"] == "real-id"


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("json", {"type": "json_object"}),
        (
            {"type": "object"},
            {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": {"type": "object"}},
            },
        ),
        ("", None),
        (None, None),
    ],
)
def test_format(fmt: Any, expected: Any) -> None:
    up = chat({"messages": [{"role": "user", "content": "x"}], "format": fmt})
    assert up.payload.get("response_format") == expected


def test_invalid_format_is_400() -> None:
    with pytest.raises(BadRequest, match="invalid format"):
        chat({"messages": [{"role": "user", "content": "x"}], "format": "yaml"})


def test_logprobs() -> None:
    up = chat({"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 3})
    assert (up.payload["logprobs"], up.payload["top_logprobs"]) == (True, 3)


# --- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "mime"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 8, "image/jpeg"),
        (b"GIF89a" + b"\0" * 6, "image/gif"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "image/webp"),
        (b"BM" + b"\0" * 10, "image/jpeg"),
    ],
)
def test_image_mime_sniffed_from_bytes(raw: bytes, mime: str) -> None:
    b64 = base64.b64encode(raw).decode()
    up = chat({"messages": [{"role": "user", "content": "what?", "images": [b64]}]})
    assert up.payload["messages"][0]["content"] == [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{b64}"}},
    ]


def test_image_data_url_passes_through_and_no_empty_text_part() -> None:
    url = f"data:image/png;base64,{PNG}"
    up = chat({"messages": [{"role": "user", "content": "", "images": [url]}]})
    assert up.payload["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": url}}
    ]


@pytest.mark.parametrize("bad", ["not base64!!", "iVBORw0KGgo", "abc"])
def test_invalid_base64_image_is_400(bad: str) -> None:
    with pytest.raises(BadRequest, match="invalid image"):
        chat({"messages": [{"role": "user", "content": "x", "images": [bad]}]})


def test_images_on_non_user_messages_dropped_with_note() -> None:
    up = chat(
        {
            "messages": [
                {"role": "assistant", "content": "x", "images": [PNG]},
                {"role": "user", "content": "y"},
            ]
        }
    )
    assert up.payload["messages"][0] == {"role": "assistant", "content": "x"}
    assert any("images" in n for n in up.notes)


# --- tool history ---------------------------------------------------------------------------


def test_tool_results_paired_by_name_then_position() -> None:
    fx = contract("chat_tool_history_request.json")
    notes: list[str] = []
    msgs = messages_to_openai(CHAT.validate_python(fx["request"])["messages"] or [], notes)
    calls = msgs[1]["tool_calls"]
    assert [c["id"] for c in calls] == ["c00001000", "c00001001"]
    assert msgs[1]["content"] is None
    assert [m["tool_call_id"] for m in msgs[2:]] == ["c00001000", "c00001001"]
    assert orjson.loads(calls[1]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert notes == []


def test_tool_result_paired_by_id_and_name() -> None:
    notes: list[str] = []
    msgs = messages_to_openai(
        [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": "checking",
                "tool_calls": [
                    {"id": "a", "function": {"name": "f", "arguments": {}}},
                    {"id": "b", "function": {"name": "g", "arguments": '{"x": 1}'}},
                ],
            },
            {"role": "tool", "content": "G", "tool_name": "g"},
            {"role": "tool", "content": "F", "tool_call_id": "a"},
        ],
        notes,
    )
    assert msgs[1]["content"] == "checking"
    assert msgs[1]["tool_calls"][1]["function"]["arguments"] == '{"x": 1}'
    assert [(m["tool_call_id"], m["content"]) for m in msgs[2:]] == [("b", "G"), ("a", "F")]


def test_missing_tool_results_are_filled_and_orphans_kept_as_user_text() -> None:
    notes: list[str] = []
    msgs = messages_to_openai(
        [
            {"role": "tool", "content": "orphan", "tool_name": "f"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]},
            {"role": "user", "content": "next"},
        ],
        notes,
    )
    assert msgs == [
        {"role": "user", "content": "[tool result f] orphan"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c00001000",
                    "type": "function",
                    "function": {"name": "f", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c00001000", "content": ""},
        {"role": "user", "content": "next"},
    ]
    assert len(notes) == 2


# --- generate -------------------------------------------------------------------------------


def test_generate_system_prompt_images_options() -> None:
    fx = contract("generate_nonstream.json")
    req = GENERATE.validate_python(fx["request"])
    up = generate_request(req, Target("llama3.2"), Policy())
    assert up.payload == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Answer in one sentence."},
            {"role": "user", "content": "Why is the sky blue?"},
        ],
        "stream": False,
        "temperature": 0.7,
    }
    assert up.dropped_options == ["num_ctx"]


def test_generate_ignored_fields_are_noted() -> None:
    req = GENERATE.validate_python(
        {
            "model": "m",
            "prompt": "p",
            "template": "t",
            "context": [1, 2],
            "raw": True,
            "images": [PNG],
        }
    )
    up = generate_request(req, Target("m"), Policy())
    assert up.payload["messages"][0]["content"][1]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )
    assert len(up.notes) == 2  # template, raw; a context is read back by the route


def test_completion_request_for_suffix_and_raw() -> None:
    req = GENERATE.validate_python(
        {
            "model": "m",
            "prompt": "def f(",
            "suffix": "    return x",
            "stream": False,
            "options": {"temperature": 0.1, "stop": ["\n\n"]},
            "format": "json",
            "images": [PNG],
            "think": True,
        }
    )
    assert uses_completions(req)
    up = completion_request(req, Target("coder"), Policy(completions_max_tokens=99))
    assert up.payload == {
        "model": "coder",
        "prompt": "def f(",
        "suffix": "    return x",
        "stream": False,
        "temperature": 0.1,
        "stop": ["\n\n"],
        "max_tokens": 99,
    }
    assert len(up.notes) == 3  # format, images, think
    raw = GENERATE.validate_python(
        {"model": "m", "prompt": "<|user|>hi", "raw": True, "options": {"num_predict": 5}}
    )
    assert uses_completions(raw)
    up = completion_request(raw, Target("m"), Policy())
    assert up.payload == {
        "model": "m",
        "prompt": "<|user|>hi",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 5,
    }
    assert not uses_completions(GENERATE.validate_python({"model": "m", "prompt": "x"}))


@pytest.mark.parametrize(
    ("think", "target", "expected"),
    [
        ("high", Target("m", "reasoning_effort", thinking=True), {"reasoning_effort": "high"}),
        (True, Target("m", "reasoning_effort", thinking=True), {"reasoning_effort": "medium"}),
        ("max", Target("m", "reasoning_effort", thinking=True), {"reasoning_effort": "high"}),
        (
            "max",
            Target("m", "reasoning_effort", thinking=True, efforts=("low", "high", "xhigh")),
            {"reasoning_effort": "xhigh"},
        ),
        (
            "max",
            Target("m", "reasoning_effort", thinking=True, efforts=("low", "max", "high")),
            {"reasoning_effort": "max"},
        ),
        (
            "max",
            Target("m", "reasoning_effort", thinking=True, efforts=()),
            {"reasoning_effort": "high"},
        ),
        ("max", Target("m", "openrouter", thinking=True), {"reasoning": {"effort": "high"}}),
        (False, Target("m", "reasoning_effort", thinking=True), {}),
        (True, Target("m", "reasoning_effort", thinking=False), {}),
        ("low", Target("m", "openrouter", thinking=True), {"reasoning": {"effort": "low"}}),
        (False, Target("m", "openrouter", thinking=True), {"reasoning": {"enabled": False}}),
        (
            True,
            Target("m", "chat_template_kwargs"),
            {"chat_template_kwargs": {"enable_thinking": True}},
        ),
        (
            False,
            Target("m", "chat_template_kwargs"),
            {"chat_template_kwargs": {"enable_thinking": False}},
        ),
        (True, Target("m", "none", thinking=True), {}),
        (None, Target("m", "reasoning_effort", thinking=True), {}),
    ],
)
def test_think_styles(think: Any, target: Target, expected: dict[str, Any]) -> None:
    up = chat({"messages": [{"role": "user", "content": "x"}], "think": think}, target)
    keys = {"reasoning_effort", "reasoning", "chat_template_kwargs"}
    assert {k: v for k, v in up.payload.items() if k in keys} == expected


def test_think_notes() -> None:
    assert chat({"messages": [{"role": "user", "content": "x"}], "think": True}, Target("m")).notes
    assert chat(
        {"messages": [{"role": "user", "content": "x"}], "think": "low"},
        Target("m", "chat_template_kwargs"),
    ).notes


# --- hostile but legal input (issue #14) ----------------------------------------------------


@pytest.mark.parametrize(
    ("image", "detail"),
    [
        ("é", "string argument should contain only ASCII characters"),  # was a ValueError: 500
        ("", "empty"),
        (" QUJD", "not valid base64"),  # Go's decoder does not strip white space either
        ("data:text/plain;base64,QUJD", "data:image/<type>;base64,<data>"),
        ("data:image/png;base64,", "empty"),
        ("data:image/png;base64,é", "not valid base64"),
    ],
)
def test_an_invalid_image_is_400_naming_it(image: str, detail: str) -> None:
    msgs = [
        {"role": "user", "content": "x"},
        {"role": "user", "content": "y", "images": ["QUJD", image]},
    ]
    with pytest.raises(BadRequest) as info:
        chat({"messages": msgs})
    assert info.value.message.startswith("invalid image at messages.1.images.1: ")
    assert detail in info.value.message
    assert info.value.param == "messages.1.images.1"


def test_images_are_checked_even_where_they_are_dropped() -> None:
    with pytest.raises(BadRequest, match=r"invalid image at messages\.0\.images\.0"):
        chat({"messages": [{"role": "assistant", "content": "x", "images": ["é"]}]})
    raw = GENERATE.validate_python({"model": "m", "prompt": "x", "raw": True, "images": ["é"]})
    with pytest.raises(BadRequest, match=r"invalid image at images\.0"):
        completion_request(raw, Target("m"), Policy())
    generate = GENERATE.validate_python({"model": "m", "prompt": "x", "images": ["QUJD", "é"]})
    with pytest.raises(BadRequest, match=r"invalid image at images\.1"):
        generate_request(generate, Target("m"), Policy())


def test_many_tool_results_pair_in_linear_time() -> None:
    """A result finds its call in constant time: 20,000 calls answered in reverse order, then
    20,000 results matching nothing, take well under a second (the quadratic search they
    replaced took minutes)."""
    import time

    n = 20_000
    calls = [{"id": f"c{j}", "function": {"name": f"f{j}"}} for j in range(n)]
    results = [
        {"role": "tool", "tool_call_id": f"c{j}", "content": "r"} for j in reversed(range(n))
    ]
    strays = [{"role": "tool", "tool_call_id": f"x{j}", "content": "r"} for j in range(n)]
    history: list[Any] = [{"role": "assistant", "tool_calls": calls}, *results, *strays]
    notes: list[str] = []
    start = time.perf_counter()
    out = messages_to_openai(history, notes)
    assert time.perf_counter() - start < 2
    assert [m["tool_call_id"] for m in out[1 : n + 1]] == [f"c{j}" for j in reversed(range(n))]
    assert all(m["role"] == "user" for m in out[n + 1 :])


def test_a_repeated_call_id_gets_its_own_answer() -> None:
    calls: Any = [
        {"id": "same", "function": {"name": "f"}},
        {"id": "same", "function": {"name": "g"}},
    ]
    out = messages_to_openai(
        [
            {"role": "assistant", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "same", "content": "1"},
            {"role": "tool", "tool_name": "g", "content": "2"},
        ],
        [],
    )
    ids = [c["id"] for c in out[0]["tool_calls"]]
    assert ids == ["same", "c00000001"]  # OpenAI wants each id once
    assert [(m["tool_call_id"], m["content"]) for m in out[1:]] == [
        ("same", "1"),
        ("c00000001", "2"),
    ]


@pytest.mark.parametrize(("top", "sent", "noted"), [(None, 0, False), (3, 3, False), (20, 5, True)])
def test_completions_take_logprobs_as_one_integer(top: int | None, sent: int, noted: bool) -> None:
    req = GENERATE.validate_python(
        {"model": "m", "prompt": "x", "raw": True, "logprobs": True, "top_logprobs": top}
    )
    up = completion_request(req, Target("m"), Policy())
    assert up.payload["logprobs"] == sent
    assert "top_logprobs" not in up.payload
    assert any("top_logprobs" in n for n in up.notes) is noted


def test_a_tool_without_its_type_is_sent_as_a_function() -> None:
    tools = [{"function": {"name": "f"}}, {"type": "function", "function": {"name": "g"}}]
    up = chat({"messages": [{"role": "user", "content": "x"}], "tools": tools})
    assert up.payload["tools"] == [
        {"type": "function", "function": {"name": "f"}},
        {"type": "function", "function": {"name": "g"}},
    ]
