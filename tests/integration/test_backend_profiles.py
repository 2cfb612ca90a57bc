"""Backend profiles end to end: the real ollama SDK against the real server, and what the backend
receives (the fake backend's journal). The translation itself is table-tested in
tests/unit/translate/test_profiles.py."""

from __future__ import annotations

from typing import Any

import httpx
import ollama
from structlog.testing import capture_logs

from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

HI = [{"role": "user", "content": "hi"}]


def sent(upstream: FakeUpstream) -> dict[str, Any]:
    body: dict[str, Any] = upstream.last()["body"]
    return body


def test_mistral_gets_random_seed_and_no_stream_options(upstream: FakeUpstream) -> None:
    upstream.extra_params.add("random_seed")  # Mistral's name for it
    with (
        ProxyServer(settings_for(upstream.url, backend_profile="mistral")) as p,
        ollama.Client(host=p.url) as client,
    ):
        text = "".join(
            part.message.content or ""
            for part in client.chat(
                model="gpt-4o-mini", messages=HI, stream=True, options={"seed": 42, "top_k": 5}
            )
        )
    assert text
    body = sent(upstream)
    assert body["random_seed"] == 42
    assert "seed" not in body
    assert "stream_options" not in body
    assert "top_k" not in body


def test_openai_reasoning_models_get_max_completion_tokens(upstream: FakeUpstream) -> None:
    upstream.models = ["o4-mini", "gpt-4o"]
    with (
        ProxyServer(settings_for(upstream.url, backend_profile="openai")) as p,
        ollama.Client(host=p.url) as client,
    ):
        client.chat(
            model="o4-mini",
            messages=HI,
            stream=False,
            think=True,
            options={"num_predict": 64, "temperature": 0.3},
        )
        reasoning = sent(upstream)
        client.chat(model="gpt-4o", messages=HI, format="json", stream=False)
        json_mode = sent(upstream)
    assert reasoning["max_completion_tokens"] == 64
    assert reasoning["reasoning_effort"] == "medium"
    assert "temperature" not in reasoning
    assert "max_tokens" not in reasoning
    assert json_mode["response_format"] == {"type": "json_object"}
    assert "json" in json_mode["messages"][0]["content"].lower()


def test_extra_body_and_headers_reach_the_backend(upstream: FakeUpstream) -> None:
    settings = settings_for(
        upstream.url,
        backend_profile="groq",
        backend_extra_body={"service_tier": "flex"},
        backend_headers={"X-Title": "team-a", "X-Api-Key": "hdr-secret-4242"},
        log_level="DEBUG",
    )
    with ProxyServer(settings) as p, ollama.Client(host=p.url) as client, capture_logs() as logs:
        client.chat(model="gpt-4o-mini", messages=HI, stream=False, think=True, logprobs=True)
    entry = upstream.last()
    assert entry["body"]["service_tier"] == "flex"
    assert "logprobs" not in entry["body"]  # Groq refuses it
    assert entry["headers"]["X-Title"] == "team-a"
    assert entry["headers"]["X-Api-Key"] == "hdr-secret-4242"
    assert entry["headers"]["Authorization"] == "Bearer sk-test-upstream"
    adapted = [e for e in logs if e["event"] == "backend_adapted"]
    assert adapted
    assert adapted[0]["log_level"] == "debug"
    assert any("logprobs not sent" in a for a in adapted[0]["adaptations"])
    warned = [e for e in logs if e["event"] == "backend_adaptation"]
    assert [e["key"] for e in warned] == ["logprobs (groq)"]
    assert "hdr-secret-4242" in settings.secrets()  # redacted from logs and errors like a key


def test_the_start_log_names_each_upstreams_profile(upstream: FakeUpstream) -> None:
    with capture_logs() as logs, ProxyServer(settings_for(upstream.url, backend_profile="vllm")):
        pass
    started = [e for e in logs if e["event"] == "upstream_profile"]
    assert [(e["upstream"], e["profile"], e["log_level"]) for e in started] == [
        ("default", "vllm", "info")
    ]


def test_ollama_v1_as_the_backend_turns_thinking_off(upstream: FakeUpstream) -> None:
    with (
        ProxyServer(settings_for(upstream.url, backend_profile="ollama")) as p,
        ollama.Client(host=p.url) as client,
    ):
        client.chat(model="gpt-4o-mini", messages=HI, stream=False, think=False)
    assert sent(upstream)["reasoning_effort"] == "none"


def top_k_sent(upstream: FakeUpstream) -> list[bool]:
    chats = [e for e in upstream.journal if e["path"] == "/v1/chat/completions"]
    return ["top_k" in e["body"] for e in chats]


def test_a_parameter_no_profile_knows_is_dropped_once_and_remembered(
    upstream: FakeUpstream,
) -> None:
    # The operator forwards top_k; this backend refuses it ("Unrecognized request argument
    # supplied: top_k"), as no profile could know.
    settings = settings_for(
        upstream.url, passthrough_options={"top_k": "top_k"}, enable_metrics=True
    )
    with (
        ProxyServer(settings) as p,
        ollama.Client(host=p.url) as client,
        capture_logs() as logs,
    ):
        first = client.chat(model="gpt-4o-mini", messages=HI, stream=False, options={"top_k": 5})
        assert first.message.content
        assert top_k_sent(upstream) == [True, False]
        upstream.journal.clear()
        streamed = "".join(
            part.message.content or ""
            for part in client.chat(
                model="gpt-4o-mini", messages=HI, stream=True, options={"top_k": 5}
            )
        )
        assert streamed
        assert top_k_sent(upstream) == [False]  # shaped right at once
        metrics = httpx.get(p.url + "/metrics").text
    refused = [e for e in logs if e["event"] == "backend_refused_parameter"]
    assert [(e["parameter"], e["action"], e["log_level"]) for e in refused] == [
        ("top_k", "not sent", "warning")
    ]
    assert (
        'ollama_proxy_backend_adaptations_total{parameter="top_k",upstream="default"} 1.0'
        in metrics
    )


def test_embed_dimensions_are_computed_where_the_backend_refuses_them(
    upstream: FakeUpstream,
) -> None:
    # text-embedding-ada-002's answer to "dimensions" (OpenAI); the fake's vectors are
    # [3, 4 + i, 0].
    refusal = {
        "error": {
            "message": "This model does not support specifying dimensions.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    upstream.faults.append(
        (
            lambda path, body: path == "/v1/embeddings" and "dimensions" in (body or {}),
            Script(status=400, error=refusal),
        )
    )
    with ProxyServer(settings_for(upstream.url)) as p, ollama.Client(host=p.url) as client:
        out = client.embed(model="text-embedding-3-small", input=["a", "b"], dimensions=2)
        again = client.embed(model="text-embedding-3-small", input="a", dimensions=2)
    # Ollama's way: normalised, cut to the dimensions, normalised again.
    assert [[round(x, 6) for x in v] for v in out.embeddings] == [
        [0.6, 0.8],
        [round(3 / 34**0.5, 6), round(5 / 34**0.5, 6)],
    ]
    assert [round(x, 6) for x in again.embeddings[0]] == [0.6, 0.8]
    embeds = [e["body"] for e in upstream.journal if e["path"] == "/v1/embeddings"]
    assert ["dimensions" in b for b in embeds] == [True, False, False]  # remembered


def test_openai_ada_embeddings_never_get_dimensions(upstream: FakeUpstream) -> None:
    upstream.models = ["text-embedding-ada-002"]
    with (
        ProxyServer(settings_for(upstream.url, backend_profile="openai")) as p,
        ollama.Client(host=p.url) as client,
    ):
        out = client.embed(model="text-embedding-ada-002", input="a", dimensions=2)
    assert [round(x, 6) for x in out.embeddings[0]] == [0.6, 0.8]
    assert "dimensions" not in upstream.last("/v1/embeddings")["body"]
