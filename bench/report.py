"""docs/PERFORMANCE.md and docs/performance.png from run.py's results (bench/results/bench.json).

``targets`` checks issue #18's targets against the floor measured in the same run;
``render`` writes the figures as Markdown; ``keep_hand_written`` keeps the sections written by
hand; ``plot`` draws latency vs concurrency.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

FLOOR = "floor-http1"  # issue #18's floor: bare uvicorn + the proxy's own minimal client
SCALE = "floor-aiohttp"  # the same bare app on aiohttp, for scale
STREAMS = 10_000
MAX_KB_PER_STREAM = 20.0
MAX_IDLE_MB_ABOVE = 10.0

# Issue #18 ("Close to the limit"): the proxy's figure / the floor's, same run. (figure, where
# in the results: c1's case or "c64", key, unit, largest ratio or None for a figure shown
# without a target of its own)
RATIOS: tuple[tuple[str, str, str, str, float | None], ...] = (
    ("c=64 non-streamed `/api/chat`, CPU per request", "c64", "cpu_us_per_request", "µs", 1.5),
    ("c=1 non-streamed `/api/chat`, added p50", "chat", "added_p50_ms", "ms", 1.5),
    ("c=1 non-streamed `/api/chat`, CPU per request", "chat", "cpu_us_per_request", "µs", None),
    ("100-chunk stream, added time to first byte (p50)", "stream", "added_ttfb_p50_ms", "ms", 1.5),
    ("100-chunk stream, CPU per chunk", "stream", "cpu_us_per_chunk", "µs", 1.5),
    ("c=1 `/v1/chat/completions` passthrough, added p50", "v1", "added_p50_ms", "ms", 1.3),
    (
        "c=1 `/v1/chat/completions` passthrough, CPU per request",
        "v1",
        "cpu_us_per_request",
        "µs",
        1.3,
    ),
)


def _value(r: dict[str, Any], where: str, key: str, variant: str) -> float | None:
    section = r.get("c64") if where == "c64" else r["c1"].get(where)
    if section is None or variant not in section:
        return None
    value = section[variant].get(key)
    return None if value is None else float(value)


def _ratio_row(
    r: dict[str, Any], figure: str, where: str, key: str, unit: str, limit: float | None
) -> dict[str, Any]:
    floor, proxy = _value(r, where, key, FLOOR), _value(r, where, key, "proxy")
    row: dict[str, Any] = {
        "figure": figure,
        "unit": unit,
        "floor": floor,
        "proxy": proxy,
        "scale": _value(r, where, key, SCALE),
        "ratio": None,
        "target": f"≤ {limit}x" if limit else "—",
        "met": None,
    }
    if floor is None or proxy is None:
        row["verdict"] = "not measured (wrk not installed)" if where == "c64" else "not measured"
    elif floor <= 0:
        # an added time at or under zero (the floor as fast as direct within the noise): no ratio
        row["verdict"] = "no ratio: the floor added nothing measurable in this run"
    else:
        row["ratio"] = proxy / floor
        if limit is None:
            row["verdict"] = "—"
        else:
            row["met"], row["verdict"] = _within(proxy - floor * limit, unit)
            if not row["met"]:
                row["verdict"] += f" (≤ {_fmt(floor * limit, unit)})"
    return row


def _row(
    figure: str, unit: str, proxy: float, target: str, met: bool | None, verdict: str, **more: Any
) -> dict[str, Any]:
    return {
        "figure": figure,
        "unit": unit,
        "floor": None,
        "proxy": proxy,
        "ratio": None,
        "target": target,
        "met": met,
        "verdict": verdict,
        **more,
    }


def _within(excess: float, unit: str) -> tuple[bool, str]:
    """(met, verdict) of a figure ``excess`` above its largest allowed value."""
    return (True, "yes") if excess <= 0 else (False, f"no: {_fmt(excess, unit)} over")


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #18's targets as rows: figure, unit, floor, proxy, scale (the aiohttp floor),
    ratio, target (text), met (True, False, or None when there is nothing to judge) and
    verdict (text: by how much a missed target is missed)."""
    rows = [_ratio_row(r, *spec) for spec in RATIOS]
    idle = r["idle_rss_mb"]
    above = idle["proxy"] - idle[FLOOR]
    target = f"≤ floor + {MAX_IDLE_MB_ABOVE:.0f} MB"
    within, verdict = _within(above - MAX_IDLE_MB_ABOVE, "MB")
    rows.append(
        _row(
            "idle RSS of one worker after start",
            "MB",
            idle["proxy"],
            target,
            within,
            verdict,
            floor=idle[FLOOR],
            scale=idle.get(SCALE),
            above=above,
        )
    )
    # the run at 1 chunk / s, where every stream is open at the same moment
    held = r.get("streams_held") or r["streams"]
    at_once = max(held["proxy_max_streams_in_flight"], held["proxy_max_connections_held"])
    ok = held["errors"] == 0 and at_once >= STREAMS
    figure = f"{held['streams']:,} concurrent streams on one instance (2 workers, 1 chunk / s)"
    met: bool | None = None
    if held["streams"] < STREAMS:
        verdict = f"not measured: {held['streams']:,} streams (--quick)"
    else:
        met, verdict = ok, "yes" if ok else f"no: {held['errors']} errors, {at_once:,} at once"
    rows.append(
        _row(
            f"{figure}, errors",
            "",
            held["errors"],
            f"{STREAMS:,} at once, 0 errors",
            met,
            verdict,
            at_once=at_once,
        )
    )
    kb = held["rss_per_stream_kb"]
    within, verdict = _within(kb - MAX_KB_PER_STREAM, "KB")
    rows.append(
        _row(
            "memory per open stream (the same run: RSS growth / streams held)",
            "KB",
            kb,
            f"≤ {MAX_KB_PER_STREAM:.0f} KB",
            within,
            verdict,
        )
    )
    return rows


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "µs":
        return f"{value:.1f} µs" if abs(value) < 20 else f"{value:.0f} µs"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "KB":
        return f"{value:.1f} KB"
    return f"{value:.0f}"


def _target_lines(r: dict[str, Any]) -> list[str]:
    c1r, c64 = r["c1"], r.get("c64")
    wrk_part = (
        f"; c=64: {c64['rounds']} rounds of one {c64['seconds']} s wrk run each" if c64 else ""
    )
    intro = (
        "**Against the floor** (issue #18). The floor is the bare stack: `bench/floor.py`, a bare"
        " uvicorn app making the same backend call through the proxy's own minimal client"
        " (`ollama_openai_bridge.http1`) and translating the least that does the job (issue #18's"
        " minimal proxy: streams SSE -> NDJSON, first line at once), with no validation,"
        " middleware or metrics. CPU per chunk is the difference between 100-chunk and 1-chunk"
        " streams over the 99 chunks between them. It ran in"
        " the same run as the proxy, the order of the servers rotating every block (c=1:"
        f" {c1r['rounds']} rounds of one block of {c1r['block']} requests per server and case"
        f"{wrk_part}). CPU is each server's threads' time on a CPU (schedstat, ns); added times"
        " are against the direct path, over every request of the run; the ratio is the proxy's"
        " figure over the floor's, and a missed target says how far the proxy is above the most"
        " it may be. The last column is the same bare app on aiohttp, for scale."
    )
    lines = [
        textwrap.fill(intro, 98, break_on_hyphens=False),
        "",
        "| figure | floor | proxy | ratio | target | met? | floor on aiohttp |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["targets"]:
        unit = row["unit"]
        if "above" in row:
            ratio = f"+{row['above']:.1f} MB"
        elif row["ratio"] is not None:
            ratio = f"{row['ratio']:.2f}x"
        else:
            ratio = ""
        floor = _fmt(row["floor"], unit) if row["floor"] is not None else "—"
        scale = _fmt(row.get("scale"), unit) if row.get("scale") is not None else ""
        proxy = _fmt(row["proxy"], unit) if row["proxy"] is not None else "—"
        lines.append(
            f"| {row['figure']} | {floor} | {proxy} | {ratio} | {row['target']} "
            f"| {row['verdict']} | {scale} |"
        )
    met = [row for row in r["targets"] if row["met"] is True]
    judged = [row for row in r["targets"] if row["met"] is not None]
    lines += ["", f"Targets met: {len(met)} of {len(judged)} judged in this run.", ""]
    return lines


def render(r: dict[str, Any], command: str) -> str:
    """The generated part of docs/PERFORMANCE.md (no "## " heading: keep_hand_written starts
    the hand-written part at the first one)."""
    c1r: dict[str, dict[str, dict[str, float]]] = r["c1"]
    m: dict[str, Any] = r["machine"]
    e: dict[str, float] = r["embed_64"]
    chat, stream, v1 = c1r["chat"], c1r["stream"], c1r["v1"]
    load = (
        f" Load average {m['load_before']:.1f} before, {m['load_after']:.1f} after."
        if "load_after" in m
        else ""
    )
    lines = [
        "# Performance",
        "",
        f"Generated by `{command}` on {m['date']}: {m['cpus']} CPUs, Python {m['python']}, Linux {m['kernel']}.{load}",
        "Upstream: a zero-latency OpenAI-compatible server on loopback (bench/upstream.py). Every proxy",
        "figure is beside the floor (the bare stack, below) and the direct path (the same request",
        "straight to that upstream), all from the same run; the load generator, the upstream, the",
        "floors and the proxy share the machine's cores. The proxy runs at",
        f"`LOG_LEVEL={m.get('log_level', 'WARNING')}`"
        + (
            " (its default: one access-log line per request)."
            if m.get("log_level") == "INFO"
            else "."
        ),
        "",
        *_target_lines(r),
        "**Against the direct path.**",
        "",
        "| measure | direct | proxy | added / ratio |",
        "|---|---|---|---|",
        f"| c=1 non-streaming `/api/chat`, p50 | {chat['direct']['p50_ms']:.3f} ms | {chat['proxy']['p50_ms']:.3f} ms | +{chat['proxy']['added_p50_ms']:.3f} ms |",
        f"| c=1 non-streaming `/api/chat`, p99 (added) | | | +{chat['proxy']['added_p99_ms']:.3f} ms |",
        f"| c=1 proxy CPU per non-streaming request | | {chat['proxy']['cpu_us_per_request']:.0f} µs | |",
        f"| 100-chunk stream, time to first byte p50 | {stream['direct']['ttfb_p50_ms']:.3f} ms | {stream['proxy']['ttfb_p50_ms']:.3f} ms | +{stream['proxy']['added_ttfb_p50_ms']:.3f} ms |",
        f"| 100-chunk stream, total p50 | {stream['direct']['p50_ms']:.3f} ms | {stream['proxy']['p50_ms']:.3f} ms | +{stream['proxy']['added_p50_ms']:.3f} ms |",
        f"| proxy CPU per streamed chunk | | {stream['proxy']['cpu_us_per_chunk']:.1f} µs | |",
        f"| c=1 `/v1/chat/completions` passthrough, p50 | {v1['direct']['p50_ms']:.3f} ms | {v1['proxy']['p50_ms']:.3f} ms | +{v1['proxy']['added_p50_ms']:.3f} ms |",
        f"| `/api/embed`, 64 inputs, p50 | {e['direct_p50_ms']:.3f} ms | {e['proxy_p50_ms']:.3f} ms | +{e['added_p50_ms']:.3f} ms |",
        f"| idle RSS after start | | {r['idle_rss_mb']['proxy']:.1f} MB | |",
    ]
    if "c64" in r:
        t: dict[str, Any] = r["c64"]
        p, d = t["proxy"], t["direct"]
        lines += [
            f"| c=64 non-streaming `/api/chat` (wrk), requests/s (median of {t['rounds']} runs) | {d['rps']:.0f} | {p['rps']:.0f} | {p['rps'] / d['rps']:.2f}x |",
            f"| c=64 errors (all runs) | {d['errors']:.0f} | {p['errors']:.0f} | |",
            f"| c=64 proxy CPU per request | | {p['cpu_us_per_request']:.0f} µs | |",
        ]
    s: dict[str, Any] = r["streams"]
    lines += [
        f"| {s['streams']:.0f} concurrent streams (1 chunk / 100 ms, 10 s), 2 workers: completed / errors | | {s['completed']:.0f} / {s['errors']:.0f} | at once: {s['proxy_max_connections_held']:.0f} requests held by the proxy (sockets / 2), {s['proxy_max_streams_in_flight']:.0f} past their first line |",
        f"| same: idle, peak, after RSS (all processes) | | {s['idle_rss_mb']:.0f} / {s['peak_rss_mb']:.0f} / {s['rss_after_mb']:.0f} MB | {s['rss_per_stream_kb']:.1f} KB per stream held (target ≤ {MAX_KB_PER_STREAM:.0f} KB) |",
    ]
    if "streams_held" in r:
        h: dict[str, Any] = r["streams_held"]
        lines += [
            f"| {h['streams']:.0f} concurrent streams (1 chunk / s), 2 workers: completed / errors | | {h['completed']:.0f} / {h['errors']:.0f} | at once: {h['proxy_max_streams_in_flight']:.0f} streams open in the proxy, {h['max_open_at_once']:.0f} seen by the client |",
            f"| same: idle, peak, after RSS (all processes) | | {h['idle_rss_mb']:.0f} / {h['peak_rss_mb']:.0f} / {h['rss_after_mb']:.0f} MB | {h['rss_per_stream_kb']:.1f} KB per stream held (target ≤ {MAX_KB_PER_STREAM:.0f} KB) |",
        ]
    lines.append("")
    if "c64" in r:
        lines += ["![latency vs concurrency](performance.png)", ""]
    return "\n".join(lines)


def keep_hand_written(report: str, existing: str) -> str:
    """The new figures, followed by the sections written by hand in the current file: everything
    from its first "## " heading on (the figures have none), e.g. the Locust load test."""
    start = existing.find("\n## ")
    return report if start < 0 else report.rstrip("\n") + "\n" + existing[start:]


def plot(curve: list[dict[str, Any]], path: Path) -> None:
    """p50 and p99 latency (ms) vs wrk's connections for each variant in ``curve``'s rows
    (direct, the http1 floor, the proxy; a row without a variant is skipped), to ``path``."""
    import matplotlib  # noqa: PLC0415 -- only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4))
    series = (
        ("direct", "o--", "direct"),
        (FLOOR, "s:", "floor (uvicorn + http1)"),
        ("proxy", "o-", "proxy"),
    )
    for key, style, label in series:
        rows = [row for row in curve if key in row]
        if not rows:
            continue
        cs = [row["c"] for row in rows]
        (line,) = ax.plot(cs, [row[key]["p50_ms"] for row in rows], style, label=f"{label} p50")
        ax.plot(
            cs,
            [row[key]["p99_ms"] for row in rows],
            style,
            color=line.get_color(),
            alpha=0.4,
            label=f"{label} p99",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent connections (wrk)")
    ax.set_ylabel("latency, ms")
    ax.set_title("Non-streaming /api/chat: proxy, bare-stack floor, direct upstream")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
