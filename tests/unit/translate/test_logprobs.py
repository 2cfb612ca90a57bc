"""Log probabilities from the backend's answer to Ollama's (issue #17): OpenAI's chat shape and
the legacy completions shape in, Ollama's ``[{token, logprob, bytes?, top_logprobs?}]`` out, per
streamed line and whole."""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
import pytest

from ollama_openai_bridge.translate.answer import chat_response, generate_response
from ollama_openai_bridge.translate.normalise import logprobs_of
from ollama_openai_bridge.translate.stream import StreamTranslator

HELLO = {"token": "Hello", "logprob": -0.1, "bytes": [72, 101, 108, 108, 111]}
ALTS = [{"token": "Hello", "logprob": -0.1, "bytes": None}, {"token": "Hi", "logprob": -2.5}]
CHAT_LP = {"content": [{**HELLO, "top_logprobs": ALTS}], "refusal": None}


@pytest.mark.parametrize(
    ("backend", "ollama"),
    [
        (  # OpenAI's chat shape (bytes kept, alternatives nested)
            CHAT_LP,
            [
                {
                    **HELLO,
                    "top_logprobs": [
                        {"token": "Hello", "logprob": -0.1},
                        {"token": "Hi", "logprob": -2.5},
                    ],
                }
            ],
        ),
        (  # the legacy /v1/completions shape
            {
                "tokens": ["Hel", "lo"],
                "token_logprobs": [-0.5, None],
                "top_logprobs": [{"Hel": -0.5, "He": -1.5}, None],
                "text_offset": [0, 3],
            },
            [
                {
                    "token": "Hel",
                    "logprob": -0.5,
                    "top_logprobs": [
                        {"token": "Hel", "logprob": -0.5},
                        {"token": "He", "logprob": -1.5},
                    ],
                },
                {"token": "lo", "logprob": -9999.0},  # null: ollama-python needs a float
            ],
        ),
        ({"content": []}, []),
    ],
)
def test_logprobs_golden(backend: Any, ollama: list[dict[str, Any]]) -> None:
    assert logprobs_of(backend) == ollama


@pytest.mark.parametrize(
    "bad",
    [
        [1],
        {"content": "x"},
        {"content": [{"token": "a", "logprob": "high"}]},
        {"content": [{"token": "a", "logprob": True}]},
        {"tokens": "abc"},
    ],
)
def test_logprobs_of_the_wrong_shape_are_refused(bad: Any) -> None:
    with pytest.raises(TypeError):
        logprobs_of(bad)


def translator(*, logprobs: bool, generate: bool = False) -> StreamTranslator:
    ticks = itertools.count(1_000, 1_000)
    return StreamTranslator(
        "m",
        generate=generate,
        think=True,
        start_ns=0,
        clock=lambda: next(ticks),
        wall=lambda: 1_767_225_600_123_000_000,
        logprobs=logprobs,
    )


def event(delta: dict[str, Any], lp: Any = None, finish: str | None = None) -> str:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
    if lp is not None:
        choice["logprobs"] = lp
    return orjson.dumps({"choices": [choice]}).decode()


def lines(tr: StreamTranslator, events: list[str]) -> list[dict[str, Any]]:
    out = b"".join(tr.feed(e) for e in events) + tr.finish()
    return [json.loads(x) for x in out.splitlines()]


def tok(t: str, lp: float) -> dict[str, Any]:
    return {"token": t, "logprob": lp}


@pytest.mark.parametrize("generate", [False, True])
def test_each_line_carries_the_log_probabilities_of_its_tokens(generate: bool) -> None:
    out = lines(
        translator(logprobs=True, generate=generate),
        [
            event({"role": "assistant", "content": ""}, {"content": []}),
            event({"content": "Hel"}, {"content": [tok("Hel", -0.5)]}),
            event({}, {"content": [tok("l", -0.2)]}),  # scored, no text: goes with the next line
            event({"content": "lo"}, {"content": [tok("o", -0.1)]}),
            event({}, {"content": [tok("!", -3.0)]}, finish="stop"),  # none after it: done line
        ],
    )
    assert [x.get("logprobs") for x in out] == [
        [tok("Hel", -0.5)],
        [tok("l", -0.2), tok("o", -0.1)],
        [tok("!", -3.0)],
    ]
    assert out[-1]["done"] is True


def test_no_log_probabilities_unless_asked() -> None:
    out = lines(translator(logprobs=False), [event({"content": "Hi"}, CHAT_LP, "stop")])
    assert all("logprobs" not in x for x in out)


def test_whole_answers_carry_every_token() -> None:
    body = {
        "choices": [{"message": {"content": "Hello"}, "finish_reason": "stop", "logprobs": CHAT_LP}]
    }
    chat = chat_response(body, "m", now_ns=0, total_ns=1, think=True, notes=[], logprobs=True)
    gen = generate_response(body, "m", now_ns=0, total_ns=1, think=True, logprobs=True)
    assert chat["logprobs"][0]["token"] == gen["logprobs"][0]["token"] == "Hello"
    assert "logprobs" not in chat_response(body, "m", now_ns=0, total_ns=1, think=True, notes=[])
