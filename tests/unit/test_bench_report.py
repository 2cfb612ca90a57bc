"""bench/report.py: issue #18's targets judged against the floor of the same run, and the
regenerated docs/PERFORMANCE.md keeping its hand-written sections. No benchmark runs here: the
results are built by hand in the shape bench/run.py writes to bench/results/bench.json."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
assert _spec is not None
assert _spec.loader is not None
report: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def c1_figures(added: float, cpu: float) -> dict[str, float]:
    return {
        "p50_ms": 0.1 + added,
        "p99_ms": 0.3 + added,
        "ttfb_p50_ms": 0.05 + added,
        "ttfb_p99_ms": 0.2 + added,
        "n": 2000,
        "added_p50_ms": added,
        "added_p99_ms": 2 * added,
        "added_ttfb_p50_ms": added,
        "cpu_us_per_request": cpu,
        "cpu_us_per_chunk": cpu / 100,
    }


def streams(n: int, errors: int = 0, kb: float = 18.0) -> dict[str, Any]:
    return {
        "streams": n,
        "completed": n - errors,
        "errors": errors,
        "max_open_at_once": n,
        "proxy_max_streams_in_flight": n - errors,
        "proxy_max_connections_held": n - errors,
        "error_kinds": {},
        "idle_rss_mb": 100.0,
        "peak_rss_mb": 300.0,
        "rss_after_mb": 200.0,
        "rss_per_stream_kb": kb,
    }


def results(**over: Any) -> dict[str, Any]:
    """A run where the proxy is 1.4x the http1 floor everywhere (chat CPU 140 / 100 µs)."""
    direct = {"p50_ms": 0.1, "p99_ms": 0.3, "ttfb_p50_ms": 0.05, "ttfb_p99_ms": 0.2, "n": 2000}
    case = {
        "direct": direct,
        "floor-http1": c1_figures(0.1, 100.0),
        "floor-aiohttp": c1_figures(0.3, 250.0),
        "proxy": c1_figures(0.14, 140.0),
    }
    wrk = {"rps": 5000.0, "p50_ms": 10.0, "p99_ms": 20.0, "requests": 75000, "errors": 0}
    r: dict[str, Any] = {
        "machine": {"cpus": 2, "python": "3.11.7", "kernel": "6.1", "date": "2026-12-01"},
        "idle_rss_mb": {"floor-http1": 34.0, "floor-aiohttp": 44.0, "proxy": 43.0},
        "c1": {"rounds": 40, "block": 50, "chat": case, "stream": case, "v1": case},
        "embed_64": {"direct_p50_ms": 2.0, "proxy_p50_ms": 10.0, "added_p50_ms": 8.0},
        "c64": {
            "rounds": 5,
            "seconds": 3,
            "direct": {**wrk, "rps": 70000.0},
            "floor-http1": {**wrk, "cpu_us_per_request": 70.0},
            "floor-aiohttp": {**wrk, "cpu_us_per_request": 160.0},
            "proxy": {**wrk, "cpu_us_per_request": 98.0},
            "curve": [],
        },
        "streams": streams(10000),
        "streams_held": streams(10000),
    }
    r.update(over)
    return r


def by_figure(rows: list[dict[str, Any]], start: str) -> dict[str, Any]:
    (row,) = [row for row in rows if row["figure"].startswith(start)]
    return row


def test_a_ratio_within_its_target_is_met() -> None:
    rows = report.targets(results())
    c64 = by_figure(rows, "c=64 non-streamed")
    assert c64["ratio"] == pytest.approx(1.4)
    assert c64["met"] is True
    assert c64["verdict"] == "yes"
    # a figure shown without a target of its own is not judged
    assert by_figure(rows, "c=1 non-streamed `/api/chat`, CPU")["met"] is None


def test_a_missed_target_says_by_how_much() -> None:
    rows = report.targets(results())
    # /v1's target is 1.3x: 140 µs against a floor of 100 µs is 10 µs above the 130 allowed
    v1 = by_figure(rows, "c=1 `/v1/chat/completions` passthrough, CPU")
    assert v1["met"] is False
    assert v1["verdict"] == "no: 10.0 µs over (≤ 130 µs)"
    added = by_figure(rows, "c=1 `/v1/chat/completions` passthrough, added")
    assert added["verdict"] == "no: 0.010 ms over (≤ 0.130 ms)"


def test_no_ratio_when_the_floor_added_nothing() -> None:
    r = results()
    r["c1"]["stream"] = {**r["c1"]["stream"], "floor-http1": c1_figures(-0.01, 100.0)}
    row = by_figure(report.targets(r), "100-chunk stream, added time")
    assert row["ratio"] is None
    assert row["met"] is None
    assert row["verdict"].startswith("no ratio")


def test_without_wrk_the_c64_row_is_not_measured() -> None:
    r = results()
    del r["c64"]
    row = by_figure(report.targets(r), "c=64")
    assert row["met"] is None
    assert row["verdict"] == "not measured (wrk not installed)"


def test_idle_rss_is_judged_by_megabytes_above_the_floor() -> None:
    assert by_figure(report.targets(results()), "idle RSS")["met"] is True  # +9 MB
    heavy = results(idle_rss_mb={"floor-http1": 34.0, "proxy": 54.5})
    row = by_figure(report.targets(heavy), "idle RSS")
    assert row["above"] == pytest.approx(20.5)
    assert row["met"] is False
    assert row["verdict"] == "no: 10.5 MB over"


def test_the_stream_targets() -> None:
    rows = report.targets(results())
    assert by_figure(rows, "10,000 concurrent")["met"] is True
    assert by_figure(rows, "memory per open stream")["met"] is True  # 18 KB
    failing = report.targets(results(streams_held=streams(10000, errors=3, kb=31.7)))
    assert by_figure(failing, "10,000 concurrent")["verdict"] == "no: 3 errors, 9,997 at once"
    assert by_figure(failing, "memory per open stream")["verdict"] == "no: 11.7 KB over"
    # each target judged on its own figure
    errors_only = report.targets(results(streams_held=streams(10000, errors=3)))
    assert by_figure(errors_only, "10,000 concurrent")["met"] is False
    assert by_figure(errors_only, "memory per open stream")["met"] is True
    # --quick opens 1,000: the 10,000 target is not judged from it
    quick = by_figure(report.targets(results(streams_held=streams(1000))), "1,000 concurrent")
    assert quick["met"] is None
    assert quick["verdict"].startswith("not measured")
    heavy_quick = report.targets(results(streams_held=streams(1000, kb=25.0)))
    assert by_figure(heavy_quick, "memory per open stream")["met"] is False


def test_the_report_shows_every_target_row_and_keeps_the_hand_written_part() -> None:
    r = results()
    r["targets"] = report.targets(r)
    text = report.render(r, "python bench/run.py")
    assert "| figure | floor | proxy | ratio | target | met? | floor on aiohttp |" in text
    judged = [row for row in r["targets"] if row["met"] is not None]
    met = [row for row in judged if row["met"]]
    assert f"Targets met: {len(met)} of {len(judged)} judged in this run." in text
    assert "| c=64 non-streamed `/api/chat`, CPU per request | 70 µs | 98 µs | 1.40x |" in text
    # no "## " heading in the generated part: keep_hand_written starts the kept part there
    assert "\n## " not in text
    existing = "# Performance\n\nold figures\n\n## Load-testing your deployment\n\nby hand\n"
    merged = report.keep_hand_written(text, existing)
    assert merged.startswith(text.rstrip("\n"))
    assert merged.endswith("\n## Load-testing your deployment\n\nby hand\n")
    assert "old figures" not in merged
