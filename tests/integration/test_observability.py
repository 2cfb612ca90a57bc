"""Metrics, version endpoint and access-log details."""

from __future__ import annotations

import re

import httpx
import ollama
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
        if got == wanted:
            return float(m.group(3))
    return 0.0


def test_metrics_count_requests_tokens_and_streams(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url)) as p, ollama.Client(host=p.url) as client:
        client.list()  # the catalogue makes model names known labels
        upstream.script(Script(usage={"prompt_tokens": 11, "completion_tokens": 5}))
        list(
            client.chat(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
        client.chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(ollama.ResponseError):
            client.chat(model="made-up-model-123", messages=[{"role": "user", "content": "x"}])
        text = httpx.get(p.url + "/v1/metrics").text
        assert (
            metric(
                text,
                "ollama_proxy_requests_total",
                endpoint="/api/chat",
                model="gpt-4o-mini",
                status="200",
            )
            == 2
        )
        # client-chosen unknown names never become labels
        assert (
            metric(
                text,
                "ollama_proxy_requests_total",
                endpoint="/api/chat",
                model="other",
                status="404",
            )
            == 1
        )
        assert "made-up-model-123" not in text
        assert (
            metric(text, "ollama_proxy_tokens_total", model="gpt-4o-mini", kind="prompt") == 11 + 7
        )
        assert (
            metric(text, "ollama_proxy_tokens_total", model="gpt-4o-mini", kind="completion")
            == 5 + 2
        )
        assert (
            metric(
                text,
                "ollama_proxy_time_to_first_token_seconds_count",
                endpoint="/chat/completions",
                model="gpt-4o-mini",
            )
            == 1
        )
        assert metric(text, "ollama_proxy_streams_in_flight") == 0
        assert (
            metric(
                text,
                "ollama_proxy_upstream_duration_seconds_count",
                upstream="default",
                path="/chat/completions",
                status="200",
            )
            == 2
        )
        assert (
            metric(text, "ollama_proxy_request_duration_seconds_count", endpoint="/api/tags") == 1
        )
        assert metric(text, "process_resident_memory_bytes") > 0
        assert text.count("ollama_proxy_circuit_breaker_state{") == 1
        assert metric(text, "ollama_proxy_circuit_breaker_state", upstream="default") == 0
        # the alias path serves the same exposition
        assert "ollama_proxy_requests_total" in httpx.get(p.url + "/metrics").text
        assert "sk-test-upstream" not in text


def test_in_flight_streams_gauge(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url)) as p:
        upstream.script(Script(chunks=[{"content": str(i)} for i in range(40)], delay=0.05))
        with (
            httpx.Client(base_url=p.url) as c,
            c.stream(
                "POST",
                "/api/chat",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
            ) as r,
        ):
            lines = r.iter_lines()
            next(lines)
            assert (
                metric(httpx.get(p.url + "/v1/metrics").text, "ollama_proxy_streams_in_flight") == 1
            )


def test_metrics_and_version_can_be_switched_off(upstream: FakeUpstream) -> None:
    with ProxyServer(
        settings_for(upstream.url, enable_metrics=False, version_endpoint_enabled=False)
    ) as p:
        assert httpx.get(p.url + "/v1/metrics").status_code == 404
        assert httpx.get(p.url + "/v1/version").status_code == 404


def test_version_endpoint(proxy: ProxyServer) -> None:
    info = httpx.get(proxy.url + "/v1/version").json()
    assert info["name"] == "ollama-openai-bridge"
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["version"])
    assert re.fullmatch(r"3\.\d+\.\d+", info["python"])
    assert info["dependencies"]["aiohttp"]
    assert "git_commit" in info
    assert "build_date" in info
