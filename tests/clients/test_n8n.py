"""n8n's Ollama nodes (the product's first use case), their published code run headless by Node:
credential test, model dropdown, Ollama Chat Model (invoke, stream, tools, thinking) and
Embeddings Ollama. ``tests/n8n/setup.sh`` installs them (``make dev``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.clients import standing
from tests.clients.test_js_clients import ok, run_node
from tests.fake_upstream import FakeUpstream
from tests.servers import ProxyServer

N8N = Path(__file__).resolve().parents[1] / "n8n"
CLIENT = "n8n Ollama nodes"


@pytest.fixture(scope="module")
def results(proxy: ProxyServer, upstream: FakeUpstream) -> dict[str, Any]:
    if not (N8N / "vendor" / "n8n-nodes-langchain" / "dist").is_dir():
        if os.environ.get("REQUIRE_CLIENTS"):
            pytest.fail("n8n nodes not unpacked: run tests/n8n/setup.sh (make dev)")
        pytest.skip("n8n nodes not unpacked: run tests/n8n/setup.sh (make dev)")
    upstream.reset()
    standing.install(upstream)
    try:
        return run_node(N8N / "harness.cjs", proxy.url)
    finally:
        upstream.reset()


@pytest.mark.compat(CLIENT, "credential test")
def test_credential_test_with_empty_bearer(results: dict[str, Any]) -> None:
    # Declarative requests always carry "Authorization: Bearer <key>", here with an empty key.
    assert ok(results, "credential test") == {
        "status": 200,
        "authorization": "Bearer ",
        "models": 3,
    }


@pytest.mark.compat(CLIENT, "list models")
def test_model_dropdown(results: dict[str, Any]) -> None:
    names = [o["name"] for o in ok(results, "model dropdown")]
    assert names == ["gpt-4o-mini", "qwen3:8b", "text-embedding-3-small"]


@pytest.mark.compat(CLIENT, "chat")
def test_chat_model_invoke(results: dict[str, Any]) -> None:
    value = ok(results, "chat invoke")
    assert value["content"] == standing.HELLO
    assert (value["usage"]["input_tokens"], value["usage"]["output_tokens"]) == (7, 2)


@pytest.mark.compat(CLIENT, "chat stream")
def test_chat_model_stream(results: dict[str, Any]) -> None:
    assert ok(results, "chat stream") == standing.HELLO


@pytest.mark.compat(CLIENT, "tools")
def test_chat_model_tools(results: dict[str, Any]) -> None:
    assert ok(results, "chat tools") == {
        "calls": [["get_weather", {"city": "Paris"}]],
        "answer": "It is 17C in Paris.",
    }


@pytest.mark.compat(CLIENT, "thinking")
def test_chat_model_thinking(results: dict[str, Any]) -> None:
    assert ok(results, "chat thinking") == {"content": "51", "reasoning": "17*3 = 51"}


@pytest.mark.compat(CLIENT, "embeddings")
def test_embeddings_node(results: dict[str, Any]) -> None:
    value = ok(results, "embeddings")
    assert value["documents"][0] == pytest.approx([0.6, 0.8, 0.0])
    assert value["query"] == pytest.approx([0.6, 0.8, 0.0])
