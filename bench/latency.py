"""Added latency of the proxy at concurrency 1, against calling the upstream directly, in one run.

Starts bench/upstream.py and the proxy (the real `ollama-openai-bridge` command) on loopback, then
alternates blocks of requests between the two paths so both see the same machine state:
  direct: POST /v1/chat/completions to the upstream (OpenAI body)
  proxy:  POST /api/chat to the proxy (Ollama body, stream false; the proxy calls the same upstream)
  direct-stream / proxy-stream: the same with a 100-chunk stream, time to first byte and to the end.
Prints a table and writes JSON to bench/results/latency.json. Proxy CPU from its threads'
schedstat (harness.py).
Usage: python bench/latency.py [REQUESTS]   (default 2000 per path)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from harness import (
    Block,
    c1_round,
    free_port,
    pooled,
    start_proxy,
    start_upstream,
    stop,
    wait,
)

HERE = Path(__file__).resolve().parent
BLOCK = 50


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    ports = {"direct": free_port(), "proxy": free_port()}
    procs = [start_upstream(ports["direct"], 100)]
    procs.append(start_proxy(ports["direct"], ports["proxy"]))
    pids = {"proxy": procs[1].pid}
    try:
        for port in ports.values():
            wait(port)
        cases = ("chat", "stream")
        c1_round(0, list(ports), ports, pids, dict.fromkeys(cases, 200))  # warm-up both paths
        blocks: dict[str, dict[str, list[Block]]] = {c: {"direct": [], "proxy": []} for c in cases}
        for r in range(n // BLOCK):  # alternate blocks so drift hits both paths alike
            for case, got in c1_round(
                r, list(ports), ports, pids, dict.fromkeys(cases, BLOCK)
            ).items():
                for path, block in got.items():
                    blocks[case][path].append(block)
        results = {f"{c}/{path}": pooled(bs) for c, by in blocks.items() for path, bs in by.items()}
        cpu_us = {c: results[f"{c}/proxy"]["cpu_us_per_request"] for c in cases}
        print(f"{'case':<16}{'p50 ms':>10}{'p99 ms':>10}{'ttfb p50':>10}{'ttfb p99':>10}")
        for key, row in results.items():
            print(
                f"{key:<16}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}{row['ttfb_p50_ms']:>10.3f}{row['ttfb_p99_ms']:>10.3f}"
            )
        added = {
            name: {
                "added_p50_ms": results[f"{name}/proxy"]["p50_ms"]
                - results[f"{name}/direct"]["p50_ms"],
                "added_p99_ms": results[f"{name}/proxy"]["p99_ms"]
                - results[f"{name}/direct"]["p99_ms"],
                "added_ttfb_p50_ms": results[f"{name}/proxy"]["ttfb_p50_ms"]
                - results[f"{name}/direct"]["ttfb_p50_ms"],
                "ratio_p50": results[f"{name}/proxy"]["p50_ms"]
                / results[f"{name}/direct"]["p50_ms"],
                "proxy_cpu_us_per_request": cpu_us[name],
            }
            for name in cases
        }
        for name, a in added.items():
            print(
                f"added by the proxy, {name}: p50 {a['added_p50_ms']:.3f} ms, p99 {a['added_p99_ms']:.3f} ms, "
                f"ttfb p50 {a['added_ttfb_p50_ms']:.3f} ms, p50 ratio {a['ratio_p50']:.2f}x direct, "
                f"proxy CPU {a['proxy_cpu_us_per_request']:.0f} us/request"
            )
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        (out / "latency.json").write_text(
            json.dumps(
                {"results": results, "added": added, "requests": n, "cpus": os.cpu_count()},
                indent=2,
            )
        )
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
