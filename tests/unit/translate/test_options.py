from __future__ import annotations

from typing import Any

import pytest

from ollama_openai_bridge.errors import BadRequest
from ollama_openai_bridge.translate.options import map_options


def run(
    options: dict[str, Any], passthrough: dict[str, str] | None = None
) -> tuple[dict[str, Any], list[str], list[str]]:
    out: dict[str, Any] = {}
    dropped, notes = map_options(options, passthrough or {}, out)
    return out, dropped, notes


def test_direct_equivalents() -> None:
    out, dropped, _ = run(
        {"temperature": 0.2, "top_p": 0.9, "presence_penalty": 0.5, "frequency_penalty": -0.5}
    )
    assert out == {
        "temperature": 0.2,
        "top_p": 0.9,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
    }
    assert dropped == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [(128, {"max_tokens": 128}), (0, {}), (-1, {}), (-2, {}), (64.0, {"max_tokens": 64})],
)
def test_num_predict(value: Any, expected: dict[str, Any]) -> None:
    assert run({"num_predict": value})[0] == expected


@pytest.mark.parametrize(("value", "expected"), [(7, {"seed": 7}), (0, {"seed": 0}), (-1, {})])
def test_seed_negative_means_random(value: int, expected: dict[str, Any]) -> None:
    assert run({"seed": value})[0] == expected


def test_stop_truncated_to_four_with_note() -> None:
    out, _, notes = run({"stop": ["a", "b", "c", "d", "e"]})
    assert out == {"stop": ["a", "b", "c", "d"]}
    assert len(notes) == 1
    assert "4" in notes[0]


def test_stop_bare_string_accepted_and_empty_list_omitted() -> None:
    assert run({"stop": "###"})[0] == {"stop": ["###"]}
    assert run({"stop": []})[0] == {}


def test_options_without_equivalent_are_dropped_and_reported() -> None:
    options = {
        "top_k": 40,
        "num_ctx": 8192,
        "repeat_penalty": 1.1,
        "mirostat": 0,
        "low_vram": False,
        "keep_alive": "5m",
    }
    out, dropped, _ = run(options)
    assert out == {}
    assert dropped == list(options)


def test_passthrough_forwards_chosen_options_renamed() -> None:
    out, dropped, _ = run(
        {"top_k": 40, "repeat_penalty": 1.1, "num_ctx": 4096},
        {"top_k": "top_k", "repeat_penalty": "repetition_penalty"},
    )
    assert out == {"top_k": 40, "repetition_penalty": 1.1}
    assert dropped == ["num_ctx"]


def test_none_values_ignored() -> None:
    assert run({"temperature": None, "top_k": None}) == ({}, [], [])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": "hot"}, 'option "temperature" must be of type number'),
        ({"temperature": True}, 'option "temperature" must be of type number'),
        ({"num_predict": "ten"}, 'option "num_predict" must be of type integer'),
        ({"seed": 1.5}, 'option "seed" must be of type integer'),
        ({"stop": [1, 2]}, 'option "stop" must be a list of strings'),
    ],
)
def test_wrong_types_are_clear_400s(options: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        run(options)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("options", "passthrough", "expected"),
    [
        # The rows: the operator's name for an option we translate wins.
        (
            {"num_predict": 64},
            {"num_predict": "max_completion_tokens"},
            {"max_completion_tokens": 64},
        ),
        ({"seed": 42}, {"seed": "random_seed"}, {"random_seed": 42}),
        ({"num_predict": -1}, {"num_predict": "n_predict"}, {}),  # "until done": nothing sent
        ({"stop": "x"}, {"stop": "stop_sequences"}, {"stop_sequences": ["x"]}),
    ],
)
def test_passthrough_renames_what_is_translated_too(
    options: dict[str, Any], passthrough: dict[str, str], expected: dict[str, Any]
) -> None:
    out: dict[str, Any] = {}
    assert map_options(options, passthrough, out) == ([], [])
    assert out == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("num_predict", 1e308),  # is_integer(), so int(1e308): "Integer exceeds 64-bit range"
        ("num_predict", 2**64),
        ("num_predict", 10**100),
        ("seed", 2**70),
        ("seed", -(2**63) - 1),
    ],
)
def test_integers_beyond_64_bits_are_400_naming_the_option(name: str, value: Any) -> None:
    with pytest.raises(BadRequest) as info:
        run({name: value})
    assert info.value.message.startswith(f'option "{name}" is out of range')
    assert info.value.param == name


def test_64_bit_integers_pass() -> None:
    assert run({"num_predict": 2**63 - 1, "seed": 2**63 - 1})[0] == {
        "max_tokens": 2**63 - 1,
        "seed": 2**63 - 1,
    }


def test_numbers_are_read_as_go_reads_them() -> None:
    # a big integer is a float64 to Go; infinity (a JSON 1e400) is refused, never sent as null
    assert run({"temperature": 2**70})[0] == {"temperature": float(2**70)}
    for value in (float("inf"), float("-inf"), float("nan"), 10**400):
        with pytest.raises(BadRequest, match='option "temperature" is out of range'):
            run({"temperature": value})
