"""The response cache's rules without a server (response_cache.py, cache_store.py): which
requests are deterministic, what the key ignores and what it does not, the entry format, which
streams may be kept, the memory store's bounds, and the settings' validation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from ollama_openai_bridge.cache_store import MemoryStore
from ollama_openai_bridge.config import ConfigError, Settings, load_settings
from ollama_openai_bridge.exchange import Attempt, Plan, Route
from ollama_openai_bridge.metrics import Metrics
from ollama_openai_bridge.policy import Policy
from ollama_openai_bridge.response_cache import (
    STREAM,
    WHOLE,
    Entry,
    cache_key,
    complete,
    decode,
    deterministic,
    directive,
    encode,
)
from ollama_openai_bridge.topology import UpstreamSpec
from ollama_openai_bridge.upstream import Upstream

BASE = "http://127.0.0.1:9/v1"


def _upstream(name: str = "default", base_url: str = BASE) -> Upstream:
    settings = Settings(_env_file=None, openai_api_base_url=base_url)  # type: ignore[call-arg]
    return Upstream(settings, UpstreamSpec(name=name, base_url=base_url))


def _plan(upstream: Upstream, path: str = "/chat/completions", *, stream: bool = False) -> Plan:
    route = Route(upstream, "gpt-4o-mini", Policy())
    return Plan("POST", (Attempt(route, path, b"{}"),), stream=stream)


@pytest.mark.parametrize(
    ("path", "payload", "expected"),
    [
        ("/chat/completions", {"temperature": 0}, True),
        ("/chat/completions", {"temperature": 0.0}, True),
        ("/chat/completions", {"temperature": 0.7, "seed": 42}, True),
        ("/chat/completions", {"seed": 0}, True),
        ("/chat/completions", {"random_seed": 7}, True),  # Mistral's name (profiles.py)
        ("/completions", {"temperature": 0}, True),
        ("/embeddings", {"input": "x"}, True),  # an embedding is a function of its input
        ("/chat/completions", {}, False),  # the backend's default temperature samples
        ("/chat/completions", {"temperature": 0.2}, False),
        ("/chat/completions", {"temperature": False}, False),  # a bool is no temperature
        ("/chat/completions", {"temperature": "0"}, False),
        ("/chat/completions", {"seed": True}, False),
        ("/chat/completions", {"seed": 1.5}, False),
        ("/chat/completions", {"seed": None, "temperature": None}, False),
    ],
)
def test_deterministic_requests(path: str, payload: dict[str, Any], expected: bool) -> None:
    assert deterministic(path, payload) is expected


def test_the_key_ignores_key_order_but_nothing_the_backend_reads() -> None:
    up = _upstream()
    plan = _plan(up)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    reordered = {"temperature": 0, "messages": [{"content": "x", "role": "user"}], "model": "m"}
    key = cache_key(plan, body, "")
    assert len(key) == 64
    assert int(key, 16) >= 0
    assert cache_key(plan, reordered, "") == key
    others = [
        cache_key(plan, {**body, "temperature": 0, "max_tokens": 5}, ""),  # another option
        cache_key(plan, {**body, "model": "n"}, ""),  # another model
        cache_key(plan, body, "key:abc"),  # another caller
        cache_key(_plan(up, stream=True), body, ""),  # streamed apart from whole
        cache_key(_plan(up, "/completions"), body, ""),  # another path
        cache_key(_plan(_upstream("other")), body, ""),  # another upstream name
        cache_key(_plan(_upstream(base_url="http://127.0.0.1:8/v1")), body, ""),  # re-pointed
    ]
    assert len({key, *others}) == len(others) + 1


def test_entries_round_trip_and_foreign_blobs_read_as_absent() -> None:
    entry = Entry(STREAM, 200, "text/event-stream", b"data: {}\n\ndata: [DONE]\n\n")
    assert decode(encode(entry)) == entry
    whole = Entry(WHOLE, 201, "application/json", b'{"a":"\n"}')  # newlines in the body
    assert decode(encode(whole)) == whole
    for blob in (b"", b"no newline", b"2 w 200 a\n{}", b"1 x 200 a\n{}", b"1 w two a\n{}"):
        assert decode(blob) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("no-cache", "no-cache"),
        ("No-Cache", "no-cache"),
        ("max-age=0, no-store", "no-store"),
        ("no-cache,no-store", "no-store"),  # the stronger wins
        ("no-cache=set-cookie", "no-cache"),
        ("max-age=60", ""),
        ("", ""),
    ],
)
def test_cache_control_directives(value: str, expected: str) -> None:
    assert directive(value) == expected


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\n"


def test_only_streams_that_ended_well_may_be_kept() -> None:
    ok = _chunk({"content": "hi"}) + _chunk({}, "stop")
    assert complete(ok) is None
    assert complete(ok + b"data: [DONE]\n\n") is None
    assert complete(_chunk({"content": "hi"}) + b"data: [DONE]\n\n") is None
    assert complete(_chunk({"content": "hi"})) == "no finish_reason and no [DONE]"
    assert complete(ok + b'event: error\ndata: {"message": "x"}\n\n') == "an error event"
    assert complete(b'data: {"error": {"message": "overloaded"}}\n\n') == "an error event"
    assert complete(b"data: {not json\n\ndata: [DONE]\n\n") == "an event that is not JSON"
    assert complete(b"data: \xff\xfe\n\n") == "not an event stream"
    assert complete(b": keep-alive\n\n" + ok) is None  # comments are no events


def test_the_memory_store_holds_its_bounds_and_expires() -> None:
    now = [1000.0]
    metrics = Metrics()
    store = MemoryStore(ttl=10, max_entries=2, max_bytes=100, metrics=metrics, clock=lambda: now[0])

    async def go() -> None:
        store.put("a", b"x" * 10)
        store.put("b", b"y" * 10)
        assert await store.get("a") == b"x" * 10  # a is now the most recently used
        store.put("c", b"z" * 10)  # over two entries: b, the least recently used, goes
        assert await store.get("b") is None
        assert await store.get("a") is not None
        assert len(store) == 2
        assert store.bytes == 20
        store.put("big", b"w" * 95)  # over 100 bytes: both others go
        assert len(store) == 1
        assert store.bytes == 95
        store.put("big", b"v" * 5)  # replaced: its old size is given back
        assert store.bytes == 5
        now[0] += 10.5
        assert await store.get("big") is None  # expired
        assert len(store) == 0
        assert store.bytes == 0

    asyncio.run(go())
    text = metrics.exposition().decode()
    assert 'ollama_proxy_response_cache_evictions_total{reason="size"} 3.0' in text
    assert 'ollama_proxy_response_cache_evictions_total{reason="expired"} 1.0' in text
    assert "ollama_proxy_response_cache_entries 0.0" in text


def test_settings_are_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RATE_LIMIT_STORAGE_URI", raising=False)
    with pytest.raises(ConfigError, match="RESPONSE_CACHE=redis needs"):
        load_settings(_env_file=None, response_cache="redis")
    with pytest.raises(ConfigError, match="RESPONSE_CACHE_REDIS_URI"):
        load_settings(_env_file=None, response_cache_redis_uri="memory://")
    with pytest.raises(ConfigError, match="MAX_ENTRY_BYTES is larger"):
        load_settings(
            _env_file=None, response_cache_max_bytes=4096, response_cache_max_entry_bytes=8192
        )
    limits = "redis://127.0.0.1:6379/0"
    shared = load_settings(_env_file=None, response_cache="redis", rate_limit_storage_uri=limits)
    assert shared.cache_uri() == limits  # the rate limits' Redis
    own = load_settings(
        _env_file=None,
        response_cache="redis",
        rate_limit_storage_uri=limits,
        response_cache_redis_uri="redis://:pw-test-1@127.0.0.1:6379/3",
    )
    assert own.cache_uri().endswith("/3")
    assert "pw-test-1" in own.secrets()  # a password in the URL is never logged
    assert load_settings(_env_file=None).cache_uri() == ""  # off


MULTIPROCESS = """
from ollama_openai_bridge.metrics import Metrics
metrics = Metrics()
metrics.cache_result("hit")
metrics.cache_result("hit")
metrics.cache_stored("stream")
metrics.cache_evicted("size", 3)
metrics.cache_failed("get")
metrics.cache_size(4, 1000)
print(metrics.exposition().decode())
"""


def test_the_cache_metrics_in_multiprocess_mode(tmp_path: Path) -> None:
    """WORKERS > 1: prometheus_client's own metrics, aggregated across processes (the mode is
    chosen when prometheus_client is imported: a process of its own)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert 'ollama_proxy_response_cache_requests_total{result="hit"} 2.0' in out
    assert 'ollama_proxy_response_cache_stores_total{kind="stream"} 1.0' in out
    assert 'ollama_proxy_response_cache_evictions_total{reason="size"} 3.0' in out
    assert 'ollama_proxy_response_cache_storage_errors_total{operation="get"} 1.0' in out
    assert "ollama_proxy_response_cache_entries 4.0" in out
    assert "ollama_proxy_response_cache_bytes 1000.0" in out
