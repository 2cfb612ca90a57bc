"""The real ollama SDK, through the proxy, against each backend's fake (issue #15).

Each fake refuses what its backend refuses, in its own words (tests/backends/*.py); the proxy,
told the backend's profile, must shape every request so that none is refused: chat and generate,
streamed and not, with options, think on and off, and JSON format. A parameter no profile knows
is given up after the backend's first refusal and never sent again.

Steps that need a backend's own rule (:data:`BACKEND_SPECIFIC`: the rule each one checks) are
cases of their own, left out of the backend's row; a step the proxy can only learn from the
backend's first refusal (:data:`LEARNED_STEPS`) is run twice, and refused once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import ollama
import pytest

from tests.backends import FakeBackend
from tests.servers import ProxyServer, settings_for

OPTIONS = {"num_predict": 64, "seed": 7, "temperature": 0.7, "top_p": 0.9}
HI = [{"role": "user", "content": "Name the three primary colors."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

# (fake rule set, profile, model, base URL path after the fake's root or None for its own)
CASES = [
    ("openai", "openai", "gpt-4o", None),
    ("openai-reasoning", "openai", "o4-mini", None),
    ("openai-reasoning", "openai", "gpt-5", None),
    ("openai-reasoning", "openai", "gpt-5.1", None),
    ("azure-classic", "azure", "gpt-4o", "/openai/deployments/gpt-4o?api-version=2024-10-21"),
    ("azure-classic", "azure", "o3-mini", "/openai/deployments/o3-mini?api-version=2024-10-21"),
    ("azure-v1", "azure-v1", "gpt-4o", None),
    ("mistral", "mistral", "mistral-small-latest", None),
    ("groq", "groq", "qwen/qwen3-32b", None),
    ("groq", "groq", "openai/gpt-oss-20b", None),
    ("groq", "groq", "llama-3.3-70b-versatile", None),
    ("gemini", "gemini", "gemini-2.5-flash", None),
    ("deepseek", "deepseek", "deepseek-reasoner", None),
    ("deepseek", "deepseek", "deepseek-chat", None),
    ("anthropic-compat", "anthropic", "claude-sonnet-4-5", None),
    ("lmstudio", "lmstudio", "qwen/qwen3-8b", None),
    ("llamacpp", "llamacpp", "qwen3-8b", None),
    ("llamacpp-raw", "llamacpp", "qwen3-8b", None),
    ("ollama-v1", "ollama", "qwen3:8b", None),
    ("ollama-v1", "ollama", "llama3.2", None),
    ("openrouter", "openrouter", "qwen/qwen3-14b", None),
    ("openrouter", "openrouter", "deepseek/deepseek-r1", None),
    ("openrouter", "openrouter", "openai/gpt-4o-mini", None),
    ("together", "together", "deepseek-ai/DeepSeek-R1", None),
    ("together", "together", "Qwen/Qwen3.5-9B", None),
    ("together", "together", "openai/gpt-oss-20b", None),
    ("together", "together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", None),
    ("fireworks", "fireworks", "accounts/fireworks/models/qwen3-235b-a22b", None),
    ("fireworks", "fireworks", "accounts/fireworks/models/deepseek-r1-0528", None),
    ("fireworks", "fireworks", "accounts/fireworks/models/llama-v3p3-70b-instruct", None),
    ("vllm", "vllm", "Qwen/Qwen3-8B", None),
    ("vllm", "vllm", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", None),
    ("vllm", "vllm", "meta-llama/Llama-3.1-8B-Instruct", None),
    ("vllm-raw", "vllm", "Qwen/Qwen3-8B", None),
    ("sglang", "sglang", "Qwen/Qwen3-8B", None),
    ("sglang", "sglang", "meta-llama/Llama-3.1-8B-Instruct", None),
    ("sglang-raw", "sglang", "Qwen/Qwen3-8B", None),
    ("tgi", "tgi", "Qwen/Qwen3-8B", None),
    ("tgi", "tgi", "meta-llama/Llama-3.1-8B-Instruct", None),
]


# Models that cannot think, on backends that say so when asked to (as Ollama does).
NOT_THINKING = {"ollama-v1": ("llama3.2",)}

# Steps the proxy gets wrong for a backend: (rule set, model) -> {step: the bug}. Each step is
# left out of test_every_request_shape_is_accepted and run by test_known_proxy_bugs as a strict
# xfail. Steps: "think_off" (think=False, whole and streamed), "format_json" (format="json"),
# "long_whole" (num_predict 8192, not streamed), "top_p_one" (top_p 1.0, as Ollama allows) fail
# with the proxy's 400; "think_off_stops" (think=False where the backend can stop reasoning: the
# model must not reason, not merely have its reasoning hidden) fails its assertion.
# A model that must reason (OpenRouter's reasoning.mandatory) says so only by refusing.
LEARNED_STEPS = frozenset({"think_off"})
BACKEND_SPECIFIC: dict[tuple[str, str], dict[str, str]] = {
    ("openrouter", "deepseek/deepseek-r1"): {
        "think_off": "OpenRouter answers 400 'Reasoning is mandatory for this endpoint and "
        "cannot be disabled.' to reasoning {enabled: false} for such models: the proxy drops "
        "the reasoning object and remembers it (the answer hides the reasoning)",
    },
    ("tgi", "Qwen/Qwen3-8B"): {
        "format_json": "TGI has no schema-free JSON mode (response_format needs {type, value}): "
        "the JSON instruction only, with a warning",
        "top_p_one": "TGI takes top_p only below 1; 1 (no filtering) is not sent",
    },
    ("tgi", "meta-llama/Llama-3.1-8B-Instruct"): {
        "format_json": "as for Qwen3",
    },
    ("together", "Qwen/Qwen3.5-9B"): {
        "think_off_stops": "Together's hybrid models reason by default; reasoning "
        "{enabled: false} stops them (docs.together.ai/docs/inference/chat/reasoning)",
    },
    ("fireworks", "accounts/fireworks/models/llama-v3p3-70b-instruct"): {
        "long_whole": "Fireworks refuses max_tokens above 4096 without streaming: lowered to "
        "4096, with a warning",
    },
}


@pytest.fixture
def proxy_for(fake: Callable[[str], FakeBackend]) -> Iterator[Callable[..., Any]]:
    servers: list[ProxyServer] = []

    def start(rule_set: str, profile: str, path: str | None, **extra: Any) -> Any:
        backend = fake(rule_set)
        url = backend.root + path if path else backend.url
        server = ProxyServer(settings_for(url, backend_profile=profile, **extra)).__enter__()
        servers.append(server)
        return backend, server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def text_of(parts: Any) -> str:
    return "".join((p.message.content or "") + (p.message.thinking or "") for p in parts)


@pytest.mark.parametrize(("rule_set", "profile", "model", "path"), CASES)
def test_every_request_shape_is_accepted(
    proxy_for: Callable[..., Any], rule_set: str, profile: str, model: str, path: str | None
) -> None:
    backend, server = proxy_for(rule_set, profile, path)
    bugs = BACKEND_SPECIFIC.get((rule_set, model), {})
    with ollama.Client(host=server.url) as client:
        for think in (True, False):
            if not think and "think_off" in bugs:
                continue
            if think and model in NOT_THINKING.get(rule_set, ()):
                # Ollama's own answer, relayed as Ollama gives it (server/routes.go).
                with pytest.raises(ollama.ResponseError, match="does not support thinking"):
                    client.chat(model=model, messages=HI, stream=False, think=True)
                continue
            whole = client.chat(
                model=model, messages=HI, stream=False, think=think, options=OPTIONS
            )
            assert whole.message.content or whole.message.thinking, whole
            streamed = text_of(
                client.chat(model=model, messages=HI, stream=True, think=think, options=OPTIONS)
            )
            assert streamed
        tooled = client.chat(model=model, messages=HI, tools=[WEATHER], stream=False)
        assert tooled.message.content or tooled.message.tool_calls or tooled.message.thinking
        parts = list(client.chat(model=model, messages=HI, tools=[WEATHER], stream=True))
        assert parts[-1].done
        if "format_json" not in bugs:
            as_json = client.chat(model=model, messages=HI, stream=False, format="json")
            assert as_json.message.content is not None
        generated = client.generate(model=model, prompt="hi", stream=False, options=OPTIONS)
        assert generated.response or generated.thinking
        gen_stream = "".join(
            (p.response or "") + (p.thinking or "")
            for p in client.generate(model=model, prompt="hi", stream=True, options=OPTIONS)
        )
        assert gen_stream
    refused = [e for e in backend.journal if e.get("refused")]
    expected = 1 if model in NOT_THINKING.get(rule_set, ()) else 0
    assert len(refused) == expected, refused[:2]


def _bug_step(client: ollama.Client, backend: FakeBackend, model: str, step: str) -> None:
    if step == "think_off_stops":
        whole = client.chat(model=model, messages=HI, stream=False, think=False, options=OPTIONS)
        assert whole.message.content
        assert not whole.message.thinking
        assert backend.last()["thinking"] is False, "the model reasoned"
    elif step == "think_off":
        whole = client.chat(model=model, messages=HI, stream=False, think=False, options=OPTIONS)
        assert whole.message.content
        assert text_of(
            client.chat(model=model, messages=HI, stream=True, think=False, options=OPTIONS)
        )
    elif step == "format_json":
        as_json = client.chat(model=model, messages=HI, stream=False, format="json")
        assert as_json.message.content is not None
    elif step == "long_whole":
        long = {**OPTIONS, "num_predict": 8192}
        assert client.chat(model=model, messages=HI, stream=False, options=long).message.content
    elif step == "top_p_one":
        assert client.chat(
            model=model, messages=HI, stream=False, options={**OPTIONS, "top_p": 1.0}
        ).message.content
    else:
        raise AssertionError(step)


def _case(rule_set: str, model: str) -> tuple[str, str, str | None]:
    return next((c[1], c[2], c[3]) for c in CASES if c[0] == rule_set and c[2] == model)


@pytest.mark.parametrize(
    ("rule_set", "model", "step"),
    [
        pytest.param(rule_set, model, step, id=f"{rule_set}-{model}-{step}")
        for (rule_set, model), steps in BACKEND_SPECIFIC.items()
        for step in steps
    ],
)
def test_backend_specific_steps(
    proxy_for: Callable[..., Any], rule_set: str, model: str, step: str
) -> None:
    profile, _, path = _case(rule_set, model)
    backend, server = proxy_for(rule_set, profile, path)
    with ollama.Client(host=server.url) as client:
        _bug_step(client, backend, model, step)
        if step in LEARNED_STEPS:  # refused once, remembered: the second time goes through
            _bug_step(client, backend, model, step)
    refused = [e for e in backend.journal if e.get("refused")]
    assert len(refused) == (1 if step in LEARNED_STEPS else 0), refused[:2]


@pytest.mark.parametrize(
    "rule_set",
    ["strict-unknown", "strict-unknown-legacy", "strict-unknown-vllm", "strict-unknown-litellm"],
)
def test_a_parameter_no_profile_knows_is_refused_once(
    proxy_for: Callable[..., Any], rule_set: str
) -> None:
    # The operator adds parallel_tool_calls to every body; this backend refuses it, in one of
    # four wordings, and no profile knows that.
    backend, server = proxy_for(
        rule_set,
        "openai-reference",
        None,
        backend_extra_body={"parallel_tool_calls": False},
    )
    with ollama.Client(host=server.url) as client:
        assert client.chat(model="gpt-4o-mini", messages=HI, stream=False).message.content
        assert text_of(client.chat(model="gpt-4o-mini", messages=HI, stream=True))
        assert client.chat(model="gpt-4o-mini", messages=HI, stream=False).message.content
    chats = [e for e in backend.journal if e["path"].endswith("/chat/completions")]
    assert ["parallel_tool_calls" in e["body"] for e in chats] == [True, False, False, False]
    assert [bool(e.get("refused")) for e in chats] == [True, False, False, False]


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-flash-preview"])
def test_geminis_parallel_tool_calls_without_index_stay_apart(
    proxy_for: Callable[..., Any], model: str
) -> None:
    """Gemini streams each call whole in its own chunk with no ``index`` (issue #16): the client
    gets both calls, each with its own arguments."""
    from tests.fake_upstream import Script

    backend, server = proxy_for("gemini", "gemini", None)
    calls = [
        {
            "index": 0,
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {
            "index": 1,
            "id": "c2",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
        },
    ]
    with ollama.Client(host=server.url) as client:
        for stream in (True, False):
            backend.script(Script(chunks=[{"tool_calls": calls}], finish_reason="tool_calls"))
            if stream:
                parts = list(client.chat(model=model, messages=HI, tools=[WEATHER], stream=True))
                got = [c for p in parts for c in (p.message.tool_calls or [])]
            else:
                out = client.chat(model=model, messages=HI, tools=[WEATHER], stream=False)
                got = list(out.message.tool_calls or [])
            assert [(c.function.name, dict(c.function.arguments)) for c in got] == [
                ("get_weather", {"city": "Paris"}),
                ("get_time", {"tz": "Europe/Paris"}),
            ]


def test_deepseek_gets_the_reasoning_of_a_tool_turn_back(proxy_for: Callable[..., Any]) -> None:
    """DeepSeek's thinking mode with tools refuses a history whose assistant tool turn lacks its
    reasoning_content; the client's ``thinking`` is sent back as that (issue #16)."""
    backend, server = proxy_for("deepseek", "deepseek", None)
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "thinking": "I should call get_weather.",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "18 C, sunny", "tool_name": "get_weather"},
    ]
    with ollama.Client(host=server.url) as client:
        out = client.chat(
            model="deepseek-reasoner", messages=history, tools=[WEATHER], stream=False
        )
    assert out.message.content or out.message.thinking
    sent = backend.last()["body"]["messages"]
    assert sent[1]["reasoning_content"] == "I should call get_weather."
    assert not [e for e in backend.journal if e.get("refused")]


# --- what the backend needs back across turns (issue #16, translate/carry.py) -------------------


def weather_turns(client: ollama.Client, model: str, *, stream: bool) -> list[Any]:
    """The ollama SDK's own tool example: ask, run the calls the model makes, send the results
    back with the SDK's Message objects (which drop each call's id). Returns the backend's view
    of the second request."""
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    if stream:
        parts = list(client.chat(model=model, messages=messages, tools=[WEATHER], stream=True))
        calls = [c for p in parts for c in (p.message.tool_calls or [])]
        message = ollama.Message(role="assistant", content="", tool_calls=calls)
    else:
        message = client.chat(model=model, messages=messages, tools=[WEATHER]).message
        calls = list(message.tool_calls or [])
    assert [c.function.arguments["city"] for c in calls] == ["Paris", "Rome"]
    messages.append(message)
    for call in calls:
        messages.append({"role": "tool", "content": "18 C", "tool_name": call.function.name})
    return messages


def two_calls() -> Any:
    from tests.fake_upstream import Script

    return Script(
        chunks=[
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": f"g{i}",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": f'{{"city": "{c}"}}'},
                    }
                    for i, c in enumerate(["Paris", "Rome"])
                ]
            }
        ],
        finish_reason="tool_calls",
    )


@pytest.mark.parametrize("stream", [True, False])
def test_gemini_3_gets_its_thought_signature_back(
    proxy_for: Callable[..., Any], stream: bool
) -> None:
    """Gemini 3 refuses a replayed call without the signature it gave it (ai.google.dev
    thought-signatures); the ollama SDK drops it with the call's id; the proxy gives both back."""
    from tests.fake_upstream import Script

    backend, server = proxy_for("gemini", "gemini", None)
    backend.script(two_calls(), Script(chunks=[{"content": "Both 18 C."}]))
    with ollama.Client(host=server.url) as client:
        messages = weather_turns(client, "gemini-3-pro-preview", stream=stream)
        out = client.chat(model="gemini-3-pro-preview", messages=messages, tools=[WEATHER])
    assert out.message.content == "Both 18 C."
    sent = backend.last()["body"]["messages"][1]["tool_calls"]
    assert [c["id"] for c in sent] == ["g0", "g1"]  # the backend's own ids, not made up
    assert sent[0]["extra_content"]["google"]["thought_signature"] not in (None, "")
    assert "extra_content" not in sent[1]  # only the first of parallel calls is signed
    assert not [e for e in backend.journal if e.get("refused")]


def test_without_the_signature_gemini_3_refuses_and_the_stand_in_is_accepted(
    proxy_for: Callable[..., Any],
) -> None:
    """A signature the proxy never saw (a restart, another replica without Redis): the gemini
    profile sends Google's documented stand-in rather than have the turn refused."""
    from tests.fake_upstream import Script

    backend, server = proxy_for("gemini", "gemini", None)
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "18 C", "tool_name": "get_weather"},
    ]
    backend.script(Script(chunks=[{"content": "18 C."}]))
    with ollama.Client(host=server.url) as client:
        out = client.chat(model="gemini-3-flash-preview", messages=history, tools=[WEATHER])
    assert out.message.content == "18 C."
    sent = backend.last()["body"]["messages"][1]["tool_calls"][0]
    assert sent["extra_content"] == {
        "google": {"thought_signature": "skip_thought_signature_validator"}
    }
    # and the fake does refuse a call without one, as Gemini does
    bare = dict(backend.last()["body"])
    bare["messages"] = [dict(m) for m in bare["messages"]]
    bare["messages"][1]["tool_calls"] = [{k: v for k, v in sent.items() if k != "extra_content"}]
    import httpx

    auth = {"Authorization": "Bearer sk-test-upstream"}
    refused = httpx.post(backend.url + "/chat/completions", json=bare, headers=auth)
    assert refused.status_code == 400
    assert "missing a thought_signature" in refused.text


def test_replicas_behind_one_balancer_agree_through_redis(
    fake: Callable[[str], FakeBackend], redis_url: str
) -> None:
    """Turn one on one replica, turn two on another (a load balancer's choice): with
    TOOL_CALL_STORE_URI at a shared Redis, the second finds the signature the first kept, so the
    backend gets its own signature back, not the stand-in."""
    from tests.fake_upstream import Script

    backend = fake("gemini")
    settings = settings_for(
        backend.url, backend_profile="gemini", tool_call_store_uri=redis_url, proxy_api_keys="k1"
    )
    backend.script(two_calls(), Script(chunks=[{"content": "Both 18 C."}]))
    with ProxyServer(settings) as a, ProxyServer(settings) as b:
        with ollama.Client(host=a.url, headers={"Authorization": "Bearer k1"}) as client:
            messages = weather_turns(client, "gemini-3-flash-preview", stream=True)
        with ollama.Client(host=b.url, headers={"Authorization": "Bearer k1"}) as client:
            out = client.chat(model="gemini-3-flash-preview", messages=messages, tools=[WEATHER])
    assert out.message.content == "Both 18 C."
    sent = backend.last()["body"]["messages"][1]["tool_calls"]
    assert [c["id"] for c in sent] == ["g0", "g1"]
    signature = sent[0]["extra_content"]["google"]["thought_signature"]
    assert signature != "skip_thought_signature_validator"


@pytest.mark.parametrize("stream", [True, False])
def test_gemini_3_gets_its_signature_back_through_the_anthropic_route(
    proxy_for: Callable[..., Any], stream: bool
) -> None:
    """Claude Code (the anthropic SDK here) keeps its tool_use ids but has no place for a
    backend's provider data: the proxy keeps Gemini's thought signature and gives it back."""
    import anthropic

    from tests.fake_upstream import Script

    backend, server = proxy_for("gemini", "gemini", None)
    backend.script(two_calls(), Script(chunks=[{"content": "Both 18 C."}]))
    tool: Any = {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
    }
    ask: Any = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    model = "gemini-3-pro-preview"
    first: Any
    with anthropic.Anthropic(base_url=server.url, api_key="x") as client:
        if stream:
            with client.messages.stream(
                model=model, max_tokens=256, messages=ask, tools=[tool]
            ) as s:
                first = s.get_final_message()
        else:
            first = client.messages.create(model=model, max_tokens=256, messages=ask, tools=[tool])
        uses = [b for b in first.content if b.type == "tool_use"]
        assert [u.input for u in uses] == [{"city": "Paris"}, {"city": "Rome"}]
        history: list[Any] = [
            *ask,
            {"role": "assistant", "content": [b.model_dump() for b in uses]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": u.id, "content": "18 C"} for u in uses
                ],
            },
        ]
        out = client.messages.create(model=model, max_tokens=256, messages=history, tools=[tool])
    assert [b.text for b in out.content if b.type == "text"] == ["Both 18 C."]
    sent = backend.last()["body"]["messages"][1]["tool_calls"]
    signature = sent[0]["extra_content"]["google"]["thought_signature"]
    assert signature != "skip_thought_signature_validator"  # its own, kept by the proxy
    assert not [e for e in backend.journal if e.get("refused")]


@pytest.mark.parametrize(
    ("rule_set", "model", "folds"),
    [
        ("vllm", "Qwen/Qwen3.6-27B", True),  # "System message must be at the beginning."
        ("mistral", "mistral-small-latest", True),  # "Expected last role User or Tool ..."
        ("openai", "gpt-4o", False),  # takes system messages anywhere: kept in place
    ],
)
def test_claude_codes_trailing_system_turn_reaches_every_backend(
    proxy_for: Callable[..., Any], rule_set: str, model: str, folds: bool
) -> None:
    """Claude Code's first request, as captured, ends with a system turn: folded into the
    leading system message where the backend's templates refuse it (issue #17)."""
    import httpx

    from tests.conftest import agent_request

    backend, server = proxy_for(rule_set, rule_set, None)  # the profile of the same name
    body = {**agent_request("claude_code_01_post_v1_messages.json"), "model": model}
    r = httpx.post(f"{server.url}/v1/messages", json={**body, "stream": False}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"]
    sent = backend.last()
    assert not sent.get("refused")
    roles = [m["role"] for m in sent["body"]["messages"]]
    assert roles == (["system", "user"] if folds else ["system", "user", "system"])
