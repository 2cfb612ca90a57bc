"""Every file in examples/ runs against the proxy (in front of the fake backend) and prints what
its comments promise. The clients come from the test environment (Python) and tests/js (Node)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients import standing
from tests.clients.test_js_clients import JS, ok, run_node
from tests.fake_upstream import FakeUpstream
from tests.servers import ProxyServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
N8N = ROOT / "tests" / "n8n"


@pytest.fixture(autouse=True)
def _standing(upstream: FakeUpstream) -> Iterator[None]:
    # A tool call for "weather in Paris", its answer once the tool result is sent, else "Hello!".
    standing.install(upstream)
    yield
    upstream.reset()


def run(cmd: list[str], proxy: ProxyServer, cwd: Path | None = None) -> list[str]:
    env = {**os.environ, "OLLAMA_HOST": proxy.url, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.splitlines()


def test_every_example_is_tested() -> None:
    files = {
        str(p.relative_to(EXAMPLES))
        for p in EXAMPLES.rglob("*")
        if p.is_file() and p.name not in ("README.md", "package.json")
    }
    assert files == {
        "python/ollama_sdk.py",
        "python/langchain_chat.py",
        "javascript/ollama_chat.mjs",
        "curl/chat.sh",
        "n8n/ollama-chat-workflow.json",
    }


def test_python_ollama_sdk(proxy: ProxyServer) -> None:
    lines = run([sys.executable, str(EXAMPLES / "python" / "ollama_sdk.py")], proxy)
    assert lines == [
        "chat: Hello!",
        "stream: Hello!",
        "tool calls: [('get_weather', {'city': 'Paris'})]",
        "tools: It is 17C in Paris.",
        "embed: 2 vectors of 3 numbers",
    ]


def test_python_langchain(proxy: ProxyServer) -> None:
    lines = run([sys.executable, str(EXAMPLES / "python" / "langchain_chat.py")], proxy)
    assert lines == [
        "invoke: Hello!",
        "stream: Hello!",
        "tool calls: [('get_weather', {'city': 'Paris'})]",
        "tools: It is 17C in Paris.",
        "embed: 2 vectors",
    ]


def test_javascript_ollama_js(proxy: ProxyServer, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "ollama").is_dir():
        if os.environ.get("REQUIRE_CLIENTS"):
            pytest.fail("node or tests/js/node_modules missing: run `make dev`")
        pytest.skip("node or the ollama npm package missing: run `make dev`")
    # Run a copy beside the test suite's node_modules, where `import "ollama"` resolves.
    shutil.copy(EXAMPLES / "javascript" / "ollama_chat.mjs", tmp_path / "ollama_chat.mjs")
    (tmp_path / "node_modules").symlink_to(JS / "node_modules")
    lines = run([node, "ollama_chat.mjs"], proxy, cwd=tmp_path)
    assert lines == [
        "chat: Hello!",
        "stream: Hello!",
        'tool calls: [["get_weather",{"city":"Paris"}]]',
        "tools: It is 17C in Paris.",
        "embed: 2 vectors of 3 numbers",
    ]


def test_curl(proxy: ProxyServer) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    lines = run(["bash", str(EXAMPLES / "curl" / "chat.sh")], proxy)
    sections: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith("# "):
            sections[line[2:]] = []
        elif line:
            sections[list(sections)[-1]].append(line)
    assert json.loads(sections["version"][0])["version"]
    assert len(json.loads(sections["models"][0])["models"]) == 3
    assert json.loads(sections["chat, one answer"][0])["message"]["content"] == "Hello!"
    streamed = [json.loads(x) for x in sections[next(k for k in sections if "streamed" in k)]]
    assert "".join(x["message"]["content"] for x in streamed) == "Hello!"
    assert streamed[-1]["done"] is True
    assert json.loads(sections["generate"][0])["response"] == "Hello!"
    assert len(json.loads(sections["embeddings"][0])["embeddings"]) == 2
    error = sections[next(k for k in sections if k.startswith("an error"))][0]
    body, status = error.rsplit(" (HTTP ", 1)
    assert json.loads(body) == {"error": "model 'no-such-model' not found"}
    assert status == "404)"


def test_n8n_workflow(proxy: ProxyServer) -> None:
    if not (N8N / "vendor" / "n8n-nodes-langchain" / "dist").is_dir():
        if os.environ.get("REQUIRE_CLIENTS"):
            pytest.fail("n8n nodes not unpacked: run tests/n8n/setup.sh (make dev)")
        pytest.skip("n8n nodes not unpacked: run tests/n8n/setup.sh (make dev)")
    results = run_node(
        N8N / "harness.cjs", proxy.url, str(EXAMPLES / "n8n" / "ollama-chat-workflow.json")
    )
    value = ok(results, "workflow")
    assert value["prompt"] == "Say hello in one short sentence."
    assert value["output"] == ["Hello!"]
