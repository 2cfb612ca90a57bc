"""The Grafana dashboard queries series the proxy really exposes, with labels it really sets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ollama_openai_bridge import metrics
from tests.servers import ProxyServer

# family name -> the labels metrics.py declares for it (every (name, help, labels) spec)
DECLARED: dict[str, set[str]] = {
    spec[0]: set(spec[2])
    for spec in vars(metrics).values()
    if isinstance(spec, tuple)
    and len(spec) == 3
    and isinstance(spec[0], str)
    and spec[0].startswith(metrics.PREFIX)
    and isinstance(spec[2], tuple)
}

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/ollama-openai-bridge.json"
)


def test_every_query_uses_exposed_series_and_labels(proxy: ProxyServer) -> None:
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(proxy.url + "/api/chat", json=chat).status_code == 200
    text = httpx.get(proxy.url + "/v1/metrics").text
    # family name -> labels seen on its samples (a counter never incremented has none yet)
    families: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        seen = families.setdefault(family.name, set())
        for sample in family.samples:
            seen.update(sample.labels)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        grouped = {
            label.strip()
            for group in re.findall(r"by \(([^)]*)\)", expr)
            for label in group.split(",")
        } - {"le"}
        for name in re.findall(r"\b((?:ollama_proxy|process)_[a-z_]+)", expr):
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert base in families, f"{name} is not exposed ({expr})"
            if families[base]:
                assert grouped <= families[base], (grouped, expr)
            if base in DECLARED:  # a series not sampled yet (TOKEN_BUDGET off): its declaration
                assert grouped <= DECLARED[base], (grouped, expr)


def test_dashboard_is_provisioned_with_the_datasource_it_uses() -> None:
    root = DASHBOARD.parents[1]
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = (root / "provisioning/datasources/prometheus.yml").read_text()
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {"prometheus"}
    assert "uid: prometheus" in datasource
    provider = (root / "provisioning/dashboards/dashboards.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provider
