"""Prometheus metrics (``/v1/metrics`` and ``METRICS_PATH``).

One :class:`Metrics` per app, on its own registry. With several uvicorn workers the CLI sets
``PROMETHEUS_MULTIPROC_DIR`` before anything imports prometheus_client, every worker writes its
samples there, and a scrape of any worker aggregates all of them (prometheus_client's multiprocess
mode). Model labels are limited to models the backend or the mapping file knows -- a client
choosing model names must not be able to grow the label set without bound.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _mp
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
PREFIX = "ollama_proxy"


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests answered, by endpoint, model and status.",
            ("endpoint", "model", "status"),
            registry=r,
        )
        self.duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time to the last byte of the answer.",
            ("endpoint",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time to the first streamed line.",
            ("endpoint", "model"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream = Histogram(
            f"{PREFIX}_upstream_duration_seconds",
            "Time until the backend's response headers arrived.",
            ("path", "status"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            f"{PREFIX}_tokens", "Tokens reported by the backend.", ("model", "kind"), registry=r
        )
        self.retries = Counter(
            f"{PREFIX}_upstream_retries", "Backend calls retried.", ("path",), registry=r
        )
        # Across worker processes: open streams add up; the breaker shows the worst state.
        self.in_flight = Gauge(
            f"{PREFIX}_streams_in_flight",
            "Streams open to clients.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.breaker = Gauge(
            f"{PREFIX}_circuit_breaker_state",
            "Backend circuit breaker: 0 closed, 1 half-open, 2 open.",
            registry=r,
            multiprocess_mode="livemax",
        )
        # bounded like the labels: endpoints are known routes, models known names
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._upstream_children: dict[tuple[str, int], Any] = {}
        self._token_children: dict[str, tuple[Any, Any]] = {}
        if not multiprocess():
            ProcessCollector(registry=r)  # CPU seconds, resident memory, open fds

    def request_done(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        """Count one answered request. Label children are cached: ``labels()`` validates and
        locks on every call, and this runs once per request."""
        key = (endpoint, model, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(endpoint, model, str(status)),
                self.duration.labels(endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)

    def upstream_done(self, path: str, status: int, seconds: float) -> None:
        child = self._upstream_children.get((path, status))
        if child is None:
            child = self._upstream_children[(path, status)] = self.upstream.labels(
                path, str(status)
            )
        child.observe(seconds)

    def count_tokens(self, model: str, prompt: int | None, completion: int | None) -> None:
        children = self._token_children.get(model)
        if children is None:
            children = self._token_children[model] = (
                self.tokens.labels(model, "prompt"),
                self.tokens.labels(model, "completion"),
            )
        if prompt:
            children[0].inc(prompt)
        if completion:
            children[1].inc(completion)

    def exposition(self) -> bytes:
        if multiprocess():
            registry = CollectorRegistry()
            _mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            ProcessCollector(registry=registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
