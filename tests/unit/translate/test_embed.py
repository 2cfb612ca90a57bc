from __future__ import annotations

import math
from typing import Any

import pytest

from ollama_openai_bridge.errors import BadRequest
from ollama_openai_bridge.translate.embed import (
    embed_inputs,
    embed_response,
    embeddings_request,
    embeddings_response,
    normalise,
    shorten,
)
from tests.conftest import contract


def test_golden_mapping() -> None:
    fx = contract("mapping_embed.json")
    req = fx["ollama_request"]
    inputs = embed_inputs(req["input"], 2048)
    assert (
        embeddings_request(req["model"], inputs, req.get("dimensions"))
        == fx["expected_openai_request"]
    )
    out = embed_response(fx["openai_response"], req["model"], len(inputs), 5)
    expected = fx["expected_ollama_response"]
    assert out["model"] == expected["model"]
    assert len(out["embeddings"]) == len(expected["embeddings"])
    for got, want in zip(out["embeddings"], expected["embeddings"], strict=True):
        assert got == pytest.approx(want, rel=1e-6)
        assert math.hypot(*got) == pytest.approx(1.0)
    assert out.get("prompt_eval_count") == expected.get("prompt_eval_count")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("hi", ["hi"]), (["a", "b"], ["a", "b"]), ("", []), (None, []), ([], [])],
)
def test_inputs(value: Any, expected: list[str]) -> None:
    assert embed_inputs(value, 10) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (3, "invalid input type"),
        ([1, 2], "invalid input type"),
        ({"a": 1}, "invalid input type"),
        (["a"] * 11, r"too many items in 'input': 11 \(at most 10, EMBED_MAX_INPUTS\)"),
        (["a", ""], "input 1 is an empty string"),
    ],
)
def test_bad_inputs(value: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        embed_inputs(value, 10)


def test_dimensions_and_order_by_index() -> None:
    assert embeddings_request("m", ["x"], 256)["dimensions"] == 256
    resp = {
        "data": [{"index": 1, "embedding": [0.0, 2.0]}, {"index": 0, "embedding": [3.0, 4.0]}],
        "usage": {"prompt_tokens": 4},
    }
    out = embed_response(resp, "m", 2, 10, load_ns=3)
    assert out == {
        "model": "m",
        "embeddings": [[0.6, 0.8], [0.0, 1.0]],
        "total_duration": 10,
        "load_duration": 3,
        "prompt_eval_count": 4,
    }


@pytest.mark.parametrize("usage", [None, {}, {"prompt_tokens": 0}, {"prompt_tokens": True}])
def test_the_metrics_the_vercel_provider_requires_are_always_there(usage: Any) -> None:
    # ollama-ai-provider-v2's embed schema: total_duration, load_duration and
    # prompt_eval_count are required numbers; without usage the count is 0, never made up.
    resp: dict[str, Any] = {"data": [{"index": 0, "embedding": [1.0]}]}
    if usage is not None:
        resp["usage"] = usage
    out = embed_response(resp, "m", 1, 10)
    assert (out["total_duration"], out["load_duration"], out["prompt_eval_count"]) == (10, 1, 0)


def test_unit_vectors_untouched_and_zero_vector_safe() -> None:
    v = [0.6, 0.8]
    assert normalise(v) is v
    assert normalise([0.0, 0.0]) == [0.0, 0.0]


def test_legacy_response_not_normalised() -> None:
    assert embeddings_response({"data": [{"index": 0, "embedding": [3.0, 4.0]}]}) == {
        "embedding": [3.0, 4.0]
    }


@pytest.mark.parametrize("bad", [{}, {"data": []}, {"data": [{"index": 0, "embedding": "b64"}]}])
def test_malformed_upstream(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="embedding"):
        embed_response(bad, "m", 1, 1)


def test_golden_legacy_variant() -> None:
    fx = contract("mapping_embed.json")
    legacy = fx["legacy_variant"]
    req = legacy["ollama_request"]
    assert (
        embeddings_request(req["model"], [req["prompt"]], None) == legacy["expected_openai_request"]
    )
    first = min(fx["openai_response"]["data"], key=lambda d: d["index"])
    assert embeddings_response({"data": [first]}) == {"embedding": first["embedding"]}


def test_dimensions_as_ollama_computes_them() -> None:
    assert shorten([3.0, 4.0, 12.0], 2) == [0.6, 0.8]  # normalised, cut, normalised again
    assert shorten([3.0, 4.0], 5) == [0.6, 0.8]  # longer than the vector: only normalised
    assert shorten([3.0, 4.0], None) == [0.6, 0.8]


def test_zero_or_negative_dimensions_mean_the_models_own() -> None:
    from ollama_openai_bridge.translate.embed import embeddings_request

    assert "dimensions" not in embeddings_request("m", ["a"], -1)
    assert "dimensions" not in embeddings_request("m", ["a"], 0)
    assert shorten([3.0, 4.0], -1) == [0.6, 0.8]
