"""The official Ollama JS SDK (npm ``ollama``) and ``@langchain/ollama``, run by Node against the
proxy. They install with ``make dev`` (npm); without Node they are skipped, visibly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.clients import standing
from tests.fake_upstream import FakeUpstream
from tests.servers import ProxyServer

JS = Path(__file__).resolve().parents[1] / "js"
OLLAMA_JS = "ollama-js (npm)"
LANGCHAIN_JS = "@langchain/ollama (npm)"


def run_node(script: Path, *args: str, timeout: float = 120) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: JS client checks skipped")
    if not (script.parent / "node_modules").is_dir():
        if os.environ.get("REQUIRE_CLIENTS"):
            pytest.fail(f"npm packages missing in {script.parent}: run `make dev`")
        pytest.skip(f"npm packages missing in {script.parent}: run `make dev`")
    out = subprocess.run(
        [node, str(script), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


@pytest.fixture(scope="module")
def results(proxy: ProxyServer, upstream: FakeUpstream) -> dict[str, Any]:
    upstream.reset()
    standing.install(upstream)
    try:
        return run_node(JS / "clients.mjs", proxy.url)
    finally:
        upstream.reset()


def ok(results: dict[str, Any], name: str) -> Any:
    entry = results[name]
    assert entry["ok"], entry.get("error")
    return entry["value"]


@pytest.mark.compat(OLLAMA_JS, "list models")
def test_ollama_js_list(results: dict[str, Any]) -> None:
    assert ok(results, "ollama-js list") == [
        ["gpt-4o-mini", "gpt-4o-mini"],
        ["qwen3:8b", "qwen3:8b"],
        ["text-embedding-3-small", "text-embedding-3-small"],
    ]


@pytest.mark.compat(OLLAMA_JS, "version / show")
def test_ollama_js_version_show(results: dict[str, Any]) -> None:
    assert ok(results, "ollama-js version").count(".") == 2
    show = ok(results, "ollama-js show")
    assert show["info"]["qwen.context_length"] == 40960
    assert "thinking" in show["capabilities"]


@pytest.mark.compat(OLLAMA_JS, "chat")
def test_ollama_js_chat(results: dict[str, Any]) -> None:
    assert ok(results, "ollama-js chat") == standing.HELLO


@pytest.mark.compat(OLLAMA_JS, "chat stream")
def test_ollama_js_chat_stream(results: dict[str, Any]) -> None:
    parts = ok(results, "ollama-js chat stream")
    assert "".join(p["content"] for p in parts) == standing.HELLO
    assert [p["done"] for p in parts][-1] is True
    assert [p["eval_count"] for p in parts][-1] == 2


@pytest.mark.compat(OLLAMA_JS, "generate stream")
def test_ollama_js_generate(results: dict[str, Any]) -> None:
    assert ok(results, "ollama-js generate stream") == standing.HELLO


@pytest.mark.compat(OLLAMA_JS, "tools")
def test_ollama_js_tools(results: dict[str, Any]) -> None:
    value = ok(results, "ollama-js tools")
    assert value == {"calls": [["get_weather", {"city": "Paris"}]], "answer": "It is 17C in Paris."}


@pytest.mark.compat(OLLAMA_JS, "thinking")
def test_ollama_js_thinking(results: dict[str, Any]) -> None:
    assert ok(results, "ollama-js thinking") == {"thinking": "17*3 = 51", "content": "51"}


@pytest.mark.compat(OLLAMA_JS, "embeddings")
def test_ollama_js_embed(results: dict[str, Any]) -> None:
    vectors = ok(results, "ollama-js embed")
    assert vectors[0] == pytest.approx([0.6, 0.8, 0.0])
    assert len(vectors) == 2


@pytest.mark.compat(OLLAMA_JS, "ps")
def test_ollama_js_ps(results: dict[str, Any]) -> None:
    assert "gpt-4o-mini" in ok(results, "ollama-js ps")


@pytest.mark.compat(LANGCHAIN_JS, "chat")
def test_langchainjs_invoke(results: dict[str, Any]) -> None:
    value = ok(results, "langchainjs invoke")
    assert value["content"] == standing.HELLO
    # @langchain/ollama sums counts over lines: right only if they are on the final line alone.
    assert (value["usage"]["input_tokens"], value["usage"]["output_tokens"]) == (7, 2)


@pytest.mark.compat(LANGCHAIN_JS, "chat stream")
def test_langchainjs_stream(results: dict[str, Any]) -> None:
    assert ok(results, "langchainjs stream") == standing.HELLO


@pytest.mark.compat(LANGCHAIN_JS, "tools")
def test_langchainjs_tools(results: dict[str, Any]) -> None:
    assert ok(results, "langchainjs tools") == {
        "calls": [["get_weather", {"city": "Paris"}]],
        "answer": "It is 17C in Paris.",
    }


@pytest.mark.compat(LANGCHAIN_JS, "thinking")
def test_langchainjs_thinking(results: dict[str, Any]) -> None:
    value = ok(results, "langchainjs thinking")
    assert value["content"] == "51"
    assert value["reasoning"] == "17*3 = 51"


@pytest.mark.compat(LANGCHAIN_JS, "embeddings")
def test_langchainjs_embeddings(results: dict[str, Any]) -> None:
    vectors = ok(results, "langchainjs embeddings")
    assert vectors[1] == pytest.approx([3 / 34**0.5, 5 / 34**0.5, 0.0])
