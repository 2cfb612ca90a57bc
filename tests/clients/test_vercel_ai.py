"""The Vercel AI SDK (npm ``ai``) with its Ollama provider, ollama-ai-provider-v2, run by Node
against the proxy (tests/vercel/provider.mjs). The provider validates Ollama's answers with zod:
``/api/embed`` must carry ``total_duration``, ``load_duration`` and ``prompt_eval_count``, an
unstreamed ``/api/generate`` must carry ``context`` (issue #17). They install with ``make dev``
(npm); without Node they are skipped, visibly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.clients.test_js_clients import ok, run_node
from tests.fake_upstream import FakeUpstream
from tests.servers import ProxyServer

SCRIPT = Path(__file__).resolve().parents[1] / "vercel" / "provider.mjs"
CLIENT = "Vercel AI SDK, ollama-ai-provider-v2 (npm)"


@pytest.fixture(scope="module")
def results(proxy: ProxyServer, upstream: FakeUpstream) -> dict[str, Any]:
    upstream.reset()
    return run_node(SCRIPT, proxy.url)


@pytest.mark.compat(CLIENT, "embeddings")
def test_embed_is_accepted(results: dict[str, Any]) -> None:
    assert ok(results, "embed") == {"dimensions": 3, "tokens": 3}
    assert ok(results, "embedMany") == 2


@pytest.mark.compat(CLIENT, "generate stream")
def test_an_unstreamed_completion_is_accepted(results: dict[str, Any]) -> None:
    assert ok(results, "completion") == "Hello!"


@pytest.mark.compat(CLIENT, "chat")
def test_chat(results: dict[str, Any]) -> None:
    assert ok(results, "chat") == "Hello!"


def test_without_those_fields_the_provider_refuses_the_answers() -> None:
    # The control: the proxy's answers before issue #17 (no load_duration, no context), from a
    # stand-in server in the same script. Every call fails schema validation there.
    control = run_node(SCRIPT, "--control")
    for name in ("embed", "embedMany", "completion"):
        assert not control[name]["ok"]
        assert "Invalid JSON response" in control[name]["error"]
