"""Several backends (UPSTREAMS_FILE): routing by glob, alias and ``upstream:model``, the merged
catalogue, fallbacks before the first byte and never after, and an upstream down while listing.
Three fake OpenAI upstreams over real sockets, driven through the ollama SDK and raw HTTP."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT: dict[str, Any] = {"messages": MESSAGES, "stream": False}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    started = {
        "openai": FakeUpstream(["gpt-4o-mini", "text-embedding-3-small", "whisper-1"], "sk-oa"),
        "local": FakeUpstream(["meta-llama/Llama-3.1-8B-Instruct", "qwen3:8b"], ""),
        "openrouter": FakeUpstream(["gpt-4o-mini", "anthropic/claude-sonnet-4"], "sk-or"),
    }
    for fake in started.values():
        fake.start()
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture(autouse=True)
def _clean(fakes: dict[str, FakeUpstream]) -> Iterator[None]:
    for fake in fakes.values():
        fake.reset()
    fakes["openrouter"].model_entries = {
        "anthropic/claude-sonnet-4": {
            "context_length": 1000000,
            "supported_parameters": ["tools", "reasoning", "temperature"],
            "architecture": {"input_modalities": ["text", "image"]},
        }
    }
    fakes["local"].model_entries = {"qwen3:8b": {"max_model_len": 16384}}
    yield
    for fake in fakes.values():
        fake.model_entries = {}


def dead_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_topology(tmp: Path, fakes: dict[str, FakeUpstream], dead_port: int = 0) -> Path:
    upstreams: list[dict[str, Any]] = [
        {
            "name": "openai",
            "base_url": fakes["openai"].url,
            "api_key_env": "TEST_OPENAI_KEY",
            "models": ["gpt-*", "text-embedding-*"],
        },
        {
            "name": "local",
            "base_url": fakes["local"].url,
            "extra_params": ["top_k"],
        },
        {"name": "openrouter", "base_url": fakes["openrouter"].url, "api_key": "sk-or"},
    ]
    if dead_port:
        upstreams.insert(1, {"name": "down", "base_url": f"http://127.0.0.1:{dead_port}/v1"})
    path = tmp / "upstreams.json"
    path.write_text(
        json.dumps(
            {
                "upstreams": upstreams,
                "aliases": {"llama3": "local:meta-llama/Llama-3.1-8B-Instruct"},
                "fallbacks": {"gpt-4o-mini": ["openai", "openrouter"]},
            }
        )
    )
    return path


@pytest.fixture
def proxy_multi(
    fakes: dict[str, FakeUpstream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ProxyServer]:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-oa")
    settings = settings_for(
        "http://unused.invalid/v1", upstreams_file=write_topology(tmp_path, fakes)
    )
    with ProxyServer(settings) as server:
        # Lists fetched (and the background refresh asleep) before a test scripts failures: the
        # fakes answer /v1/models with a queued error script too.
        assert httpx.get(server.url + "/api/tags").status_code == 200
        for fake in fakes.values():
            fake.journal.clear()
        yield server


def served_by(fakes: dict[str, FakeUpstream], path: str = "/v1/chat/completions") -> list[str]:
    return [n for n, f in fakes.items() for e in f.journal if e["path"] == path]


def test_routing_by_glob_alias_and_explicit_upstream(
    proxy_multi: ProxyServer, fakes: dict[str, FakeUpstream]
) -> None:
    with ollama.Client(host=proxy_multi.url) as client:
        _route_checks(client, fakes)


def _route_checks(client: ollama.Client, fakes: dict[str, FakeUpstream]) -> None:
    # a glob of the first upstream that lists the model
    assert client.chat(model="gpt-4o-mini", messages=MESSAGES).message.content == "Hello!"
    assert served_by(fakes) == ["openai"]
    # not matched by openai's globs: the next upstream that lists it
    client.chat(model="qwen3:8b", messages=MESSAGES)
    assert fakes["local"].last()["body"]["model"] == "qwen3:8b"
    # an alias names its upstream and model; the answer echoes the client's name
    reply = client.chat(model="llama3", messages=MESSAGES)
    assert reply.model == "llama3"
    assert fakes["local"].last()["body"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    # upstream:model addresses one upstream explicitly
    client.chat(model="openrouter:gpt-4o-mini", messages=MESSAGES)
    assert fakes["openrouter"].last()["body"]["model"] == "gpt-4o-mini"
    # each upstream got its own key, and the local one none
    assert fakes["openai"].last()["headers"]["Authorization"] == "Bearer sk-oa"
    assert fakes["openrouter"].last()["headers"]["Authorization"] == "Bearer sk-or"
    assert "Authorization" not in fakes["local"].last()["headers"]
    # embeddings route the same way
    assert len(client.embed(model="text-embedding-3-small", input=["a"]).embeddings) == 1
    assert served_by(fakes, "/v1/embeddings") == ["openai"]


def test_extra_params_reach_only_their_upstream(
    proxy_multi: ProxyServer, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["local"].extra_params.add("top_k")
    body = {**CHAT, "options": {"top_k": 5}}
    r = httpx.post(proxy_multi.url + "/api/chat", json={**body, "model": "qwen3:8b"})
    assert r.status_code == 200
    assert fakes["local"].last()["body"]["top_k"] == 5
    r = httpx.post(proxy_multi.url + "/api/chat", json={**body, "model": "gpt-4o-mini"})
    assert r.status_code == 200
    assert "top_k" not in fakes["openai"].last()["body"]  # OpenAI would reject it


def test_merged_catalogue(proxy_multi: ProxyServer) -> None:
    with ollama.Client(host=proxy_multi.url) as client:
        names = [m.model for m in client.list().models]
    assert names == [
        "gpt-4o-mini",  # listed by openai and openrouter: once
        "text-embedding-3-small",  # openai's whisper-1 is outside its globs
        "meta-llama/Llama-3.1-8B-Instruct",
        "qwen3:8b",
        "anthropic/claude-sonnet-4",
        "llama3",  # the alias
    ]
    ids = [m["id"] for m in httpx.get(proxy_multi.url + "/v1/models").json()["data"]]
    assert ids == names


def test_show_uses_what_backends_publish(proxy_multi: ProxyServer) -> None:
    with ollama.Client(host=proxy_multi.url) as client:
        claude = client.show("anthropic/claude-sonnet-4")
        qwen = client.show("qwen3:8b")
    assert claude.modelinfo is not None
    assert claude.modelinfo["claude.context_length"] == 1000000
    # published, plus insert: a loopback upstream has the reference profile, whose
    # /v1/completions takes suffix (the openrouter profile's does not: BACKENDS.md)
    assert set(claude.capabilities or []) == {"completion", "tools", "insert", "vision", "thinking"}
    assert qwen.modelinfo is not None
    assert qwen.modelinfo["qwen.context_length"] == 16384  # vLLM's max_model_len
    assert "thinking" in (qwen.capabilities or [])  # nothing published: the family's


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_on_5xx_before_the_first_byte(
    proxy_multi: ProxyServer, fakes: dict[str, FakeUpstream], stream: bool
) -> None:
    fakes["openai"].script(Script(status=503, error={"error": {"message": "overloaded"}}))
    r = httpx.post(
        proxy_multi.url + "/api/chat", json={**CHAT, "model": "gpt-4o-mini", "stream": stream}
    )
    assert r.status_code == 200
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert "".join(x["message"]["content"] for x in lines) == "Hello!"
    assert lines[-1]["done"] is True
    assert served_by(fakes) == ["openai", "openrouter"]
    metrics = httpx.get(proxy_multi.url + "/v1/metrics").text
    assert 'ollama_proxy_upstream_fallbacks_total{upstream="openai"} 1.0' in metrics


def test_fallback_on_429_and_for_the_openai_api(
    proxy_multi: ProxyServer, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["openai"].script(Script(status=429, error={"error": {"message": "rate limited"}}))
    r = httpx.post(
        proxy_multi.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": CHAT["messages"]},
    )
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "Hello!"
    assert served_by(fakes) == ["openai", "openrouter"]


def test_no_fallback_on_a_client_error(
    proxy_multi: ProxyServer, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["openai"].script(Script(status=400, error={"error": {"message": "bad messages"}}))
    r = httpx.post(proxy_multi.url + "/api/chat", json={**CHAT, "model": "gpt-4o-mini"})
    assert r.status_code == 400
    assert r.json() == {"error": "bad messages"}
    assert served_by(fakes) == ["openai"]


def test_no_fallback_after_the_first_byte(
    proxy_multi: ProxyServer, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["openai"].script(
        Script(chunks=[{"content": "Hel"}, {"content": "lo"}, {"content": "!"}], drop_after=2)
    )
    r = httpx.post(
        proxy_multi.url + "/api/chat", json={**CHAT, "model": "gpt-4o-mini", "stream": True}
    )
    assert r.status_code == 200
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert lines[0]["message"]["content"].startswith("Hel")
    assert "error" in lines[-1]
    assert not any(x.get("done") for x in lines)
    assert served_by(fakes) == ["openai"]  # nothing replayed elsewhere


def test_last_upstream_failure_is_reported(
    proxy_multi: ProxyServer, fakes: dict[str, FakeUpstream]
) -> None:
    for name in ("openai", "openrouter"):
        fakes[name].script(Script(status=500, error={"error": {"message": f"{name} broke"}}))
    r = httpx.post(proxy_multi.url + "/api/chat", json={**CHAT, "model": "gpt-4o-mini"})
    assert r.status_code == 502
    assert "openrouter broke" in r.json()["error"]


def test_upstream_down_while_listing_and_routing(
    fakes: dict[str, FakeUpstream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-oa")
    path = write_topology(tmp_path, fakes, dead_port=dead_port())
    with ProxyServer(settings_for("http://unused.invalid/v1", upstreams_file=path)) as server:
        tags = httpx.get(server.url + "/api/tags")
        assert tags.status_code == 200
        assert "qwen3:8b" in [m["name"] for m in tags.json()["models"]]
        ready = httpx.get(server.url + "/ready").json()
        assert ready["status"] == "ready"
        assert ready["upstreams"]["down"]["status"] == "unavailable"
        assert ready["upstreams"]["local"]["status"] == "ready"
        assert {u["profile"] for u in ready["upstreams"].values()} == {"openai-reference"}
        r = httpx.post(server.url + "/api/chat", json={**CHAT, "model": "qwen3:8b"})
        assert r.status_code == 200


def test_an_upstream_keeps_its_last_list_when_it_goes_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "unused")
    flaky = FakeUpstream(["flaky-model"], "").start()
    steady = FakeUpstream(["steady-model"], "").start()
    path = tmp_path / "upstreams.yaml"
    path.write_text(
        f"upstreams:\n  - name: flaky\n    base_url: {flaky.url}\n"
        f"  - name: steady\n    base_url: {steady.url}\n"
    )
    settings = settings_for("http://unused.invalid/v1", upstreams_file=path, models_cache_ttl=0.2)
    try:
        with ProxyServer(settings) as server:
            first = [m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]]
            assert first == ["flaky-model", "steady-model"]
            flaky.stop()
            for _ in range(3):  # past the cache's lifetime: refreshed, flaky failing
                time.sleep(0.25)
                names = [m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]]
                assert names == first
            assert sum(e["path"] == "/v1/models" for e in steady.journal) >= 3
    finally:
        steady.stop()


def test_single_upstream_ready_names_its_backend_profile(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url)) as server:
        assert httpx.get(server.url + "/ready").json() == {
            "status": "ready",
            "circuit_breaker": "closed",
            "profile": "openai-reference",  # a loopback URL: nothing detected
        }
    with ProxyServer(settings_for(upstream.url, backend_profile="vllm")) as server:
        assert httpx.get(server.url + "/ready").json()["profile"] == "vllm"


def test_every_upstream_key_is_redacted(
    proxy_multi: ProxyServer, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["openrouter"].script(
        Script(status=401, error={"error": {"message": "key sk-or is revoked"}})
    )
    r = httpx.post(proxy_multi.url + "/api/chat", json={**CHAT, "model": "openrouter:x"})
    assert r.status_code == 401
    assert "sk-or" not in r.text
    assert "[redacted]" in r.json()["error"]


def test_fallback_on_connection_error_and_on_timeout(
    fakes: dict[str, FakeUpstream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-oa")
    dead = dead_port()
    path = tmp_path / "upstreams.yaml"
    path.write_text(
        "upstreams:\n"
        f"  - {{name: down, base_url: 'http://127.0.0.1:{dead}/v1'}}\n"
        f"  - {{name: slow, base_url: '{fakes['openai'].url}', api_key: sk-oa}}\n"
        f"  - {{name: spare, base_url: '{fakes['openrouter'].url}', api_key: sk-or}}\n"
        "fallbacks:\n"
        "  gpt-4o-mini: [down, spare]\n"
        "  thinker: [slow, spare]\n"
    )
    fakes["openrouter"].models.append("thinker")
    fakes["openai"].models.append("thinker")
    settings = settings_for("http://unused.invalid/v1", upstreams_file=path, first_byte_timeout=0.5)
    with ProxyServer(settings) as server:
        assert httpx.get(server.url + "/api/tags").status_code == 200
        for fake in fakes.values():
            fake.journal.clear()
        # connection refused on the first of the chain
        r = httpx.post(server.url + "/api/chat", json={**CHAT, "model": "gpt-4o-mini"})
        assert r.status_code == 200
        assert served_by(fakes) == ["openrouter"]
        # no first token within FIRST_BYTE_TIMEOUT: the next one answers
        fakes["openai"].script(Script(first_delay=2.0))
        r = httpx.post(
            server.url + "/api/chat", json={**CHAT, "model": "thinker", "stream": True}, timeout=10
        )
        assert r.status_code == 200
        assert "".join(json.loads(x)["message"]["content"] for x in r.text.splitlines()) == (
            "Hello!"
        )
        assert served_by(fakes) == ["openai", "openrouter", "openrouter"]
