from __future__ import annotations

import re

from ollama_openai_bridge.metrics import Metrics


def sample(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {line_start!r}")


def test_single_process_backend_exposes_prometheus_text() -> None:
    m = Metrics()
    m.request_done("/api/chat", "gpt", 200, 0.025)  # exactly on a bound: counted in it (le)
    m.request_done("/api/chat", "gpt", 200, 400.0)  # beyond the last bound: only +Inf
    m.count_tokens("gpt", 5, 0)
    m.streams(1)
    m.streams(1)
    m.streams(-1)
    m.breaker_state("default", 1)
    m.retried("default", "/chat/completions")
    m.fell_back("default")
    text = m.exposition().decode()
    assert (
        sample(text, 'ollama_proxy_requests_total{endpoint="/api/chat",model="gpt",status="200"}')
        == 2
    )
    assert (
        sample(text, 'ollama_proxy_request_duration_seconds_bucket{endpoint="/api/chat",le="0.01"}')
        == 0
    )
    assert (
        sample(
            text, 'ollama_proxy_request_duration_seconds_bucket{endpoint="/api/chat",le="0.025"}'
        )
        == 1
    )
    assert (
        sample(
            text, 'ollama_proxy_request_duration_seconds_bucket{endpoint="/api/chat",le="300.0"}'
        )
        == 1
    )
    assert (
        sample(text, 'ollama_proxy_request_duration_seconds_bucket{endpoint="/api/chat",le="+Inf"}')
        == 2
    )
    assert (
        sample(text, 'ollama_proxy_request_duration_seconds_sum{endpoint="/api/chat"}') == 400.025
    )
    assert sample(text, 'ollama_proxy_tokens_total{kind="prompt",model="gpt"}') == 5
    assert 'kind="completion"' not in text  # zero counts are not recorded
    assert sample(text, "ollama_proxy_streams_in_flight") == 1
    assert sample(text, 'ollama_proxy_circuit_breaker_state{upstream="default"}') == 1
    assert sample(text, 'ollama_proxy_upstream_fallbacks_total{upstream="default"}') == 1
    assert (
        sample(
            text, 'ollama_proxy_upstream_retries_total{path="/chat/completions",upstream="default"}'
        )
        == 1
    )
    assert re.search(r"^process_resident_memory_bytes \S+$", text, re.MULTILINE)
