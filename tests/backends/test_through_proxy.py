"""The real ollama SDK, through the proxy, against each backend's fake (issue #15).

Each fake refuses what its backend refuses, in its own words (tests/backends/*.py); the proxy,
told the backend's profile, must shape every request so that none is refused: chat and generate,
streamed and not, with options, think on and off, and JSON format. A parameter no profile knows
is given up after the backend's first refusal and never sent again."""

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
]


# Models that cannot think, on backends that say so when asked to (as Ollama does).
NOT_THINKING = {"ollama-v1": ("llama3.2",)}


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
    with ollama.Client(host=server.url) as client:
        for think in (True, False):
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
