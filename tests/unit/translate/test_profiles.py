"""Backend profiles: an Ollama request in, the body each backend accepts out (golden pairs).

One row per adaptation issue #15 names, with the backend and model it concerns; the request goes
through the real schema and translator (``chat_request``), shaped by the upstream's profile as
the route does it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.profiles import DEFAULT, PROFILES, detect, named
from ollama_openai_bridge.schemas import CHAT, GENERATE
from ollama_openai_bridge.translate.chat import UpstreamRequest, chat_request, completion_request
from ollama_openai_bridge.translate.shape import JSON_INSTRUCTION

HI = [{"role": "user", "content": "hi"}]


def send(
    profile: str,
    model: str,
    *,
    thinking: bool = False,
    extra_body: dict[str, Any] | None = None,
    passthrough: dict[str, str] | None = None,
    **fields: Any,
) -> UpstreamRequest:
    p = PROFILES[profile]
    policy = Policy(
        passthrough={**p.options, **(passthrough or {})},
        profile=p,
        extra_body=extra_body or {},
    )
    req = CHAT.validate_python({"model": model, "messages": HI, "stream": False, **fields})
    return chat_request(req, Target.of(model, p, thinking=thinking), policy)


def body(up: UpstreamRequest) -> dict[str, Any]:
    return {k: v for k, v in up.payload.items() if k not in ("model", "messages", "stream")}


@pytest.mark.parametrize(
    ("profile", "model", "fields", "expected"),
    [
        # OpenAI reasoning models: max_completion_tokens; sampling options are not sent.
        (
            "openai",
            "o4-mini",
            {"options": {"num_predict": 64, "temperature": 0.2, "top_p": 0.9}},
            {"max_completion_tokens": 64},
        ),
        (
            "openai",
            "gpt-5-mini",
            {"options": {"top_p": 0.9, "seed": 7}},
            {"seed": 7},
        ),
        # Non-reasoning OpenAI models keep their sampling; max_tokens is renamed for all.
        (
            "openai",
            "gpt-4o",
            {"options": {"num_predict": 64, "temperature": 0.2}},
            {"max_completion_tokens": 64, "temperature": 0.2},
        ),
        # gpt-5.1 and later take sampling with reasoning_effort "none", their default.
        ("openai", "gpt-5.1", {"options": {"temperature": 0.2}}, {"temperature": 0.2}),
        (
            "openai",
            "gpt-5.2",
            {"think": "high", "options": {"temperature": 0.2}},
            {"reasoning_effort": "high"},
        ),
        # think on reasoning models: effort levels per family; think false where it can be.
        ("openai", "o4-mini", {"think": True}, {"reasoning_effort": "medium"}),
        ("openai", "gpt-5.1", {"think": False}, {"reasoning_effort": "none"}),
        ("openai", "gpt-5", {"think": False}, {"reasoning_effort": "minimal"}),
        ("openai", "gpt-5.2", {"think": "max"}, {"reasoning_effort": "xhigh"}),
        ("openai", "o3", {"think": "max"}, {"reasoning_effort": "high"}),
        # think "max" (Ollama 0.22.0): the strongest level each backend takes.
        (  # a model its list says reasons (supported_parameters): thinking=True
            "openrouter",
            "openai/o3",
            {"think": "max", "thinking": True},
            {"reasoning": {"effort": "xhigh"}},
        ),
        ("ollama", "qwen3:8b", {"think": "max"}, {"reasoning_effort": "max"}),
        ("ollama", "qwen3:8b", {"think": "high"}, {"reasoning_effort": "high"}),
        ("gemini", "gemini-2.5-flash", {"think": "max"}, {"reasoning_effort": "high"}),
        ("gemini", "gemini-3-pro-preview", {"think": "max"}, {"reasoning_effort": "high"}),
        (
            "anthropic",
            "claude-sonnet-4-5",
            {"think": "max"},
            {"thinking": {"type": "enabled", "budget_tokens": 16384}},
        ),
        ("openai", "o3", {"think": False}, {}),  # the o-series cannot stop reasoning
        ("openai", "gpt-4o", {"think": True}, {}),  # 400 for reasoning_effort: not sent
        # Mistral: random_seed; only its documented fields.
        ("mistral", "mistral-small-latest", {"options": {"seed": 42}}, {"random_seed": 42}),
        (
            "mistral",
            "mistral-small-latest",
            {"logprobs": True, "think": True},
            {},
        ),
        # gpt-5.1 keeps sampling without reasoning on Azure too.
        (
            "azure",
            "gpt-5.1",
            {"think": False, "options": {"temperature": 0.3}},
            {"reasoning_effort": "none", "temperature": 0.3},
        ),
        # Gemini 3 Pro has low and high only, and cannot stop thinking.
        ("gemini", "gemini-3-pro-preview", {"think": True}, {"reasoning_effort": "high"}),
        ("gemini", "gemini-3-pro-preview", {"think": "low"}, {"reasoning_effort": "low"}),
        ("gemini", "gemini-2.5-pro", {"think": False}, {}),
        # Azure: max_completion_tokens for reasoning deployments only.
        ("azure", "o4-mini", {"options": {"num_predict": 9}}, {"max_completion_tokens": 9}),
        ("azure", "gpt-4o", {"options": {"num_predict": 9}}, {"max_tokens": 9}),
        # LM Studio: only json_schema response formats.
        (
            "lmstudio",
            "qwen3-8b",
            {"format": "json"},
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "response", "schema": {"type": "object"}},
                }
            },
        ),
        # Anthropic: extended thinking with a budget; reasoning_effort would be ignored.
        (
            "anthropic",
            "claude-sonnet-4-5",
            {"think": "high"},
            {"thinking": {"type": "enabled", "budget_tokens": 16384}},
        ),
        (
            "anthropic",
            "claude-sonnet-4-5",
            {"think": True, "options": {"num_predict": 2000}},
            {"thinking": {"type": "enabled", "budget_tokens": 1999}, "max_tokens": 2000},
        ),
        (
            "anthropic",
            "claude-sonnet-4-5",
            {"think": True, "options": {"num_predict": 500}},
            {"max_tokens": 500},
        ),
        (
            "anthropic",
            "claude-sonnet-4-5",
            {"think": "low", "options": {"temperature": 0.2}},
            {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        ),
        ("anthropic", "claude-sonnet-4-5", {"options": {"temperature": 0.2}}, {"temperature": 0.2}),
        # Ollama's /v1: think false is reasoning_effort "none", or the model keeps thinking.
        ("ollama", "qwen3:8b", {"think": False}, {"reasoning_effort": "none"}),
        ("ollama", "qwen3:8b", {"think": True}, {"reasoning_effort": "medium"}),
        # Groq: reasoning_format parsed/hidden; qwen3 is switched off by reasoning_effort none;
        # logprobs is a 400 there.
        ("groq", "deepseek-r1-distill-llama-70b", {"think": True}, {"reasoning_format": "parsed"}),
        ("groq", "deepseek-r1-distill-llama-70b", {"think": False}, {"reasoning_format": "hidden"}),
        ("groq", "llama-3.3-70b-versatile", {"think": True}, {}),  # 400 for reasoning_format
        ("groq", "qwen/qwen3-32b", {"think": False}, {"reasoning_effort": "none"}),
        ("groq", "openai/gpt-oss-20b", {"think": "low"}, {"reasoning_effort": "low"}),
        ("groq", "llama-3.3-70b-versatile", {"logprobs": True}, {}),
        # Gemini: reasoning_effort none switches thinking off.
        ("gemini", "gemini-2.5-flash", {"think": False}, {"reasoning_effort": "none"}),
        # vLLM: Qwen3-style templates, and the samplers it takes natively.
        (
            "vllm",
            "Qwen/Qwen3-8B",
            {"think": False, "options": {"top_k": 20, "repeat_penalty": 1.1}},
            {
                "chat_template_kwargs": {"enable_thinking": False},
                "top_k": 20,
                "repetition_penalty": 1.1,
            },
        ),
        # TGI: top_p only below 1; no schema-free JSON mode; schemas as its grammar.
        (
            "tgi",
            "Qwen/Qwen3-8B",
            {"options": {"top_p": 1.0, "temperature": 0.2}},
            {"temperature": 0.2},
        ),
        (
            "tgi",
            "Qwen/Qwen3-8B",
            {"format": {"type": "object", "properties": {"a": {}}}},
            {
                "response_format": {
                    "type": "json",
                    "value": {"type": "object", "properties": {"a": {}}},
                }
            },
        ),
        ("tgi", "Qwen/Qwen3-8B", {"format": "json"}, {}),
        # Fireworks: at most 4096 tokens without streaming.
        ("fireworks", "llama-v3p3-70b", {"options": {"num_predict": 8192}}, {"max_tokens": 4096}),
        # Together: hybrid models are switched off with the reasoning object.
        ("together", "Qwen/Qwen3.5-9B", {"think": False}, {"reasoning": {"enabled": False}}),
        # DeepSeek's reasoner refuses logprobs.
        ("deepseek", "deepseek-reasoner", {"logprobs": True}, {}),
        # The reference profile changes nothing.
        (
            "openai-reference",
            "anything",
            {"options": {"num_predict": 5, "seed": 1}},
            {"max_tokens": 5, "seed": 1},
        ),
    ],
)
def test_each_backend_gets_the_request_it_accepts(
    profile: str, model: str, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert body(send(profile, model, **fields)) == expected


def test_streams_ask_for_usage_only_where_the_backend_takes_stream_options() -> None:
    def streamed(profile: str) -> dict[str, Any]:
        p = PROFILES[profile]
        req = CHAT.validate_python({"model": "m", "messages": HI})
        policy = Policy(profile=p)
        return chat_request(req, Target.of("m", p), policy).payload

    assert streamed("openai")["stream_options"] == {"include_usage": True}
    assert "stream_options" not in streamed("mistral")  # 422 extra_forbidden
    assert "stream_options" not in streamed("openrouter")  # has no effect there


@pytest.mark.parametrize("profile", ["openai", "azure", "deepseek"])
def test_json_mode_gets_the_word_json_where_the_backend_requires_it(profile: str) -> None:
    up = send(profile, "gpt-4o", format="json")
    assert up.payload["response_format"] == {"type": "json_object"}
    assert up.payload["messages"][0] == {"role": "system", "content": JSON_INSTRUCTION}
    assert up.payload["messages"][1:] == HI
    # Said already: nothing is added.
    req = CHAT.validate_python(
        {
            "model": "gpt-4o",
            "format": "json",
            "stream": False,
            "messages": [{"role": "user", "content": "Answer in JSON please"}],
        }
    )
    p = PROFILES[profile]
    again = chat_request(req, Target.of("gpt-4o", p), Policy(profile=p))
    assert [m["content"] for m in again.payload["messages"]] == ["Answer in JSON please"]


def test_what_the_client_loses_is_warned_about_once_per_parameter_and_profile() -> None:
    up = send("openai", "o4-mini", options={"temperature": 0.2}, logprobs=True)
    assert sorted(key for key, _ in up.warnings) == ["logprobs (openai)", "temperature (openai)"]
    assert any("temperature not sent" in a for a in up.adapted)
    ignored = send("anthropic", "claude-sonnet-4-5", format="json")
    assert [key for key, _ in ignored.warnings] == ["response_format (anthropic)"]
    assert ignored.payload["response_format"] == {"type": "json_object"}  # sent all the same


def test_the_operators_extra_body_is_added_last() -> None:
    up = send("groq", "qwen/qwen3-32b", extra_body={"reasoning_format": "parsed", "top_p": 1})
    assert body(up) == {"reasoning_format": "parsed", "top_p": 1}
    assert any("extra_body" in a for a in up.adapted)


def test_completions_are_shaped_too() -> None:
    p = PROFILES["mistral"]
    req = GENERATE.validate_python(
        {"model": "codestral", "prompt": "def f(", "suffix": "return 1", "stream": True}
    )
    up = completion_request(req, Target.of("codestral", p), Policy(profile=p))
    assert "stream_options" not in up.payload


@pytest.mark.parametrize(
    ("url", "profile"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://api.mistral.ai/v1", "mistral"),
        ("https://api.groq.com/openai/v1", "groq"),
        ("https://openrouter.ai/api/v1", "openrouter"),
        ("https://api.deepseek.com/v1", "deepseek"),
        ("https://generativelanguage.googleapis.com/v1beta/openai", "gemini"),
        ("https://api.anthropic.com/v1", "anthropic"),
        ("https://api.together.xyz/v1", "together"),
        ("https://api.fireworks.ai/inference/v1", "fireworks"),
        ("https://x.openai.azure.com/openai/deployments/gpt-4o", "azure"),
        ("https://x.openai.azure.com/openai/v1", "azure-v1"),
        ("https://x.cognitiveservices.azure.com/openai/v1", "azure-v1"),
        ("http://127.0.0.1:11434/v1", "ollama"),
        ("http://gpu-box:8000/v1", "openai-reference"),
        ("https://evil.api.openai.com.example.org/v1", "openai-reference"),
        ("https://eu.api.openai.com/v1", "openai"),
        ("https://codestral.mistral.ai/v1", "mistral"),
        ("https://x.services.ai.azure.com/openai/v1", "azure-v1"),
        ("http://127.0.0.1:1234/v1", "lmstudio"),
        ("http://127.0.0.1:8000/v1", "openai-reference"),
    ],
)
def test_the_profile_is_detected_from_the_base_url(url: str, profile: str) -> None:
    assert detect(url).name == profile
    assert named("auto", url).name == profile


def test_a_named_profile_wins_over_detection() -> None:
    assert named("vllm", "https://api.openai.com/v1").name == "vllm"
    assert DEFAULT.name == "openai-reference"


def test_every_profile_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "BACKENDS.md").read_text()
    for name, p in PROFILES.items():
        assert f"`{name}`" in doc, name
        assert p.title in doc, name


def test_family_lookups_are_remembered_and_bounded() -> None:
    p = PROFILES["openai"]
    assert p.family("o4-mini") is p.family("o4-mini")
    for i in range(5000):
        p.family(f"client-chosen-{i}")
    assert len(p._found) <= 4096


def test_embeddings_are_shaped_with_their_own_names() -> None:
    from ollama_openai_bridge.translate.chat import for_backend
    from ollama_openai_bridge.translate.embed import embeddings_request

    def embed(profile: str) -> dict[str, Any]:
        p = PROFILES[profile]
        up = UpstreamRequest(embeddings_request("m", ["a"], 64))
        return for_backend(up, Target.of("m", p), Policy(profile=p), "/embeddings").payload

    # Mistral: output_dimension; its chat allowlist does not apply to embeddings.
    assert embed("mistral") == {
        "model": "m",
        "input": ["a"],
        "encoding_format": "float",
        "output_dimension": 64,
    }
    assert embed("openai")["dimensions"] == 64


def test_what_a_backend_refused_applies_only_where_and_when_it_was_refused() -> None:
    p = PROFILES["openai-reference"]
    learned = {("/chat/completions", True): {"temperature": (None, 1e9)}}
    policy = Policy(profile=p)

    def chat(**fields: Any) -> dict[str, Any]:
        req = CHAT.validate_python({"model": "gpt-5.1", "messages": HI, "stream": False, **fields})
        target = Target.of("gpt-5.1", p, thinking=True, learned=learned)
        return chat_request(req, target, policy).payload

    assert "temperature" not in chat(think="high", options={"temperature": 0.5})
    assert chat(think=False, options={"temperature": 0.5})["temperature"] == 0.5
    assert chat(options={"temperature": 0.5})["temperature"] == 0.5


def test_legacy_completions_keep_max_tokens_and_embeddings_get_no_extra_body() -> None:
    from ollama_openai_bridge.translate.chat import for_backend
    from ollama_openai_bridge.translate.embed import embeddings_request

    p = PROFILES["openai"]
    req = GENERATE.validate_python(
        {
            "model": "gpt-3.5-turbo-instruct",
            "prompt": "def f(",
            "suffix": "x",
            "stream": False,
            "options": {"num_predict": 200},
        }
    )
    policy = Policy(profile=p, extra_body={"service_tier": "flex"})
    up = completion_request(req, Target.of("gpt-3.5-turbo-instruct", p), policy)
    assert up.payload["max_tokens"] == 200
    assert "max_completion_tokens" not in up.payload
    assert up.payload["service_tier"] == "flex"
    embed = UpstreamRequest(embeddings_request("text-embedding-3-small", ["a"], None))
    out = for_backend(embed, Target.of("text-embedding-3-small", p), policy, "/embeddings")
    assert "service_tier" not in out.payload


def test_the_json_instruction_joins_an_existing_system_message() -> None:
    p = PROFILES["openai"]
    req = CHAT.validate_python(
        {
            "model": "gpt-4o",
            "format": "json",
            "stream": False,
            "messages": [{"role": "system", "content": "Be brief."}, *HI],
        }
    )
    messages = chat_request(req, Target.of("gpt-4o", p), Policy(profile=p)).payload["messages"]
    assert messages[0] == {"role": "system", "content": f"Be brief.\n\n{JSON_INSTRUCTION}"}
    assert messages[1:] == HI


def test_mistral_gets_nine_character_tool_call_ids_that_still_pair() -> None:
    """The ollama SDK's own tool example, second turn, to Mistral: its ids must be 9 letters and
    digits ("Tool call id was call_1_0 but must be a-z, A-Z, 0-9, with a length of 9")."""
    from ollama_openai_bridge.translate.shape import nine_chars

    history = [
        {"role": "user", "content": "What is 3 plus 4?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_abcdefgh", "function": {"name": "add", "arguments": {"a": 3, "b": 4}}},
                {"function": {"name": "add", "arguments": {"a": 1, "b": 1}}},
            ],
        },
        {"role": "tool", "content": "7", "tool_name": "add"},
        {"role": "tool", "content": "2", "tool_name": "add"},
    ]
    p = PROFILES["mistral"]
    req = CHAT.validate_python({"model": "mistral-small-latest", "messages": history})
    messages = chat_request(req, Target.of("mistral-small-latest", p), Policy(profile=p)).payload[
        "messages"
    ]
    ids = [c["id"] for c in messages[1]["tool_calls"]]
    assert all(len(i) == 9 and i.isalnum() for i in ids)
    assert [m["tool_call_id"] for m in messages[2:]] == ids
    assert ids[0] == nine_chars("call_abcdefgh")
    assert nine_chars("abcDEF123") == "abcDEF123"  # already right: kept


@pytest.mark.parametrize(
    ("profile", "model", "think", "note"),
    [
        ("openai", "o3", "max", "think 'max' sent as 'high', the strongest level"),
        ("openai", "gpt-5.2", "max", "think 'max' sent as 'xhigh', the strongest level"),
        ("gemini", "gemini-3-pro-preview", "max", "think 'max' sent as 'high', the strongest"),
        ("gemini", "gemini-3-pro-preview", True, "think 'medium' sent as 'high', the nearest"),
        ("ollama", "qwen3:8b", "max", None),
        ("openai", "o3", "low", None),
    ],
)
def test_a_lowered_think_level_is_in_the_debug_log(
    profile: str, model: str, think: Any, note: str | None
) -> None:
    """What the backend gets instead of the level asked for is one of the request's
    ``adapted`` lines (Context.adapted logs them at DEBUG as backend_adapted)."""
    adapted = [a for a in send(profile, model, think=think).adapted if a.startswith("think ")]
    lowered = [a for a in adapted if " level " in a]
    if note is None:
        assert lowered == []
    else:
        assert len(lowered) == 1
        assert lowered[0].startswith(note), lowered
