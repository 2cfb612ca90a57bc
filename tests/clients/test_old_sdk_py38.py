"""An old ``ollama`` SDK (0.3.3, which returned plain dicts) on Python 3.8: applications written
years ago keep working. ``make dev`` builds its virtualenv when a Python 3.8 is available."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.clients import standing
from tests.clients.test_js_clients import ok
from tests.fake_upstream import FakeUpstream
from tests.servers import ProxyServer

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv-py38" / "bin" / "python"
CLIENT = "ollama 0.3.3 (Python 3.8)"


@pytest.fixture(scope="module")
def results(proxy: ProxyServer, upstream: FakeUpstream) -> dict[str, Any]:
    if not PYTHON.exists():
        if os.environ.get("REQUIRE_PY38"):
            pytest.fail("no .venv-py38: run `make dev` on a machine with Python 3.8")
        pytest.skip(
            "no Python 3.8 client venv (.venv-py38): run `make dev` with python3.8 available"
        )
    upstream.reset()
    standing.install(upstream)
    try:
        out = subprocess.run(
            [str(PYTHON), str(Path(__file__).with_name("old_sdk.py")), proxy.url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        upstream.reset()
    assert out.returncode == 0, out.stderr[-3000:]
    results: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def test_runs_on_python_38(results: dict[str, Any]) -> None:
    assert ok(results, "version")[:2] == [3, 8]


@pytest.mark.compat(CLIENT, "list models")
def test_list(results: dict[str, Any]) -> None:
    assert ok(results, "list") == ["gpt-4o-mini", "qwen3:8b", "text-embedding-3-small"]


@pytest.mark.compat(CLIENT, "version / show")
def test_show(results: dict[str, Any]) -> None:
    assert ok(results, "show") == 128000


@pytest.mark.compat(CLIENT, "chat")
def test_chat(results: dict[str, Any]) -> None:
    assert ok(results, "chat") == standing.HELLO


@pytest.mark.compat(CLIENT, "chat stream")
def test_chat_stream(results: dict[str, Any]) -> None:
    assert ok(results, "chat stream") == standing.HELLO


@pytest.mark.compat(CLIENT, "generate stream")
def test_generate(results: dict[str, Any]) -> None:
    assert ok(results, "generate") == standing.HELLO
    assert ok(results, "generate stream") == standing.HELLO


@pytest.mark.compat(CLIENT, "tools")
def test_tools(results: dict[str, Any]) -> None:
    assert ok(results, "tools") == {
        "calls": [["get_weather", {"city": "Paris"}]],
        "answer": "It is 17C in Paris.",
    }


@pytest.mark.compat(CLIENT, "embeddings")
def test_embeddings(results: dict[str, Any]) -> None:
    assert ok(results, "embed") == [pytest.approx([0.6, 0.8, 0.0])]
    assert ok(results, "embeddings") == [3.0, 4.0, 0.0]


@pytest.mark.compat(CLIENT, "ps")
def test_ps(results: dict[str, Any]) -> None:
    assert "gpt-4o-mini" in ok(results, "ps")
