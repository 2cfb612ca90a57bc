"""/v1/responses input items merged into chat messages: runs of system, assistant and reasoning
items joined in linear time, every reasoning item of a turn kept, the input item each message
began with (for a limit's refusal), and duplicate tool names (issue #17's second review)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import pytest

from ollama_openai_bridge.errors import TooMany
from ollama_openai_bridge.limits import Limits, check_chat
from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.profiles import PROFILES
from ollama_openai_bridge.translate.response_tools import Named, ToolNames
from ollama_openai_bridge.translate.responses import chat_request, read_request

TEXT = "x" * 100


def developer(i: int) -> dict[str, Any]:
    return {"role": "developer", "content": f"{i} {TEXT}"}


def assistant(i: int) -> dict[str, Any]:
    return {"role": "assistant", "content": f"{i} {TEXT}"}


def reasoning(i: int) -> dict[str, Any]:
    return {"type": "reasoning", "summary": [{"type": "summary_text", "text": f"{i} {TEXT}"}]}


def call(i: int) -> dict[str, Any]:
    return {"type": "function_call", "call_id": f"c{i}", "name": "f", "arguments": "{}"}


def result(i: int) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": f"c{i}", "output": str(i)}


def cpu_seconds(items: list[dict[str, Any]]) -> float:
    """The least CPU time of five translations (the least is the one others disturbed least)."""
    body = {"model": "m", "input": [{"role": "user", "content": "q"}, *items, call(0)]}
    best = float("inf")
    gc.collect()
    for _ in range(5):
        start = time.process_time()
        read_request(body)
        best = min(best, time.process_time() - start)
    return best


@pytest.mark.parametrize("item", [developer, assistant, reasoning], ids=lambda f: f.__name__)
def test_a_run_of_merged_items_costs_linear_time(item: Callable[[int], dict[str, Any]]) -> None:
    """The review of #17: each item's text was appended to a growing string, so 99,999
    developer items (13.8 MB, within every limit) held the event loop for 184 s. Four times
    the items must cost about four times the time (quadratic: sixteen)."""
    small = cpu_seconds([item(i) for i in range(4_000)])
    large = cpu_seconds([item(i) for i in range(16_000)])
    assert large < 8 * max(small, 0.001), (small, large)


def test_merged_runs_keep_their_texts_in_order() -> None:
    parsed = read_request(
        {
            "model": "m",
            "instructions": "i",
            "input": [
                {"role": "developer", "content": "d1"},
                {"role": "system", "content": ""},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": ""},
                {"role": "assistant", "content": "a1"},
                {"role": "assistant", "content": ""},
                {"role": "assistant", "content": "a2"},
            ],
        }
    )
    assert parsed.messages == [
        {"role": "system", "content": "i\n\nd1\n\n"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a1\n\na2"},
    ]
    assert parsed.adapted.count("consecutive system/developer messages merged into one") == 1


def test_reasoning_between_calls_of_one_turn_is_all_kept_in_order() -> None:
    """Reasoning A, call 1, reasoning B, call 2: one assistant turn, whose reasoning is both
    (A was overwritten by B): DeepSeek takes reasoning back and needs the whole of it."""
    deepseek = Policy(profile=PROFILES["deepseek"])
    target = Target.of("deepseek-chat", deepseek.profile)
    items = [
        {"role": "user", "content": "q"},
        reasoning(1),
        reasoning(2),
        call(1),
        reasoning(3),
        call(2),
        result(1),
        result(2),
    ]
    parsed = read_request({"model": "deepseek-chat", "input": items})
    up = chat_request(parsed, target, deepseek)
    turn = up.payload["messages"][1]
    assert [c["id"] for c in turn["tool_calls"]] == ["c1", "c2"]
    assert turn["reasoning_content"] == f"1 {TEXT}\n\n2 {TEXT}\n\n3 {TEXT}"


def test_each_message_knows_the_input_item_it_began_with() -> None:
    parsed = read_request(
        {
            "model": "m",
            "instructions": "i",
            "input": [
                {"role": "developer", "content": "d"},  # merged into the instructions' message
                {"role": "user", "content": "q"},
                reasoning(0),
                call(1),
                call(2),
                result(1),
                result(2),
            ],
        }
    )
    assert [m["role"] for m in parsed.messages] == ["system", "user", "assistant", "tool", "tool"]
    assert parsed.origins == [-1, 1, 3, 5, 6]  # the reasoning waited for its turn's first call
    assert parsed.where(2, "tool_calls") == (
        "function calls of the assistant turn from input[3]",
        "input[3]",
    )
    assert parsed.where(0, "images") == ("instructions.content", "input")


def test_too_many_calls_in_one_turn_are_refused_naming_the_input_item() -> None:
    """check_chat on the history as the backend gets it (routes/responses.py): REQUEST_MAX_TOOLS
    calls per assistant message, as /api/chat and /v1/messages are held to."""
    items = [{"role": "user", "content": "q"}, *(call(i) for i in range(5))]
    parsed = read_request({"model": "m", "input": items})
    check_chat(parsed.chat, Limits(tools=5), parsed.where)  # at the limit: fine
    with pytest.raises(TooMany) as refused:
        check_chat(parsed.chat, Limits(tools=4), parsed.where)
    assert refused.value.param == "input[1]"
    assert refused.value.message == (
        "too many items in 'function calls of the assistant turn from input[1]': 5 "
        "(at most 4, REQUEST_MAX_TOOLS)"
    )


def test_chat_names_keep_their_own_params() -> None:
    chat = {"messages": [{"role": "assistant", "tool_calls": [{}, {}]}]}
    with pytest.raises(TooMany) as refused:
        check_chat(chat, Limits(tools=1))
    assert refused.value.param == "messages[0].tool_calls"


def test_duplicate_tool_names_are_numbered_on_the_name_itself() -> None:
    names = ToolNames()
    flat = [names.add("f", None, False) for _ in range(4)]
    assert flat == ["f", "f_2", "f_3", "f_4"]  # not f_2_3
    assert names.add("f_2", None, False) == "f_2_2"  # a client's own f_2 is taken: numbered
    assert names.by_flat["f_3"] == Named("f")
    assert names.find("f", None) == "f"
    long = "n" * 70
    cut = [names.add(long, None, False) for _ in range(3)]
    assert cut == ["n" * 64, "n" * 62 + "_2", "n" * 62 + "_3"]
    assert all(len(n) <= 64 for n in cut)


def test_a_thousand_tools_of_one_name_are_named_in_one_pass() -> None:
    names = ToolNames()
    for _ in range(1_000):
        names.add("f", None, False)
    assert names._next["f"] == 1_001  # one suffix tried per tool, not a thousand
    assert len(names.by_flat) == 1_000
