"""Generate's ``context``: the conversation in signed integers, and what is refused."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from ollama_openai_bridge.errors import BadRequest
from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.schemas import GENERATE
from ollama_openai_bridge.translate.answer import generate_response
from ollama_openai_bridge.translate.chat import generate_request
from ollama_openai_bridge.translate.conversation import (
    INVALID,
    ContextCodec,
    Conversation,
)

KEY = b"k" * 32
CODEC = ContextCodec(KEY, 262_144, 1 << 26)
TALK = Conversation("Be brief.", (("Hi", "Hello!"), ("Sky colour?", "Blue.")))


def test_round_trip() -> None:
    ints = CODEC.encode(TALK, [])
    assert all(type(v) is int and 0 <= v < 2**24 for v in ints)  # exact in JS, int32, float32
    assert CODEC.decode(ints) == TALK
    assert CODEC.decode([]) == Conversation() == CODEC.decode(None)
    assert CODEC.decode(CODEC.encode(Conversation(), [])) == Conversation()


def test_unicode_and_compression() -> None:
    long = Conversation(None, (("ünïcode ☃ " * 500, "ok " * 2000),))
    ints = CODEC.encode(long, [])
    assert CODEC.decode(ints) == long
    assert len(ints) < 200  # 11 KB of repetitive text in a few hundred bytes


def test_then_appends_and_keeps_the_system() -> None:
    c = Conversation().then("sys", "a", "b").then(None, "c", "d")
    assert c == Conversation("sys", (("a", "b"), ("c", "d")))
    assert c.then("new", "e", "f").system == "new"
    assert c.messages() == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]


def tampered(ints: list[int]) -> list[list[int]]:
    out = []
    for i in (0, 1, 5, len(ints) // 2, len(ints) - 1):
        bad = list(ints)
        bad[i] ^= 1
        out.append(bad)
    out.append(ints[:-1])  # cut
    out.append([*ints, 0])  # lengthened
    out.append(ints[1:])
    return out


@pytest.mark.parametrize(
    "ints",
    [
        *tampered(CODEC.encode(TALK, [])),
        ContextCodec(b"another key of thirty-two bytes!", 1000, 1 << 20).encode(TALK, []),
        [1, 2, 3],  # Ollama's own token ids
        [128000, 882, 271, 13347],
        [-1],
        [2**24],
        [2**63 - 1],
        [0],
    ],
)
def test_anything_not_issued_under_the_key_is_a_400(ints: list[int]) -> None:
    with pytest.raises(BadRequest) as info:
        CODEC.decode(ints)
    assert (info.value.status, info.value.message, info.value.param) == (400, INVALID, "context")
    assert "send the request again without it" in info.value.message


def test_a_bound_on_what_it_decompresses_to() -> None:
    big = Conversation(None, (("x" * 100_000, ""),))
    small = ContextCodec(KEY, 10_000, 50_000)
    ints = small.encode(big, [])
    with pytest.raises(BadRequest, match=r"context too large: more than 50000 bytes"):
        small.decode(ints)


def test_the_oldest_exchanges_are_dropped_to_fit() -> None:
    # Hash digests do not compress: each exchange costs about its size.
    def noise(i: int) -> str:
        return "".join(hashlib.sha256(f"{i}/{j}".encode()).hexdigest() for j in range(4))

    turns = tuple((f"q{i} {noise(i)}", f"a{i}") for i in range(40))
    notes: list[str] = []
    codec = ContextCodec(KEY, 400, 1 << 20)
    ints = codec.encode(Conversation("s", turns), notes)
    assert 0 < len(ints) <= 400
    kept = codec.decode(ints)
    assert kept.system == "s"
    assert kept.turns == turns[len(turns) - len(kept.turns) :]  # the newest, in order
    assert 0 < len(kept.turns) < len(turns)
    assert len(notes) == 1
    assert re.match(r"generate context: \d+ earliest exchange\(s\) dropped", notes[0])
    assert codec.encode(Conversation("s", turns[:1]), notes) == codec.encode(
        Conversation("s", turns[:1]), []
    )  # fits: nothing dropped, no note
    assert len(notes) == 1


def test_nothing_fits_gives_an_empty_context() -> None:
    codec = ContextCodec(KEY, 6, 1 << 20)  # 18 bytes: the header and two of body
    notes: list[str] = []
    assert codec.encode(Conversation("a long system message " * 10, (("q", "a"),)), notes) == []
    assert notes


def generate(**fields: Any) -> Any:
    return GENERATE.validate_python({"model": "m", "prompt": "And now?", **fields})


def test_a_context_becomes_chat_history() -> None:
    up = generate_request(generate(), Target("m"), Policy(), TALK)
    assert up.payload["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Sky colour?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And now?"},
    ]
    # the request's own system message wins, as Ollama renders req.System
    up = generate_request(generate(system="Be verbose."), Target("m"), Policy(), TALK)
    assert up.payload["messages"][0] == {"role": "system", "content": "Be verbose."}
    assert up.notes == []


def test_the_answer_carries_the_context_after_done_reason() -> None:
    resp = {"choices": [{"message": {"content": "Green."}, "finish_reason": "stop"}]}
    seen: list[str] = []

    def context_of(text: str) -> list[int]:
        seen.append(text)
        return [1, 2]

    out = generate_response(resp, "m", now_ns=0, total_ns=9, think=True, context_of=context_of)
    assert seen == ["Green."]
    # Ollama's order (api/types.go GenerateResponse): done, done_reason, context, metrics
    assert list(out)[3:6] == ["done", "done_reason", "context"]
    assert out["context"] == [1, 2]
    assert "context" not in generate_response(resp, "m", now_ns=0, total_ns=9, think=True)


class CountingCodec(ContextCodec):
    """Counts compressions, the cost of :meth:`ContextCodec.encode`."""

    __slots__ = ("packs",)

    def __init__(self, max_ints: int) -> None:
        super().__init__(KEY, max_ints, 1 << 26)
        self.packs = 0

    def _pack(self, conversation: Conversation) -> list[int]:
        self.packs += 1
        return super()._pack(conversation)


def _noise(i: int, blocks: int) -> str:
    # Hash digests do not compress: each exchange costs about its size.
    return "".join(hashlib.sha256(f"{i}/{j}".encode()).hexdigest() for j in range(blocks))


@pytest.mark.parametrize("n", [100, 1_600])
def test_a_newest_exchange_too_large_is_decided_in_three_compressions(n: int) -> None:
    """The review of #17: 2,000 short exchanges and a prompt too large for the context were
    recompressed once per exchange dropped (374 s); now the newest exchange alone decides."""
    codec = CountingCodec(300)
    turns = (*((f"q{i}", f"a{i}") for i in range(n)), (_noise(n, 40), "ok"))
    notes: list[str] = []
    ints = codec.encode(Conversation("sys", turns), notes)
    assert codec.decode(ints) == Conversation("sys")  # the system message only
    assert codec.packs == 3  # all, the newest alone, none
    assert notes == [
        f"generate context: {n + 1} earliest exchange(s) dropped to stay within 300 integers "
        "(REQUEST_MAX_CONTEXT)"
    ]


@pytest.mark.parametrize("n", [128, 1_024, 4_096])
def test_how_many_exchanges_fit_takes_a_logarithmic_number_of_compressions(n: int) -> None:
    # 3,000 bytes: some 40 exchanges of 128 hex digits (half a byte of entropy each)
    codec = CountingCodec(1_000)
    turns = tuple((f"q{i} {_noise(i, 2)}", f"a{i}") for i in range(n))
    ints = codec.encode(Conversation("s", turns), [])
    kept = codec.decode(ints).turns
    assert 0 < len(kept) < n
    assert kept == turns[n - len(kept) :]
    assert codec.packs <= n.bit_length() + 3
    # the most that fit: one more exchange does not
    assert len(codec._pack(Conversation("s", turns[n - len(kept) - 1 :]))) > 1_000


def test_nothing_fits_not_even_the_system_message() -> None:
    codec = CountingCodec(6)
    notes: list[str] = []
    assert (
        codec.encode(Conversation("a long system message " * 10, (("q", "a"),) * 50), notes) == []
    )
    assert codec.packs == 3
    assert notes == [
        "generate context: 50 earliest exchange(s) dropped, and the system message does not fit "
        "either: no context to stay within 6 integers (REQUEST_MAX_CONTEXT)"
    ]
