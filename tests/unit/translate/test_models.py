from __future__ import annotations

import re
from typing import Any

import pytest

from ollama_openai_bridge.model_map import ModelMap, ModelMeta, resolve
from ollama_openai_bridge.translate import models as tm
from ollama_openai_bridge.translate.models import facts, published
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
    ("model_id", "family", "ctx", "caps", "emb"),
    [
        ("gpt-4o-mini", "gpt", 128000, ("completion", "tools", "vision"), None),
        ("o3-mini", "o", 200000, ("completion", "tools", "vision", "thinking"), None),
        ("text-embedding-3-small", "text", 8192, ("embedding",), 1536),
        ("nomic-embed-text:latest", "nomic", 8192, ("embedding",), 768),
        ("some-embed-model", "some", 8192, ("embedding",), None),  # its size is unknown
        ("qwen3:8b", "qwen", 40960, ("completion", "tools", "thinking"), None),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama", 131072, ("completion", "tools"), None),
        ("deepseek-r1:14b", "deepseek", 65536, ("completion", "tools", "thinking"), None),
        ("my-private-model", "my", 32768, ("completion", "tools"), None),
        ("llava:13b", "llava", 32768, ("completion", "tools", "vision"), None),
    ],
)
def test_facts_defaults_per_model_id(
    model_id: str, family: str, ctx: int, caps: tuple[str, ...], emb: int | None
) -> None:
    assert tm.facts(model_id, model_id, None, 32768) == tm.ModelFacts(family, ctx, caps, emb)


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


# --- issue #17: capabilities and lengths in /api/tags, a template and parameters in /api/show --


def test_insert_where_the_backend_takes_suffix() -> None:
    # Ollama's order: template capabilities (tools, insert) after completion, before vision.
    f = facts("gpt-4o", "gpt-4o", None, 32768, insert=True)
    assert f.capabilities == ("completion", "tools", "insert", "vision")
    assert facts("m", "my-model", None, 32768, insert=True).capabilities == (
        "completion",
        "tools",
        "insert",
    )
    # not for an embedding model, nor over the operator's own list, nor without fim
    assert facts("e", "text-embedding-3-small", None, 32768, insert=True).capabilities == (
        "embedding",
    )
    listed = ModelMeta("m", capabilities=("completion", "thinking"))
    assert facts("m", "m", listed, 32768, insert=True).capabilities == ("completion", "thinking")
    assert "insert" not in facts("m", "m", None, 32768, insert=False).capabilities
    assert tm.with_insert(("completion",)) == ("completion", "insert")


def test_tags_entries_carry_capabilities_and_lengths() -> None:
    # Ollama 0.30.0 (api/types.go ListModelResponse, ModelDetails): capabilities, and
    # details.context_length / embedding_length (omitted when unknown).
    body = {"data": [{"id": "qwen3:8b", "created": 1}, {"id": "text-embedding-3-small"}]}

    def facts_of(name: str) -> tm.ModelFacts:
        return facts(name, name, None, 32768, insert=True)

    chat, embed = tm.tags(body, ModelMap(), NOW, facts_of)["models"]
    assert chat["capabilities"] == ["completion", "tools", "insert", "thinking"]
    assert chat["details"]["family"] == ""  # as before (contract §4.5); /api/show has it
    assert chat["details"]["context_length"] == 40960
    assert "embedding_length" not in chat["details"]
    assert embed["capabilities"] == ["embedding"]
    assert (embed["details"]["context_length"], embed["details"]["embedding_length"]) == (
        8192,
        1536,
    )


def _balanced(template: str) -> bool:
    """Go's text/template needs every if/range closed by an end, and else only inside an if."""
    depth = 0
    for action in re.findall(r"\{\{-?\s*(\w+)", template):
        if action in ("if", "range"):
            depth += 1
        elif action == "end":
            depth -= 1
        if depth < 0:
            return False
    return depth == 0


@pytest.mark.parametrize(
    ("caps", "present", "absent"),
    [
        (("completion", "tools", "insert"), [".Suffix", ".Tools", ".Messages"], [".Thinking"]),
        (("completion",), [".Messages"], [".Suffix", ".Tools", ".Thinking"]),
        (
            ("completion", "tools", "insert", "vision", "thinking"),
            [".Suffix", ".Tools", "<think>{{ .Thinking }}</think>", ".Images"],
            [],
        ),
        (("embedding",), [".Prompt"], [".Suffix", ".Messages"]),
    ],
)
def test_the_template_shows_the_capabilities(
    caps: tuple[str, ...], present: list[str], absent: list[str]
) -> None:
    # Ollama reads tools from .Tools, insert from .Suffix and thinking from a .Thinking between
    # tags in the messages (server/images.go); Continue turns FIM on when it sees .Suffix.
    text = tm.template(caps)
    assert _balanced(text)
    for needle in present:
        assert needle in text
    for needle in absent:
        assert needle not in text


def test_parameters_as_continue_reads_them() -> None:
    # Continue's Ollama.ts parses each line with this pattern (a line that does not match
    # throws, and FIM detection is lost with it) and takes num_ctx as the context length.
    f = facts("qwen3:8b", "qwen3:8b", None, 32768)
    lines = tm.parameters(f).split("\n")
    matches = [re.match(r'^(\S+)\s+((?:".*")|\S+)$', line) for line in lines]
    assert all(matches)
    assert {m.group(1): m.group(2) for m in matches if m} == {"num_ctx": "40960"}
    assert lines[0] == "num_ctx" + " " * 24 + "40960"  # Ollama's %-30s %#v
    assert tm.parameters(facts("e", "text-embedding-3-small", None, 32768)) == ""


def test_show_has_template_parameters_and_embedding_length() -> None:
    f = facts("qwen3:8b", "qwen3:8b", None, 32768, insert=True)
    out = tm.show("qwen3:8b", "qwen3:8b", f, NOW)
    assert ".Suffix" in out["template"]
    assert out["parameters"].split() == ["num_ctx", "40960"]
    assert "PARAMETER num_ctx 40960" in out["modelfile"]
    assert f'TEMPLATE """{out["template"]}"""' in out["modelfile"]
    emb = tm.facts("e", "nomic-embed-text", None, 32768)
    info = tm.show("e", "nomic-embed-text", emb, NOW)["model_info"]
    assert (info["nomic.context_length"], info["nomic.embedding_length"]) == (8192, 768)
