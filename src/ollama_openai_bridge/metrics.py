"""Prometheus metrics (``/v1/metrics`` and ``METRICS_PATH``).

One :class:`Metrics` per app. Two backends behind one small interface:

- One process (the default): samples live in plain dicts and lists, and a collector turns them
  into metric families at scrape time. prometheus_client's own metric objects take a lock on every
  increment and walk every bucket on every observation -- measured at ~20 µs of CPU per proxied
  request here, a tenth of the whole; the event loop is single-threaded, so no lock is needed.
- Several uvicorn workers: the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before anything imports
  prometheus_client, and prometheus_client's metric objects write every sample there, so a scrape
  of any worker aggregates all of them (its multiprocess mode).

Model labels are limited to models the backend or the mapping file knows (backends.Resolved.known):
a client choosing model names must not grow the label set without bound.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterator
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
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
PREFIX = "ollama_proxy"

# name, help, label names -- shared by both backends so they expose the same series
Spec = tuple[Any, ...]
REQUESTS = (
    f"{PREFIX}_requests",
    "Requests answered, by endpoint, model and status.",
    ("endpoint", "model", "status"),
)
DURATION = (
    f"{PREFIX}_request_duration_seconds",
    "Time to the last byte of the answer.",
    ("endpoint",),
)
TTFT = (
    f"{PREFIX}_time_to_first_token_seconds",
    "Time to the first streamed line.",
    ("endpoint", "model"),
)
UPSTREAM = (
    f"{PREFIX}_upstream_duration_seconds",
    "Time until the backend's response headers arrived.",
    ("upstream", "path", "status"),
)
TOKENS = (f"{PREFIX}_tokens", "Tokens reported by the backend.", ("model", "kind"))
# Per inbound key, with TOKEN_BUDGET only: the label is the key's name or key id (never the key),
# so the series are as many as the configured keys.
KEY_TOKENS = (
    f"{PREFIX}_key_tokens",
    "Tokens counted against each inbound key's budget, by key name or id.",
    ("key", "kind"),
)
BUDGET_REFUSALS = (
    f"{PREFIX}_budget_refusals",
    "Requests refused because a key's token budget was used up, by key and window.",
    ("key", "window"),
)
RETRIES = (f"{PREFIX}_upstream_retries", "Backend calls retried.", ("upstream", "path"))
FALLBACKS = (
    f"{PREFIX}_upstream_fallbacks",
    "Requests passed on to the next upstream of their chain, by the upstream that failed.",
    ("upstream",),
)
ADAPTATIONS = (
    f"{PREFIX}_backend_adaptations",
    "Requests sent again without a parameter the backend refused (and remembered for the model).",
    ("upstream", "parameter"),
)
# The response cache (RESPONSE_CACHE): what it did per request, what it kept and dropped.
CACHE_REQUESTS = (
    f"{PREFIX}_response_cache_requests",
    "Requests the response cache saw: hit, miss, bypass (Cache-Control) or uncacheable.",
    ("result",),
)
CACHE_STORES = (
    f"{PREFIX}_response_cache_stores",
    "Answers the response cache kept, whole or streamed.",
    ("kind",),
)
CACHE_EVICTIONS = (
    f"{PREFIX}_response_cache_evictions",
    "Answers dropped from the response cache's memory: expired, or for room (size).",
    ("reason",),
)
CACHE_ERRORS = (
    f"{PREFIX}_response_cache_storage_errors",
    "Redis operations of the response cache that failed (the request went on without it).",
    ("operation",),
)
CACHE_ENTRIES = (f"{PREFIX}_response_cache_entries", "Answers in the response cache's memory.")
CACHE_BYTES = (f"{PREFIX}_response_cache_bytes", "Bytes of answers in the response cache's memory.")
IN_FLIGHT = (f"{PREFIX}_streams_in_flight", "Streams open to clients.")
UPSTREAM_IN_FLIGHT = (
    f"{PREFIX}_upstream_requests_in_flight",
    "Backend calls in flight: from the first send until the answer is released.",
)
BREAKER = (
    f"{PREFIX}_circuit_breaker_state",
    "Backend circuit breaker: 0 closed, 1 half-open, 2 open.",
    ("upstream",),
)
# Replicas of a balanced upstream (base_urls, balance.py): labels are the configured upstream and
# replica names, so the series are as many as the file's replicas.
REPLICA_REQUESTS = (
    f"{PREFIX}_replica_requests",
    "Backend calls to each replica of a balanced upstream, by outcome (success, failure).",
    ("upstream", "replica", "outcome"),
)
REPLICA_EJECTIONS = (
    f"{PREFIX}_replica_ejections",
    "Times each replica was ejected by outlier detection.",
    ("upstream", "replica"),
)
REPLICA_IN_FLIGHT = (
    f"{PREFIX}_replica_requests_in_flight",
    "Backend calls each replica holds: from its choice until the answer is released.",
    ("upstream", "replica"),
)
REPLICA_EJECTED = (
    f"{PREFIX}_replica_ejected",
    "1 while outlier detection keeps the replica out of the balancing, else 0.",
    ("upstream", "replica"),
)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _Histogram:
    """Bucket counts (not cumulative) and sum for one label set."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, value)] += 1
        self.total += value


class _Samples(Collector):
    """The single-process backend's storage, collected at scrape time."""

    def __init__(self) -> None:
        self.counters: dict[Spec, dict[tuple[str, ...], float]] = {
            REQUESTS: {},
            TOKENS: {},
            KEY_TOKENS: {},
            BUDGET_REFUSALS: {},
            RETRIES: {},
            FALLBACKS: {},
            ADAPTATIONS: {},
            CACHE_REQUESTS: {},
            CACHE_STORES: {},
            CACHE_EVICTIONS: {},
            CACHE_ERRORS: {},
            REPLICA_REQUESTS: {},
            REPLICA_EJECTIONS: {},
        }
        self.histograms: dict[Spec, dict[tuple[str, ...], _Histogram]] = {
            DURATION: {},
            TTFT: {},
            UPSTREAM: {},
        }
        self.in_flight = 0
        self.upstream_in_flight = 0
        self.breakers: dict[str, int] = {}
        self.cache_size: tuple[int, int] | None = None  # entries, bytes; None: no memory cache
        self.gauges: dict[Spec, dict[tuple[str, ...], float]] = {
            REPLICA_IN_FLIGHT: {},
            REPLICA_EJECTED: {},
        }

    def collect(self) -> Iterator[Metric]:
        for (name, doc, labels), series in self.counters.items():
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, value in series.items():
                family.add_metric(key, value)
            yield family
        bounds = [*(str(float(b)) for b in LATENCY_BUCKETS), "+Inf"]
        for (name, doc, labels), hists in self.histograms.items():
            hfamily = HistogramMetricFamily(name, doc, labels=labels)
            for key, h in hists.items():
                cumulative, running = [], 0
                for bound, count in zip(bounds, h.counts, strict=True):
                    running += count
                    cumulative.append((bound, running))
                hfamily.add_metric(key, cumulative, h.total)
            yield hfamily
        yield GaugeMetricFamily(*IN_FLIGHT, value=self.in_flight)
        yield GaugeMetricFamily(*UPSTREAM_IN_FLIGHT, value=self.upstream_in_flight)
        name, doc, labels = BREAKER
        breakers = GaugeMetricFamily(name, doc, labels=labels)
        for upstream, state in self.breakers.items():
            breakers.add_metric((upstream,), state)
        yield breakers
        if self.cache_size is not None:
            yield GaugeMetricFamily(*CACHE_ENTRIES, value=self.cache_size[0])
            yield GaugeMetricFamily(*CACHE_BYTES, value=self.cache_size[1])
        for (name, doc, labels), values in self.gauges.items():
            gauges = GaugeMetricFamily(name, doc, labels=labels)
            for key, value in values.items():
                gauges.add_metric(key, value)
            yield gauges


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._multi = multiprocess()
        if self._multi:
            r = self.registry
            self._requests = Counter(*REQUESTS, registry=r)
            self._duration = Histogram(*DURATION, buckets=LATENCY_BUCKETS, registry=r)
            self._ttft = Histogram(*TTFT, buckets=LATENCY_BUCKETS, registry=r)
            self._upstream = Histogram(*UPSTREAM, buckets=LATENCY_BUCKETS, registry=r)
            self._tokens = Counter(*TOKENS, registry=r)
            self._key_tokens = Counter(*KEY_TOKENS, registry=r)
            self._budget_refusals = Counter(*BUDGET_REFUSALS, registry=r)
            self._retries = Counter(*RETRIES, registry=r)
            self._fallbacks = Counter(*FALLBACKS, registry=r)
            self._adaptations = Counter(*ADAPTATIONS, registry=r)
            # across workers: open streams add up; the breaker shows the worst state
            self._in_flight = Gauge(*IN_FLIGHT, registry=r, multiprocess_mode="livesum")
            self._upstream_in_flight = Gauge(
                *UPSTREAM_IN_FLIGHT, registry=r, multiprocess_mode="livesum"
            )
            self._breaker = Gauge(*BREAKER, registry=r, multiprocess_mode="livemax")
            # each worker's memory cache is its own: the totals add up
            self._cache_entries = Gauge(*CACHE_ENTRIES, registry=r, multiprocess_mode="livesum")
            self._cache_bytes = Gauge(*CACHE_BYTES, registry=r, multiprocess_mode="livesum")
            # each worker balances on its own: calls held add up, an ejection shows if any
            self._gauges: dict[Spec, Any] = {
                REPLICA_IN_FLIGHT: Gauge(
                    *REPLICA_IN_FLIGHT, registry=r, multiprocess_mode="livesum"
                ),
                REPLICA_EJECTED: Gauge(*REPLICA_EJECTED, registry=r, multiprocess_mode="livemax"),
            }
            self._by_spec: dict[Spec, Any] = {
                REQUESTS: self._requests,
                TOKENS: self._tokens,
                KEY_TOKENS: self._key_tokens,
                BUDGET_REFUSALS: self._budget_refusals,
                RETRIES: self._retries,
                FALLBACKS: self._fallbacks,
                ADAPTATIONS: self._adaptations,
                **{
                    spec: Counter(spec[0], spec[1], spec[2], registry=r)
                    for spec in (
                        CACHE_REQUESTS,
                        CACHE_STORES,
                        CACHE_EVICTIONS,
                        CACHE_ERRORS,
                        REPLICA_REQUESTS,
                        REPLICA_EJECTIONS,
                    )
                },
                DURATION: self._duration,
                TTFT: self._ttft,
                UPSTREAM: self._upstream,
            }
        else:
            self._samples = _Samples()
            self.registry.register(self._samples)
            ProcessCollector(registry=self.registry)  # CPU seconds, resident memory, open fds

    def close(self) -> None:
        """A worker leaving (shut down or recycled): its live gauges must stop counting in the
        other workers' scrapes (prometheus_client's multiprocess mode keeps them otherwise)."""
        if self._multi:
            _mp.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    # --- recording (the hot path) ---------------------------------------------------------------

    def _count(self, spec: Spec, key: tuple[str, ...], amount: float = 1) -> None:
        if self._multi:
            self._by_spec[spec].labels(*key).inc(amount)
            return
        series = self._samples.counters[spec]
        series[key] = series.get(key, 0) + amount

    def _observe(self, spec: Spec, key: tuple[str, ...], value: float) -> None:
        if self._multi:
            self._by_spec[spec].labels(*key).observe(value)
            return
        hists = self._samples.histograms[spec]
        h = hists.get(key)
        if h is None:
            h = hists[key] = _Histogram()
        h.observe(value)

    def request_done(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        self._count(REQUESTS, (endpoint, model, str(status)))
        self._observe(DURATION, (endpoint,), seconds)

    def upstream_done(self, upstream: str, path: str, status: int, seconds: float) -> None:
        self._observe(UPSTREAM, (upstream, path, str(status)), seconds)

    def first_token(self, endpoint: str, model: str, seconds: float) -> None:
        self._observe(TTFT, (endpoint, model), seconds)

    def count_tokens(self, model: str, prompt: int | None, completion: int | None) -> None:
        if prompt:
            self._count(TOKENS, (model, "prompt"), prompt)
        if completion:
            self._count(TOKENS, (model, "completion"), completion)

    def key_tokens(self, key: str, prompt: int, completion: int) -> None:
        """Tokens counted against the budget of ``key`` (a key's name or id, never the key)."""
        if prompt:
            self._count(KEY_TOKENS, (key, "prompt"), prompt)
        if completion:
            self._count(KEY_TOKENS, (key, "completion"), completion)

    def budget_refused(self, key: str, window: str) -> None:
        """A request of ``key`` refused: its budget per ``window`` (minute ... month) is spent."""
        self._count(BUDGET_REFUSALS, (key, window))

    def retried(self, upstream: str, path: str) -> None:
        self._count(RETRIES, (upstream, path))

    def fell_back(self, upstream: str) -> None:
        self._count(FALLBACKS, (upstream,))

    def adapted(self, upstream: str, parameter: str) -> None:
        self._count(ADAPTATIONS, (upstream, parameter))

    def cache_result(self, result: str) -> None:
        """The response cache's verdict on one request: hit, miss, bypass or uncacheable."""
        self._count(CACHE_REQUESTS, (result,))

    def cache_stored(self, kind: str) -> None:
        """An answer kept: ``whole`` or ``stream``."""
        self._count(CACHE_STORES, (kind,))

    def cache_evicted(self, reason: str, count: int = 1) -> None:
        """``count`` answers dropped from memory: ``expired`` or ``size`` (for room)."""
        self._count(CACHE_EVICTIONS, (reason,), count)

    def cache_failed(self, operation: str) -> None:
        """A Redis operation of the response cache failed (get or set)."""
        self._count(CACHE_ERRORS, (operation,))

    def cache_size(self, entries: int, size: int) -> None:
        """What the memory cache holds: ``entries`` answers of ``size`` bytes in all."""
        if self._multi:
            self._cache_entries.set(entries)
            self._cache_bytes.set(size)
        else:
            self._samples.cache_size = (entries, size)

    def streams(self, delta: int) -> None:
        if self._multi:
            self._in_flight.inc(delta)
        else:
            self._samples.in_flight += delta

    def upstream_in_flight(self, delta: int) -> None:
        if self._multi:
            self._upstream_in_flight.inc(delta)
        else:
            self._samples.upstream_in_flight += delta

    def breaker_state(self, upstream: str, state: int) -> None:
        if self._multi:
            self._breaker.labels(upstream).set(state)
        else:
            self._samples.breakers[upstream] = state

    def replica_in_flight(self, upstream: str, replica: str, delta: int) -> None:
        """A call took (1) or gave back (-1) ``replica`` of ``upstream``; 0 declares it."""
        if self._multi:
            self._gauges[REPLICA_IN_FLIGHT].labels(upstream, replica).inc(delta)
            return
        series = self._samples.gauges[REPLICA_IN_FLIGHT]
        key = (upstream, replica)
        series[key] = series.get(key, 0) + delta

    def replica_ejected(self, upstream: str, replica: str, ejected: bool) -> None:
        """Outlier detection ejected ``replica`` of ``upstream`` (counted), or returned it."""
        if ejected:
            self._count(REPLICA_EJECTIONS, (upstream, replica))
        if self._multi:
            self._gauges[REPLICA_EJECTED].labels(upstream, replica).set(int(ejected))
        else:
            self._samples.gauges[REPLICA_EJECTED][(upstream, replica)] = int(ejected)

    def replica_outcome(self, upstream: str, replica: str, outcome: str) -> None:
        """A call to ``replica`` of ``upstream`` ended: ``success`` or ``failure``."""
        self._count(REPLICA_REQUESTS, (upstream, replica, outcome))

    # --- exposition -----------------------------------------------------------------------------

    def exposition(self) -> bytes:
        if self._multi:
            registry = CollectorRegistry()
            _mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            ProcessCollector(registry=registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
