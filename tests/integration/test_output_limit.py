"""Claude Code asks for ``max_tokens: 32000`` whatever the model (issue #17): the proxy lowers it
to the model's limit -- as the backend's model list publishes it, else MAX_OUTPUT_TOKENS -- on
the real app, with the captured Claude Code request, and says so in the DEBUG log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest
from structlog.testing import capture_logs

from tests.conftest import agent_request
from tests.fake_upstream import FakeUpstream
from tests.servers import ProxyServer, settings_for

MODEL = "gpt-4o-mini"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def published(upstream: FakeUpstream) -> Iterator[None]:
    # Groq's /openai/v1/models entry: context_window and max_completion_tokens.
    upstream.model_entries = {MODEL: {"context_window": 131072, "max_completion_tokens": 16384}}
    yield
    upstream.model_entries = {}


def claude_code_turn() -> dict[str, Any]:
    body = agent_request("claude_code_01_post_v1_messages.json")
    assert body["max_tokens"] == 32000  # as captured
    return {**body, "model": MODEL, "stream": False}


@pytest.mark.usefixtures("published")
def test_claude_codes_max_tokens_is_lowered_to_the_published_limit(upstream: FakeUpstream) -> None:
    settings = settings_for(upstream.url, log_level="DEBUG")
    with ProxyServer(settings) as p, capture_logs() as logs:
        r = httpx.post(f"{p.url}/v1/messages", json=claude_code_turn(), timeout=30)
    assert r.status_code == 200, r.text
    assert upstream.last()["body"]["max_tokens"] == 16384
    adapted = [a for e in logs if e["event"] == "backend_adapted" for a in e["adaptations"]]
    assert "max_tokens 32000 lowered to 16384: output limit from the backend's model list" in (
        adapted
    )


@pytest.mark.usefixtures("published")
def test_within_the_limit_nothing_changes(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url)) as p, ollama.Client(host=p.url) as client:
        client.chat(model=MODEL, messages=HI, stream=False, options={"num_predict": 500})
    assert upstream.last()["body"]["max_tokens"] == 500


def test_max_output_tokens_for_models_of_no_published_limit(upstream: FakeUpstream) -> None:
    settings = settings_for(upstream.url, max_output_tokens=8192)
    with ProxyServer(settings) as p, ollama.Client(host=p.url) as client:
        client.generate(model=MODEL, prompt="hi", stream=False, options={"num_predict": 32000})
        first = upstream.last()["body"]
        openai_client = httpx.Client(base_url=p.url, timeout=30)
        r = openai_client.post(
            "/v1/responses", json={"model": MODEL, "input": "hi", "max_output_tokens": 100000}
        )
        openai_client.close()
    assert r.status_code == 200, r.text
    assert r.json()["max_output_tokens"] == 100000  # the Response repeats what was asked
    assert first["max_tokens"] == 8192
    assert upstream.last()["body"]["max_tokens"] == 8192


def test_the_chat_completions_relay_is_not_capped(upstream: FakeUpstream) -> None:
    # /v1/chat/completions is relayed as the client wrote it (docs/CONFIGURATION.md): a client of
    # the OpenAI API picks max_tokens for the backend it knows it talks to.
    settings = settings_for(upstream.url, max_output_tokens=8192)
    body = {"model": MODEL, "messages": HI, "max_tokens": 32000}
    with ProxyServer(settings) as p:
        r = httpx.post(f"{p.url}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert upstream.last()["body"]["max_tokens"] == 32000
