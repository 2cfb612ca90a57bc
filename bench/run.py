"""The benchmark suite, one command: python bench/run.py [--quick]

Everything on loopback, bounded in count and time. Each proxy figure is measured beside the
direct path (the same request sent straight to the zero-latency upstream) and beside the floor
(bench/floor.py: a bare uvicorn app making the same backend call through the proxy's own
minimal client, http1, and through aiohttp; issue #18), all in the same run, the order of the
servers rotating from one block to the next (harness.py) so that drift on a shared machine falls
on all alike:

  1. c=1 sequential requests in rounds of blocks of 50: non-streamed /api/chat, a 100-chunk
     streamed /api/chat, and /v1/chat/completions passed through: p50/p99, added latency and
     added time to first byte against direct, CPU per request and per streamed chunk;
  2. c=64 non-streamed /api/chat with wrk (if installed), in rounds: requests/s, errors, CPU per
     request; then latency vs concurrency (direct, http1 floor, proxy), plotted to
     docs/performance.png;
  3. idle RSS after start of the proxy's worker and of each floor; /api/embed with 64 inputs;
  4. many concurrent open streams against a slow upstream on a 2-worker proxy: errors, RSS
     idle / at peak / after, RSS per stream held.

CPU is each server's threads' time on a CPU (schedstat, ns). Prints the report, writes
bench/results/bench.json and docs/PERFORMANCE.md (keeping its sections written by hand, from
its first "## " heading on; report.py), with issue #18's targets checked against the http1 floor.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from harness import (  # noqa: E402
    CHUNKS,
    OLLAMA_STREAM,
    Block,
    c1_round,
    free_port,
    per_chunk,
    pooled,
    request,
    rotated,
    rss_mb,
    start_floor,
    start_proxy,
    start_upstream,
    stop,
    timed,
    wait,
    wrk,
    wrk_round,
)
from report import keep_hand_written, plot, render, targets  # noqa: E402

FLOORS = ("http1", "aiohttp")  # floor-http1 is issue #18's floor; floor-aiohttp for scale
CASES = ("chat", "stream", "stream1", "v1")  # stream1: the short stream, for CPU per chunk
BLOCK = 50  # requests per block at c=1
CURVE = (1, 8, 32, 64, 128, 256)  # wrk connections, latency vs concurrency


class Stack:
    """An upstream, a proxy in front of it and optionally floors beside it, as subprocesses."""

    def __init__(
        self,
        chunks: int = CHUNKS,
        delay: float = 0.0,
        workers: int = 1,
        floors: tuple[str, ...] = (),
    ) -> None:
        self.up_port, self.port = free_port(), free_port()
        self.upstream = start_upstream(self.up_port, chunks, delay)
        settings = {"WORKERS": str(workers)}
        if workers > 1:
            settings["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")
        self.proxy = start_proxy(self.up_port, self.port, settings)
        self.floors: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        for client in floors:
            port = free_port()
            self.floors[f"floor-{client}"] = (port, start_floor(self.up_port, port, client))
        for port in self.ports.values():
            wait(port)
        time.sleep(0.5 if workers == 1 else 2.0)

    @property
    def ports(self) -> dict[str, int]:
        """Variant (harness.py's names: direct, floor-*, proxy) -> port."""
        floors = {name: port for name, (port, _) in self.floors.items()}
        return {"direct": self.up_port, **floors, "proxy": self.port}

    @property
    def servers(self) -> dict[str, int]:
        """Variant -> the process whose CPU is read (one worker: the proxy's own)."""
        floors = {name: proc.pid for name, (_, proc) in self.floors.items()}
        return {**floors, "proxy": self.proxy.pid}

    def pids(self) -> list[int]:
        """The proxy and its worker processes."""
        children = Path(f"/proc/{self.proxy.pid}/task/{self.proxy.pid}/children")
        kids = [int(p) for p in children.read_text().split()] if children.exists() else []
        return [self.proxy.pid, *kids]

    def fds(self) -> int:
        """Open file descriptors of the proxy's processes: each open stream holds two sockets
        (client side and backend side), whether or not its first line has been sent yet."""
        return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in self.pids())

    def rss_mb(self) -> float:
        """RSS (MB) of the proxy's processes together."""
        return rss_mb(self.pids())

    def close(self) -> None:
        stop([self.proxy, *(proc for _, proc in self.floors.values()), self.upstream])


def c1(stack: Stack, n: int) -> dict[str, Any]:
    """``n`` requests per case and variant at concurrency 1, in n / BLOCK rounds of one block
    per variant (rotating order): case -> variant -> p50_ms, p99_ms, ttfb_p50_ms, ttfb_p99_ms,
    and for the servers added_p50_ms, added_p99_ms, added_ttfb_p50_ms (against direct, over all
    requests), cpu_us_per_request (the long stream: and cpu_us_per_chunk, from the difference
    with the short one)."""
    ports, servers = stack.ports, stack.servers
    variants = list(ports)
    c1_round(0, variants, ports, servers, dict.fromkeys(CASES, 200))  # warm-up
    blocks: dict[str, dict[str, list[Block]]] = {c: {v: [] for v in variants} for c in CASES}
    rounds = max(1, n // BLOCK)
    for r in range(rounds):
        for case, got in c1_round(r, variants, ports, servers, dict.fromkeys(CASES, BLOCK)).items():
            for v, block in got.items():
                blocks[case][v].append(block)
    out: dict[str, Any] = {"rounds": rounds, "block": BLOCK}
    for case, by in blocks.items():
        figures = {v: pooled(bs) for v, bs in by.items()}
        direct = figures["direct"]
        for v, fig in figures.items():
            if v == "direct":
                continue
            fig["added_p50_ms"] = fig["p50_ms"] - direct["p50_ms"]
            fig["added_p99_ms"] = fig["p99_ms"] - direct["p99_ms"]
            fig["added_ttfb_p50_ms"] = fig["ttfb_p50_ms"] - direct["ttfb_p50_ms"]
        out[case] = figures
    for v, fig in out["stream"].items():
        if v != "direct":
            fig["cpu_us_per_chunk"] = per_chunk(
                fig["cpu_us_per_request"], out["stream1"][v]["cpu_us_per_request"]
            )
    return out


def throughput(stack: Stack, rounds: int, seconds: int, curve_seconds: int) -> dict[str, Any]:
    """Non-streamed chat with wrk at 64 connections, ``rounds`` rounds of one ``seconds`` run per
    variant (rotating order): variant -> rps and p50_ms/p99_ms (medians over the rounds),
    requests and errors (sums), cpu_us_per_request (all CPU / all requests); then ``curve``:
    direct, the http1 floor and the proxy at each of CURVE connections."""
    ports, servers = stack.ports, stack.servers
    variants = list(ports)
    wrk_round(0, variants, ports, servers, 2)  # warm-up
    runs = [wrk_round(r, variants, ports, servers, seconds) for r in range(rounds)]
    out: dict[str, Any] = {"rounds": rounds, "seconds": seconds}
    for v in variants:
        rs = [run[v] for run in runs]
        fig = out[v] = {
            "rps": statistics.median(x["rps"] for x in rs),
            "p50_ms": statistics.median(x["p50_ms"] for x in rs),
            "p99_ms": statistics.median(x["p99_ms"] for x in rs),
            "requests": sum(x["requests"] for x in rs),
            "errors": sum(x["errors"] for x in rs),
        }
        if v in servers:
            fig["cpu_us_per_request"] = sum(x["cpu_s"] for x in rs) / fig["requests"] * 1e6
    curve = []
    for i, c in enumerate(CURVE):
        row: dict[str, Any] = {"c": c}
        for v in rotated(("direct", "floor-http1", "proxy"), i):
            path, body = request("chat", v)
            row[v] = wrk(f"http://127.0.0.1:{ports[v]}{path}", body, c, curve_seconds)
        curve.append(row)
    out["curve"] = curve
    return out


async def many_streams(n: int, seconds: float, interval: float = 0.1) -> dict[str, Any]:
    """``n`` streams opened over ~5 s against a 2-worker proxy whose upstream sends a chunk every
    ``interval`` s for ``seconds``: completed, errors (and their kinds), how many were held at once,
    RSS idle / at peak / after, and RSS per stream held."""
    stack = Stack(chunks=int(seconds / interval), delay=interval, workers=2)
    try:
        url = f"http://127.0.0.1:{stack.port}/api/chat"
        idle = stack.rss_mb()
        ok = errors = 0
        peak = 0.0
        open_now = 0
        max_open = 0
        kinds: dict[str, int] = {}
        idle_fds = stack.fds()
        peak_fds = 0
        proxy_open = 0
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=seconds * 6)
        ) as session:

            async def one() -> None:
                nonlocal ok, errors, open_now, max_open
                try:
                    async with session.post(
                        url, data=OLLAMA_STREAM, headers={"Content-Type": "application/json"}
                    ) as resp:
                        open_now += 1
                        max_open = max(max_open, open_now)
                        body = await resp.read()
                        open_now -= 1
                        last = json.loads(body.rsplit(b"\n", 2)[-2])
                        if resp.status == 200 and last.get("done") is True:
                            ok += 1
                        else:
                            errors += 1
                            kinds[f"{resp.status}: {str(last.get('error'))[:80]}"] = (
                                kinds.get(f"{resp.status}: {str(last.get('error'))[:80]}", 0) + 1
                            )
                except (aiohttp.ClientError, TimeoutError, ValueError, IndexError) as exc:
                    errors += 1
                    kinds[f"{type(exc).__name__}: {str(exc)[:60]}"] = (
                        kinds.get(f"{type(exc).__name__}: {str(exc)[:60]}", 0) + 1
                    )

            async def sample() -> None:
                # The proxy's own gauge says how many streams it holds open (all workers).
                nonlocal peak, proxy_open, peak_fds
                metrics = f"http://127.0.0.1:{stack.port}/v1/metrics"
                while ok + errors < n:
                    peak = max(peak, stack.rss_mb())
                    peak_fds = max(peak_fds, stack.fds())
                    try:
                        async with session.get(metrics) as resp:
                            text = await resp.text()
                        found = re.search(
                            r"^ollama_proxy_streams_in_flight (\S+)", text, re.MULTILINE
                        )
                        if found:
                            proxy_open = max(proxy_open, int(float(found.group(1))))
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                    await asyncio.sleep(0.5)

            tasks = []
            for _ in range(n):  # open them over ~5 s rather than in one SYN burst
                tasks.append(asyncio.ensure_future(one()))
                if len(tasks) % 500 == 0:
                    await asyncio.sleep(0.25)
            await asyncio.gather(sample(), *tasks)
        await asyncio.sleep(3)
        after = stack.rss_mb()
    finally:
        stack.close()
    return {
        "streams": n,
        "completed": ok,
        "errors": errors,
        "max_open_at_once": max_open,
        "proxy_max_streams_in_flight": proxy_open,
        "proxy_max_connections_held": (peak_fds - idle_fds) // 2,
        "error_kinds": kinds,
        "idle_rss_mb": idle,
        "peak_rss_mb": peak,
        "rss_after_mb": after,
        # Divided by the requests the proxy really held at its peak (a client socket and a
        # backend socket each), not by all that were sent: when they do not all fit in time,
        # fewer are open at once than n.
        "rss_per_stream_kb": (peak - idle) * 1024 / max((peak_fds - idle_fds) // 2, proxy_open, 1),
    }


def embed(stack: Stack, n: int) -> dict[str, float]:
    """``n`` sequential ``/api/embed`` calls with 64 inputs, then as many straight to the
    upstream: p50 of each and the difference (ms)."""
    body = json.dumps(
        {"model": "bench-model", "input": [f"text number {i}" for i in range(64)]}
    ).encode()
    direct_body = json.dumps(
        {
            "model": "bench-model",
            "input": [f"text number {i}" for i in range(64)],
            "encoding_format": "float",
        }
    ).encode()
    proxy = http.client.HTTPConnection("127.0.0.1", stack.port)
    direct = http.client.HTTPConnection("127.0.0.1", stack.up_port)
    ps = [timed(proxy, "/api/embed", body)[1] * 1000 for _ in range(n)]
    ds = [timed(direct, "/v1/embeddings", direct_body)[1] * 1000 for _ in range(n)]
    return {
        "direct_p50_ms": statistics.median(ds),
        "proxy_p50_ms": statistics.median(ps),
        "added_p50_ms": statistics.median(ps) - statistics.median(ds),
    }


def main() -> None:
    quick = "--quick" in sys.argv
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d"),
            "log_level": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
            "load_before": os.getloadavg()[0],
        }
    }
    stack = Stack(floors=FLOORS)
    try:
        # After start, before any request: the same moment for the proxy's worker and the floors.
        results["idle_rss_mb"] = {v: rss_mb([pid]) for v, pid in stack.servers.items()}
        results["c1"] = c1(stack, 400 if quick else 2000)
        results["embed_64"] = embed(stack, 50 if quick else 300)
        if shutil.which("wrk"):
            rounds, seconds, curve_seconds = (2, 2, 1) if quick else (5, 3, 3)
            results["c64"] = throughput(stack, rounds, seconds, curve_seconds)
        else:
            print("wrk not installed (Debian package wrk): throughput skipped")
    finally:
        stack.close()
    results["streams"] = asyncio.run(many_streams(1000 if quick else 10000, 10.0))
    # The same number at 1 chunk/s for 30 s: within what the two cores can generate, serve and
    # read, so every stream is open at the same moment.
    results["streams_held"] = asyncio.run(
        many_streams(1000 if quick else 10000, 10.0 if quick else 30.0, interval=1.0)
    )
    results["machine"]["load_after"] = os.getloadavg()[0]
    results["targets"] = targets(results)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=1))
    if "c64" in results:
        plot(results["c64"]["curve"], ROOT / "docs" / "performance.png")
    report = render(results, " ".join(["python bench/run.py", *sys.argv[1:]]))
    print(report)
    out_md = ROOT / "docs" / "PERFORMANCE.md"
    out_md.write_text(keep_hand_written(report, out_md.read_text() if out_md.exists() else ""))


if __name__ == "__main__":
    main()
