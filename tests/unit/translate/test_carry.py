"""What a backend needs back across turns (translate/carry.py, issue #16): the keys a call is
recognised by without its id, and the history given back with the backend's ids and data."""

from __future__ import annotations

from typing import Any

import pytest

from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.profiles import PROFILES
from ollama_openai_bridge.schemas import CHAT
from ollama_openai_bridge.translate.carry import (
    Recalled,
    answer_keys,
    call_key,
    current_turn,
    history_keys,
)
from ollama_openai_bridge.translate.chat import chat_request
from ollama_openai_bridge.translate.normalise import ToolCall

SIGNED = {"google": {"thought_signature": "c2ln"}}
STAND_IN = {"google": {"thought_signature": "skip_thought_signature_validator"}}


def call(name: str, args: Any, call_id: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"function": {"name": name, "arguments": args}}
    if call_id:
        out["id"] = call_id
    return out


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"city": "Paris", "unit": "c"}, {"unit": "c", "city": "Paris"}),  # key order
        ({"n": 1.0}, {"n": 1}),  # a JS client re-encodes 1.0 as 1
        ('{"city": "Paris"}', {"city": "Paris"}),  # JSON text sent back
        ({"xs": [1.0, {"b": 2, "a": 1}]}, {"xs": [1, {"a": 1, "b": 2}]}),
    ],
)
def test_a_replayed_call_has_the_key_it_was_kept_under(a: Any, b: Any) -> None:
    assert call_key("", "f", a, 0) == call_key("", "f", b, 0)


def test_keys_differ_by_caller_name_arguments_and_place() -> None:
    base = call_key("key:a", "f", {"x": 1}, 0)
    others = [
        call_key("key:b", "f", {"x": 1}, 0),  # one client never gets another's data
        call_key("key:a", "g", {"x": 1}, 0),
        call_key("key:a", "f", {"x": 2}, 0),
        call_key("key:a", "f", {"x": 1}, 1),  # the second identical call of a turn
    ]
    assert len({base, *others}) == 5
    assert base is not None
    assert len(base) == 32


@pytest.mark.parametrize(
    "args",
    [
        {1: "int key"},  # orjson refuses non-string keys
        {"n": 2**70},  # and integers beyond 64 bits
        "[" * 500 + "]" * 500,  # JSON text nested deeper than anyone needs (no recursion)
    ],
)
def test_a_call_whose_arguments_cannot_be_keyed_is_not_kept(args: Any) -> None:
    assert call_key("", "f", args, 0) is None
    history = [
        {"role": "user", "content": "?"},
        {"role": "assistant", "tool_calls": [call("f", args), call("g", {})]},
    ]
    keys, _ = history_keys(history, "")
    assert [at for at, _ in keys] == [(1, 1)]  # the other call still is


HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [call("w", {"city": "Paris"})]},
    {"role": "tool", "content": "18"},
    {"role": "user", "content": "And Rome, twice?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [call("w", {"city": "Rome"}), call("w", {"city": "Rome"})],
    },
    {"role": "tool", "content": "24"},
    {"role": "tool", "content": "24"},
    {"role": "assistant", "content": "", "tool_calls": [call("t", {})]},
]


def test_only_the_turn_in_progress_is_looked_up() -> None:
    assert current_turn(HISTORY) == 4
    assert current_turn([{"role": "assistant"}]) == 0
    keys, _ = history_keys(HISTORY, "")
    assert [at for at, _ in keys] == [(4, 0), (4, 1), (7, 0)]
    assert keys[0][1] == call_key("", "w", {"city": "Rome"}, 0)
    assert keys[1][1] == call_key("", "w", {"city": "Rome"}, 1)
    assert history_keys(HISTORY[:4], "") == ([], {})  # the usual request: nothing to look up


def test_a_call_repeated_in_a_later_step_of_the_turn_has_its_own_key() -> None:
    # Step 1 calls get_time({}), step 2 calls it again: each step's id and signature are its own.
    step = {"role": "assistant", "content": "", "tool_calls": [call("get_time", {})]}
    history = [{"role": "user", "content": "?"}, step, {"role": "tool", "content": "1"}]
    keys, seen = history_keys([*history, step, {"role": "tool", "content": "2"}], "")
    assert [k for _, k in keys] == [call_key("", "get_time", {}, n) for n in (0, 1)]
    # the answer to step 1's result, a second get_time: keyed as the turn's second of its kind
    _, seen = history_keys(history, "")
    made = [(ToolCall("id2", "get_time", "{}", SIGNED), call("get_time", {}))]
    assert answer_keys(made, "", seen) == [(call_key("", "get_time", {}, 1), made[0][0])]


def test_an_answers_calls_are_kept_when_the_backend_gave_an_id_or_data() -> None:
    made = [
        (ToolCall("g1", "w", '{"city": "Rome"}', SIGNED), call("w", {"city": "Rome"})),
        (ToolCall(None, "w", '{"city": "Rome"}'), call("w", {"city": "Rome"})),
        (ToolCall("g3", "w", '{"city": "Rome"}'), call("w", {"city": "Rome"})),
    ]
    kept = answer_keys(made, "key:a")
    assert [(k, c.id) for k, c in kept] == [
        (call_key("key:a", "w", {"city": "Rome"}, 0), "g1"),
        (call_key("key:a", "w", {"city": "Rome"}, 2), "g3"),  # its place counts the id-less one
    ]


def send(profile: str, messages: list[Any], kept: Any = None) -> list[Any]:
    p = PROFILES[profile]
    req = CHAT.validate_python({"model": "m", "messages": messages, "stream": False})
    out = chat_request(req, Target.of("m", p), Policy(profile=p), kept)
    return out.payload["messages"]  # type: ignore[no-any-return]


def test_the_backends_id_and_data_go_back_with_its_calls() -> None:
    kept = {
        (4, 0): Recalled("u", "m", "g1", SIGNED),
        (4, 1): Recalled("u", "m", "g2", None),
    }
    sent = send("openai-reference", HISTORY, kept)
    assert [c["id"] for c in sent[4]["tool_calls"]] == ["g1", "g2"]
    assert sent[4]["tool_calls"][0]["extra_content"] == SIGNED
    assert "extra_content" not in sent[4]["tool_calls"][1]
    assert [m.get("tool_call_id") for m in sent[5:7]] == ["g1", "g2"]  # results paired with them
    assert "extra_content" not in sent[7]["tool_calls"][0]  # no stand-in outside gemini


def test_the_clients_own_id_wins() -> None:
    messages = [
        {"role": "user", "content": "?"},
        {"role": "assistant", "content": "", "tool_calls": [call("w", {}, "mine")]},
        {"role": "tool", "content": "1"},
    ]
    sent = send("openai-reference", messages, {(1, 0): Recalled("u", "m", "g1", SIGNED)})
    assert sent[1]["tool_calls"][0]["id"] == "mine"
    assert sent[1]["tool_calls"][0]["extra_content"] == SIGNED


def test_gemini_gets_the_documented_stand_in_where_nothing_was_kept() -> None:
    sent = send("gemini", HISTORY, {(4, 0): Recalled("u", "m", "g1", SIGNED)})
    assert "extra_content" not in sent[1]["tool_calls"][0]  # an earlier turn: not checked
    assert sent[4]["tool_calls"][0]["extra_content"] == SIGNED  # kept: given back
    assert "extra_content" not in sent[4]["tool_calls"][1]  # parallel: the first is enough
    assert sent[7]["tool_calls"][0]["extra_content"] == STAND_IN  # nothing kept


def test_the_stand_in_is_logged_as_an_adaptation() -> None:
    p = PROFILES["gemini"]
    req = CHAT.validate_python({"model": "m", "messages": HISTORY, "stream": False})
    out = chat_request(req, Target.of("m", p), Policy(profile=p))
    assert sum("stand-in" in a for a in out.adapted) == 2  # messages 4 and 7
