from __future__ import annotations

from typing import Any

import pytest

from ollama_openai_proxy.model_map import ModelMap, ModelMeta, resolve
from ollama_openai_proxy.translate import models as tm
from ollama_openai_proxy.translate.models import facts, published
from tests.conftest import contract

NOW = 1_767_225_600_000_000_000


def test_golden_models_to_tags() -> None:
    fx = contract("mapping_models_to_tags.json")
    assert tm.tags(fx["openai_response"], ModelMap(), NOW) == fx["expected_ollama_response"]


def test_golden_name_resolution() -> None:
    fx = contract("mapping_models_to_tags.json")
    for name, expected in fx["name_resolution"].items():
        assert resolve(name, ModelMap(), {"gpt-4o-mini"}) == expected


def test_latest_kept_when_backend_lists_it_and_stripped_otherwise() -> None:
    assert resolve("qwen3:latest", ModelMap(), {"qwen3:latest"}) == "qwen3:latest"
    assert resolve("qwen3:latest", ModelMap(), None) == "qwen3"
    assert resolve("qwen3:8b", ModelMap(), None) == "qwen3:8b"


def test_aliases_both_ways() -> None:
    mm = ModelMap(
        {
            "llama3": ModelMeta("meta-llama/Llama-3.1-8B"),
            "fast": ModelMeta("gpt-4o-mini"),
            "gpt-4o": ModelMeta("gpt-4o", 1000),
        }
    )
    assert resolve("llama3", mm) == "meta-llama/Llama-3.1-8B"
    assert resolve("llama3:latest", mm) == "meta-llama/Llama-3.1-8B"
    assert mm.is_alias("fast")
    assert not mm.is_alias("gpt-4o")  # metadata only
    assert not mm.is_alias("unknown")
    body = {
        "data": [
            {"id": "gpt-4o-mini", "created": 1},
            {"id": "gpt-4o", "created": 1},
            {"id": "other", "created": 1},
            {"bad": 1},
            "x",
        ]
    }
    names = [m["name"] for m in tm.tags(body, mm, NOW)["models"]]
    # the mapped id is listed under its alias; configured aliases appear even if not listed
    assert names == ["fast", "gpt-4o", "other", "llama3"]
    oai = tm.openai_models(body, mm)
    assert [m["id"] for m in oai["data"]] == ["fast", "gpt-4o", "other", "llama3"]
    assert oai["object"] == "list"


def test_lookup_with_latest_tags() -> None:
    mm = ModelMap({"a:latest": ModelMeta("x")})
    assert mm.lookup("a") == ModelMeta("x")
    assert mm.lookup("a:latest") == ModelMeta("x")
    assert ModelMap({"b": ModelMeta("y")}).lookup("b:latest") == ModelMeta("y")
    assert not ModelMap()


def test_tags_empty_and_malformed() -> None:
    assert tm.tags({}, ModelMap(), NOW) == {"models": []}
    assert tm.tags({"data": None}, ModelMap(), NOW) == {"models": []}


@pytest.mark.parametrize(
    ("model_id", "family", "ctx", "caps"),
    [
        ("gpt-4o-mini", "gpt", 128000, ("completion", "tools", "vision")),
        ("o3-mini", "o", 200000, ("completion", "tools", "vision", "thinking")),
        ("text-embedding-3-small", "text", 8192, ("embedding",)),
        ("nomic-embed-text:latest", "nomic", 8192, ("embedding",)),
        ("qwen3:8b", "qwen", 40960, ("completion", "tools", "thinking")),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama", 131072, ("completion", "tools")),
        ("deepseek-r1:14b", "deepseek", 65536, ("completion", "tools", "thinking")),
        ("my-private-model", "my", 32768, ("completion", "tools")),
        ("llava:13b", "llava", 32768, ("completion", "tools", "vision")),
    ],
)
def test_facts_defaults_per_model_id(
    model_id: str, family: str, ctx: int, caps: tuple[str, ...]
) -> None:
    assert tm.facts(model_id, model_id, None, 32768) == tm.ModelFacts(family, ctx, caps)


def test_facts_from_configuration_win() -> None:
    f = tm.facts("x", "gpt-4o", ModelMeta("gpt-4o", 4096, ("completion",)), 32768)
    assert (f.context_length, f.capabilities) == (4096, ("completion",))


def test_show_shape_has_model_info_with_context_length() -> None:
    fx = contract("show_post.json")["response"]["body"]
    out = tm.show(
        "gpt-4o-mini", "gpt-4o-mini", tm.facts("gpt-4o-mini", "gpt-4o-mini", None, 32768), NOW
    )
    assert set(out) <= set(fx)
    assert out["model_info"]["general.architecture"] == "gpt"
    assert out["model_info"]["gpt.context_length"] == 128000
    assert out["capabilities"] == ["completion", "tools", "vision"]
    assert out["details"]["family"] == "gpt"
    assert out["modified_at"] == "2026-01-01T00:00:00Z"


def test_ps_entry_shape() -> None:
    fx = contract("ps_get.json")["response"]["body"]["models"][0]
    entry = tm.ps_entry("m", tm.facts("m", "m", None, 2048), NOW)
    assert set(entry) == set(fx)
    assert entry["context_length"] == 2048


def test_digest_is_sha256_hex_without_prefix() -> None:
    assert (
        tm.digest("gpt-4o-mini")
        == "8a43428062692d369599bd00272fd529aa5949ba715361e20f54e63c444ccea1"
    )


# --- what backends publish (/api/show prefers it) --------------------------------------------


def test_published_openrouter_entry() -> None:
    entry = {
        "id": "anthropic/claude-sonnet-4",
        "context_length": 200000,
        "supported_parameters": ["tools", "include_reasoning", "max_tokens"],
        "architecture": {"input_modalities": ["text", "image"]},
    }
    assert published(entry) == (200000, ("completion", "tools", "vision", "thinking"))


def test_published_vllm_and_openai_entries() -> None:
    assert published({"id": "m", "max_model_len": 8192}) == (8192, None)
    assert published({"id": "m", "top_provider": {"context_length": 4096}}) == (4096, None)
    assert published({"id": "gpt-4o", "object": "model", "owned_by": "system"}) == (None, None)
    assert published({"id": "m", "context_length": True}) == (None, None)  # not a number
    assert published(None) == (None, None)


def test_facts_prefer_published_then_config_then_family() -> None:
    meta = ModelMeta("qwen3:8b", context_length=9999, capabilities=("completion",))
    assert facts("q", "qwen3:8b", None, 32768).context_length == 40960  # the family's
    assert facts("q", "qwen3:8b", meta, 32768).context_length == 9999  # the operator's
    published_entry = {"max_model_len": 16384, "supported_parameters": ["tools"]}
    f = facts("q", "qwen3:8b", meta, 32768, published_entry)
    assert (f.context_length, f.capabilities) == (16384, ("completion", "tools"))


@pytest.mark.parametrize(
    ("entry", "context"),
    [
        ({"id": "m", "max_context_length": 32768}, 32768),  # LM Studio
        ({"id": "m", "meta": {"n_ctx": 8192, "n_ctx_train": 131072}}, 8192),  # llama.cpp
        ({"id": "m", "meta": {"n_ctx_train": 131072}}, 131072),
        ({"id": "m", "context_window": 131072}, 131072),  # Groq
        ({"id": "m", "top_provider": {"context_length": 65536}}, 65536),  # OpenRouter
        ({"id": "m", "meta": "x"}, None),
    ],
)
def test_context_length_from_every_field_backends_publish(
    entry: dict[str, Any], context: int | None
) -> None:
    assert published(entry)[0] == context
