"""The two backend clients, proxy and floor, in one run (issue #18).

Starts bench/upstream.py (100-chunk streams), two floors (bench/floor.py: a bare uvicorn app
making the same call through aiohttp, and through ollama_openai_bridge.http1, the minimal client)
and two proxies (the real command, UPSTREAM_HTTP_CLIENT=aiohttp and http1). Then, in ROUNDS
rounds, each variant in turn (the order rotates every round, so drift on a shared machine falls
on all alike):

- c=1 non-streamed chat: ``/api/chat`` ``stream: false`` (direct: the upstream's own
  ``/v1/chat/completions``), a block of 50: added p50 against direct, CPU per request;
- c=1 stream: ``/api/chat`` streamed (100 content chunks), a block of 20: added time to first
  byte; and a block of 1-chunk streams: CPU per chunk is the difference over the 99 chunks
  between them (harness.per_chunk);
- c=1 ``/v1/chat/completions`` passthrough, a block of 50: added p50, CPU per request;
- c=64 non-streamed chat with wrk, 3 s each: CPU per request.

CPU is the server process's time on a CPU (its threads' schedstat, in ns). Prints, per figure,
the minimum and the median over the rounds, and the ratios against the http1 floor (the target
of issue #18: the proxy on http1 within 1.5x of it, /v1 within 1.3x); writes
bench/results/clients.json. The blocks, rounds and wrk runs are harness.py's, which `make bench`
(run.py) uses too for its floor rows.
Usage: python bench/clients.py [ROUNDS=5]   (run from the repository root; PYTHONPATH=src for a
checkout that is not installed; BENCH_BASE=/path/to/an/older/checkout adds its proxy)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import (
    CHUNKS,
    c1_round,
    free_port,
    p50_ms,
    per_chunk,
    start_floor,
    start_proxy,
    start_upstream,
    stop,
    wait,
    wrk_round,
)

HERE = Path(__file__).resolve().parent
# BENCH_BASE=<an older checkout>: its proxy too, as "base-aiohttp" (the client it had), so that
# "nothing got slower" is measured in the same run (issue #13); its own src/ on PYTHONPATH.
BASE = os.environ.get("BENCH_BASE")
SERVERS = (
    "floor-aiohttp",
    "floor-http1",
    *(("base-aiohttp",) if BASE else ()),
    "proxy-aiohttp",
    "proxy-http1",
)
BLOCKS = {"chat": 50, "stream": 20, "stream1": 20, "v1": 50}  # requests per block, per case


def start(up: int) -> tuple[dict[str, int], dict[str, int], list[subprocess.Popen[bytes]]]:
    """The upstream and every server of SERVERS, listening: (ports, pids, processes)."""
    procs = [start_upstream(up, CHUNKS)]
    ports = {"direct": up}
    pids: dict[str, int] = {}
    for name in SERVERS:
        port = ports[name] = free_port()
        kind, client = name.split("-")
        if kind == "floor":
            proc = start_floor(up, port, client)
        elif kind == "base" and BASE:
            module = "ollama_openai_bridge"
            if not (Path(BASE) / "src" / module).is_dir():  # a checkout from before the rename
                module = "ollama_openai_proxy"
            settings = {"UPSTREAM_HTTP_CLIENT": client, "PYTHONPATH": str(Path(BASE) / "src")}
            proc = start_proxy(up, port, settings, cwd=Path(BASE) / "bench", module=module)
        else:
            proc = start_proxy(up, port, {"UPSTREAM_HTTP_CLIENT": client})
        procs.append(proc)
        pids[name] = proc.pid
    for port in ports.values():
        wait(port)
    return ports, pids, procs


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5

    ports, pids, procs = start(free_port())
    variants = ("direct", *SERVERS)
    # per round: figure -> variant -> value
    runs: list[dict[str, dict[str, float]]] = []
    try:
        warm = {"chat": 100, "stream": 20, "stream1": 20, "v1": 100}
        c1_round(0, variants, ports, pids, warm)
        wrk_round(0, SERVERS, ports, pids, 1)
        for r in range(rounds):
            figures: dict[str, dict[str, float]] = {}
            got = c1_round(r, variants, ports, pids, BLOCKS)
            for case, blocks in got.items():
                for v in SERVERS:
                    cpu = (blocks[v].cpu_s or 0.0) / len(blocks[v].samples) * 1e6
                    if case == "stream1":
                        continue
                    if case == "stream":
                        short = got["stream1"][v]
                        cpu_short = (short.cpu_s or 0.0) / len(short.samples) * 1e6
                        per = per_chunk(cpu, cpu_short)
                        figures.setdefault("stream_cpu_us_per_chunk", {})[v] = per
                        ttfb = p50_ms([blocks[v]], 0)
                        added = ttfb - p50_ms([blocks["direct"]], 0)
                        figures.setdefault("stream_added_ttfb_ms", {})[v] = added
                        figures.setdefault("stream_ttfb_ms", {})[v] = ttfb
                    else:
                        figures.setdefault(f"{case}_cpu_us_per_request", {})[v] = cpu
                        added = p50_ms([blocks[v]]) - p50_ms([blocks["direct"]])
                        figures.setdefault(f"{case}_added_p50_ms", {})[v] = added
            for v, run in wrk_round(r, SERVERS, ports, pids, 3).items():
                if run["errors"]:
                    raise RuntimeError(f"wrk against {v}: {run['errors']:.0f} errors")
                figures.setdefault("c64_cpu_us_per_request", {})[v] = (
                    run["cpu_s"] / run["requests"] * 1e6
                )
            runs.append(figures)
            print(f"round {r + 1}/{rounds} done, load {os.getloadavg()[0]:.1f}", flush=True)
            time.sleep(1)
    finally:
        stop(procs)
    report(runs)


def report(runs: list[dict[str, dict[str, float]]]) -> None:
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for figure in runs[0]:
        summary[figure] = {}
        for v in SERVERS:
            values = [run[figure][v] for run in runs]
            summary[figure][v] = {"min": min(values), "median": statistics.median(values)}
    head = "".join(f"{v:>22}" for v in SERVERS)
    print(f"\n{'figure (min / median over rounds)':<30}{head}")
    for figure, by in summary.items():
        cells = "".join(f"{by[v]['min']:>11.3f} /{by[v]['median']:>9.3f}" for v in SERVERS)
        print(f"{figure:<30}{cells}")
    print("\nratios against the http1 floor (min, median):")
    for figure, by in summary.items():
        floor = by["floor-http1"]
        if floor["min"] <= 0 or floor["median"] <= 0:
            continue  # an added time at or under zero: no ratio
        parts = [
            f"{v} {by[v]['min'] / floor['min']:.2f}, {by[v]['median'] / floor['median']:.2f}"
            for v in SERVERS
            if v != "floor-http1"
        ]
        print(f"  {figure:<28}" + " | ".join(parts))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "clients.json").write_text(
        json.dumps({"rounds": runs, "summary": summary, "load": os.getloadavg()}, indent=1)
    )


if __name__ == "__main__":
    main()
