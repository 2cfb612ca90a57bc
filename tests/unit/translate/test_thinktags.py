"""<think>...</think> inside content -> thinking (translate/thinktags.py), whole and streamed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_openai_bridge.translate.answer import chat_response, generate_response
from ollama_openai_bridge.translate.stream import StreamTranslator
from ollama_openai_bridge.translate.thinktags import ThinkSplitter, split_think

CASES = [
    (
        "<think>\nWhy is it blue?\n</think>\n\nRayleigh scattering.",
        "Rayleigh scattering.",
        "Why is it blue?",
    ),
    ("  <think>a</think>b", "b", "a"),
    ("<think></think>\n\nHi", "Hi", ""),
    ("No tags at all.", "No tags at all.", None),
    (
        "Quoting <think>x</think> later is content",
        "Quoting <think>x</think> later is content",
        None,
    ),
    ("<think>cut short by num_predict", "", "cut short by num_predict"),
    ("<think>a</think>b</think>c", "b</think>c", "a"),
]


@pytest.mark.parametrize(("text", "content", "thinking"), CASES)
def test_a_whole_answer(text: str, content: str, thinking: str | None) -> None:
    assert split_think(text) == (content, thinking)


def streamed(parts: list[str]) -> tuple[str, str]:
    s = ThinkSplitter()
    content, thinking = "", ""
    for part in parts:
        c, t = s.feed(part)
        content, thinking = content + c, thinking + t
    c, t = s.flush()
    return content + c, thinking + t


@pytest.mark.parametrize(("text", "content", "thinking"), CASES)
def test_a_stream_cut_at_every_character(text: str, content: str, thinking: str | None) -> None:
    assert streamed(list(text)) == (content, thinking or "")
    assert streamed([text]) == (content, thinking or "")


@settings(max_examples=300, deadline=None)
@given(
    text=st.sampled_from([c[0] for c in CASES]) | st.text(alphabet="<>/thinkab \n", max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
)
def test_any_cut_of_a_stream_reads_as_the_whole_answer(text: str, cuts: list[int]) -> None:
    points = sorted({c for c in cuts if c <= len(text)})
    parts = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    content, thinking = split_think(text)
    assert streamed(parts) == (content, thinking or "")


def test_nothing_is_held_back_once_the_block_is_over() -> None:
    s = ThinkSplitter()
    assert s.feed("<think>x</think>") == ("", "x")
    assert s.feed("\n\n") == ("", "")  # whitespace after the tag is not content
    assert s.feed("Hello") == ("Hello", "")
    assert s.feed(" <") == (" <", "")  # no longer looking for tags


def test_an_answer_without_tags_is_held_back_only_while_it_could_be_one() -> None:
    s = ThinkSplitter()
    assert s.feed("<th") == ("", "")
    assert s.feed("e best") == ("<the best", "")


def lines(out: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in out.splitlines()]


@pytest.mark.parametrize("think", [True, False])
def test_the_stream_translator_splits_tags_when_the_profile_says_so(think: bool) -> None:
    tr = StreamTranslator("qwen3", generate=False, think=think, start_ns=0, think_tags=True)
    out = b""
    for piece in ["<thi", "nk>Let me", " see.</th", "ink>\n\nIt is ", "42."]:
        event = {"choices": [{"index": 0, "delta": {"content": piece}}]}
        out += tr.feed(orjson.dumps(event).decode())
    out += tr.feed('{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}') + tr.finish()
    got = lines(out)
    content = "".join(x["message"]["content"] for x in got)
    thinking = "".join(x["message"].get("thinking", "") for x in got)
    assert content == "It is 42."
    assert thinking == ("Let me see." if think else "")
    assert got[-1]["done"] is True
    assert all(x["message"]["content"] or x["message"].get("thinking") for x in got[:-1])


def test_a_stream_cut_inside_the_block_ends_with_its_thinking() -> None:
    tr = StreamTranslator("m", generate=True, think=True, start_ns=0, think_tags=True)
    out = tr.feed('{"choices":[{"index":0,"delta":{"content":"<think>half a thou"}}]}')
    out += tr.feed('{"choices":[{"index":0,"delta":{"content":"ght </th"}}]}')
    out += tr.finish()
    got = lines(out)
    assert "".join(x.get("thinking", "") for x in got) == "half a thought </th"
    assert "".join(x["response"] for x in got) == ""


def test_without_the_profile_tags_stay_content() -> None:
    tr = StreamTranslator("m", generate=False, think=True, start_ns=0)
    out = tr.feed('{"choices":[{"index":0,"delta":{"content":"<think>x</think>y"}}]}')
    assert lines(out)[0]["message"] == {"role": "assistant", "content": "<think>x</think>y"}


def test_whole_answers() -> None:
    body = {
        "choices": [{"message": {"content": "<think>hm</think>\nYes."}, "finish_reason": "stop"}]
    }
    chat = chat_response(body, "m", now_ns=0, total_ns=1, think=True, notes=[], think_tags=True)
    assert chat["message"] == {"role": "assistant", "content": "Yes.", "thinking": "hm"}
    off = chat_response(body, "m", now_ns=0, total_ns=1, think=False, notes=[], think_tags=True)
    assert off["message"] == {"role": "assistant", "content": "Yes."}
    gen = generate_response(body, "m", now_ns=0, total_ns=1, think=True, think_tags=True)
    assert (gen["response"], gen["thinking"]) == ("Yes.", "hm")


def test_tags_and_a_reasoning_field_together_give_the_thinking_once() -> None:
    # llama.cpp's --reasoning-format deepseek-legacy sends both.
    tr = StreamTranslator("m", generate=False, think=True, start_ns=0, think_tags=True)
    out = b""
    for content, reasoning in [("<think>Hm", "Hm"), (".</think>", "."), ("Yes", None)]:
        delta: dict[str, Any] = {"content": content}
        if reasoning:
            delta["reasoning_content"] = reasoning
        out += tr.feed(orjson.dumps({"choices": [{"index": 0, "delta": delta}]}).decode())
    out += tr.finish()
    got = lines(out)
    assert "".join(x["message"].get("thinking", "") for x in got) == "Hm."
    assert "".join(x["message"]["content"] for x in got) == "Yes"
    assert tr.adapted == ["reasoning split out of <think> tags in the content"]
