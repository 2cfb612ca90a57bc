"""The benchmark suite, one command: python bench/run.py [--quick]

Everything on loopback, bounded in count and time, each proxy figure beside the direct path (the
same request sent straight to the zero-latency upstream) measured in the same run:

  1. c=1 sequential non-streaming /api/chat: p50/p99 latency and the difference to direct;
  2. c=64 non-streaming /api/chat with wrk (if installed): requests/s, errors, and the proxy's CPU
     time per request (utime+stime from /proc, all its processes);
  3. streaming /api/chat with a 100-chunk upstream: added time to first byte and total time, proxy
     CPU per chunk;
  4. many concurrent open streams against a slow upstream (1 chunk / 100 ms for 10 s): errors,
     peak RSS, RSS after;
  5. idle RSS after start; /api/embed with a 64-input batch;
  plus latency vs concurrency (wrk), plotted to docs/performance.png.

Prints a table, writes bench/results/bench.json and docs/PERFORMANCE.md (keeping its sections
written by hand, from its first "## " heading on).
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

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from latency import cpu_seconds, free_port, pct, timed, wait  # noqa: E402

MSGS = [{"role": "user", "content": "Say hello"}]
CHAT = json.dumps({"model": "bench-model", "messages": MSGS, "stream": False}).encode()
DIRECT = json.dumps({"model": "bench-model", "messages": MSGS}).encode()
STREAM = json.dumps({"model": "bench-model", "messages": MSGS}).encode()
DIRECT_STREAM = json.dumps(
    {
        "model": "bench-model",
        "messages": MSGS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()


class Stack:
    """An upstream and a proxy in front of it, as subprocesses."""

    def __init__(self, chunks: int = 100, delay: float = 0.0, workers: int = 1) -> None:
        self.up_port, self.port = free_port(), free_port()
        self.upstream = subprocess.Popen(
            [sys.executable, str(HERE / "upstream.py"), str(self.up_port), str(chunks), str(delay)]
        )
        env = {
            **os.environ,
            "OPENAI_API_BASE_URL": f"http://127.0.0.1:{self.up_port}/v1",
            "OPENAI_API_KEY": "bench",
            "PROXY_PORT": str(self.port),
            # The default level: every request writes its access-log line (to /dev/null here).
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
            "MAX_RETRIES": "0",
            # every load generator here is one address (127.0.0.1), and the 10,000-stream run
            # holds more than the default per-address share (1,024 per worker)
            "MAX_CLIENT_CONNECTIONS_PER_IP": "0",
            "WORKERS": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="bench-metrics-")
            if workers > 1
            else "",
        }
        if workers == 1:
            env.pop("PROMETHEUS_MULTIPROC_DIR")
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "ollama_openai_bridge"],
            env=env,
            cwd=HERE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait(self.up_port)
        wait(self.port)
        time.sleep(0.5 if workers == 1 else 2.0)

    def pids(self) -> list[int]:
        """The proxy and its worker processes."""
        children = Path(f"/proc/{self.proxy.pid}/task/{self.proxy.pid}/children")
        kids = [int(p) for p in children.read_text().split()] if children.exists() else []
        return [self.proxy.pid, *kids]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def fds(self) -> int:
        """Open file descriptors of the proxy's processes: each open stream holds two sockets
        (client side and backend side), whether or not its first line has been sent yet."""
        return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in self.pids())

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total / 1024

    def close(self) -> None:
        for p in (self.proxy, self.upstream):
            p.terminate()
            p.wait(15)


def c1(stack: Stack, n: int) -> dict[str, float]:
    direct = http.client.HTTPConnection("127.0.0.1", stack.up_port)
    proxy = http.client.HTTPConnection("127.0.0.1", stack.port)
    out: dict[str, float] = {}
    cases = (
        ("chat", DIRECT, CHAT, "/api/chat"),
        ("stream", DIRECT_STREAM, STREAM, "/api/chat"),
        ("passthrough", DIRECT, DIRECT, "/v1/chat/completions"),  # the OpenAI API, forwarded
    )
    for name, d, p, ppath in cases:
        dpath = "/v1/chat/completions"
        for _ in range(200):
            timed(direct, dpath, d)
            timed(proxy, ppath, p)
        ds: list[tuple[float, float]] = []
        ps: list[tuple[float, float]] = []
        cpu = 0.0
        for _ in range(n // 50):
            ds += [timed(direct, dpath, d) for _ in range(50)]
            before = stack.cpu()
            ps += [timed(proxy, ppath, p) for _ in range(50)]
            cpu += stack.cpu() - before
        for label, idx in (("total", 1), ("ttfb", 0)):
            dv = [x[idx] * 1000 for x in ds]
            pv = [x[idx] * 1000 for x in ps]
            out[f"{name}_{label}_direct_p50_ms"] = statistics.median(dv)
            out[f"{name}_{label}_proxy_p50_ms"] = statistics.median(pv)
            out[f"{name}_{label}_added_p50_ms"] = statistics.median(pv) - statistics.median(dv)
            out[f"{name}_{label}_added_p99_ms"] = pct(pv, 99) - pct(dv, 99)
        out[f"{name}_proxy_cpu_us_per_request"] = cpu / len(ps) * 1e6
    out["stream_proxy_cpu_us_per_chunk"] = out["stream_proxy_cpu_us_per_request"] / 100
    return out


WRK_LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, body: bytes, connections: int, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA.format(body=body.decode()))
    # bandit B607: wrk is found on PATH on purpose (bench/README.md: the developer's own
    # install); the arguments are a list, no shell.
    out = subprocess.run(  # nosec B607
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", f.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)

    def ms(text: str) -> float:
        found = re.match(r"([\d.]+)(us|ms|s|m)$", text)
        if found is None:  # wrk prints e.g. "-nan" when it has no sample
            return float("nan")
        value, unit = found.groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "requests": total,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": ms(re.search(r"50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": ms(re.search(r"99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "errors": (int(errors.group(1)) if errors else 0)
        + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
    }


def throughput(stack: Stack, seconds: int) -> dict[str, float]:
    proxy_url = f"http://127.0.0.1:{stack.port}/api/chat"
    direct_url = f"http://127.0.0.1:{stack.up_port}/v1/chat/completions"
    wrk(proxy_url, CHAT, 64, 2)  # warm-up
    before = stack.cpu()
    proxy = wrk(proxy_url, CHAT, 64, seconds)
    cpu = stack.cpu() - before
    direct = wrk(direct_url, DIRECT, 64, seconds)
    curve = []
    for c in (1, 8, 32, 64, 128, 256):
        curve.append(
            {"c": c, "proxy": wrk(proxy_url, CHAT, c, 3), "direct": wrk(direct_url, DIRECT, c, 3)}
        )
    return {
        "proxy": proxy,
        "direct": direct,
        "proxy_cpu_us_per_request": cpu / proxy["requests"] * 1e6,
        "curve": curve,
    }  # type: ignore[dict-item]


async def many_streams(n: int, seconds: float, interval: float = 0.1) -> dict[str, float]:
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
                        url, data=STREAM, headers={"Content-Type": "application/json"}
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


def plot(curve: list[dict[str, object]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 -- only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    cs = [row["c"] for row in curve]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("direct", "o--"), ("proxy", "o-")):
        ax.plot(cs, [row[key]["p50_ms"] for row in curve], style, label=f"{key} p50")  # type: ignore[index]
        ax.plot(cs, [row[key]["p99_ms"] for row in curve], style, alpha=0.4, label=f"{key} p99")  # type: ignore[index]
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent connections (wrk)")
    ax.set_ylabel("latency, ms")
    ax.set_title("Non-streaming /api/chat: proxy vs direct upstream")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    quick = "--quick" in sys.argv
    results: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d"),
            "log_level": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        }
    }
    stack = Stack()
    try:
        results["idle_rss_mb"] = stack.rss_mb()
        results["c1"] = c1(stack, 400 if quick else 2000)
        results["embed_64"] = embed(stack, 50 if quick else 300)
        if shutil.which("wrk"):
            results["c64"] = throughput(stack, 3 if quick else 10)
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
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=1))
    if "c64" in results:
        plot(results["c64"]["curve"], ROOT / "docs" / "performance.png")  # type: ignore[index]
    report = render(results, " ".join(["python bench/run.py", *sys.argv[1:]]))
    print(report)
    out_md = ROOT / "docs" / "PERFORMANCE.md"
    out_md.write_text(keep_hand_written(report, out_md.read_text() if out_md.exists() else ""))


def keep_hand_written(report: str, existing: str) -> str:
    """The new figures, followed by the sections written by hand in the current file: everything
    from its first "## " heading on (the figures have none), e.g. the Locust load test."""
    start = existing.find("\n## ")
    return report if start < 0 else report.rstrip("\n") + "\n" + existing[start:]


def render(r: dict[str, object], command: str) -> str:
    c1r: dict[str, float] = r["c1"]  # type: ignore[assignment]
    m: dict[str, object] = r["machine"]  # type: ignore[assignment]
    s: dict[str, float] = r["streams"]  # type: ignore[assignment]
    e: dict[str, float] = r["embed_64"]  # type: ignore[assignment]
    lines = [
        "# Performance",
        "",
        f"Generated by `{command}` on {m['date']}: {m['cpus']} CPUs, Python {m['python']}, Linux {m['kernel']}.",
        "Upstream: a zero-latency OpenAI-compatible server on loopback (bench/upstream.py). Every proxy",
        "figure is beside the direct path (the same request straight to that upstream) from the same run;",
        "the load generator, the upstream and the proxy share the machine's cores. The proxy runs at",
        f"`LOG_LEVEL={m.get('log_level', 'WARNING')}`"
        + (
            " (its default: one access-log line per request)."
            if m.get("log_level") == "INFO"
            else "."
        ),
        "",
        "| measure | direct | proxy | added / ratio |",
        "|---|---|---|---|",
        f"| c=1 non-streaming `/api/chat`, p50 | {c1r['chat_total_direct_p50_ms']:.3f} ms | {c1r['chat_total_proxy_p50_ms']:.3f} ms | +{c1r['chat_total_added_p50_ms']:.3f} ms |",
        f"| c=1 non-streaming `/api/chat`, p99 (added) | | | +{c1r['chat_total_added_p99_ms']:.3f} ms |",
        f"| c=1 proxy CPU per non-streaming request | | {c1r['chat_proxy_cpu_us_per_request']:.0f} µs | |",
        f"| 100-chunk stream, time to first byte p50 | {c1r['stream_ttfb_direct_p50_ms']:.3f} ms | {c1r['stream_ttfb_proxy_p50_ms']:.3f} ms | +{c1r['stream_ttfb_added_p50_ms']:.3f} ms |",
        f"| 100-chunk stream, total p50 | {c1r['stream_total_direct_p50_ms']:.3f} ms | {c1r['stream_total_proxy_p50_ms']:.3f} ms | +{c1r['stream_total_added_p50_ms']:.3f} ms |",
        f"| proxy CPU per streamed chunk | | {c1r['stream_proxy_cpu_us_per_chunk']:.1f} µs | |",
        f"| c=1 `/v1/chat/completions` passthrough, p50 | {c1r['passthrough_total_direct_p50_ms']:.3f} ms | {c1r['passthrough_total_proxy_p50_ms']:.3f} ms | +{c1r['passthrough_total_added_p50_ms']:.3f} ms |",
        f"| `/api/embed`, 64 inputs, p50 | {e['direct_p50_ms']:.3f} ms | {e['proxy_p50_ms']:.3f} ms | +{e['added_p50_ms']:.3f} ms |",
        f"| idle RSS after start | | {r['idle_rss_mb']:.1f} MB | |",
    ]
    if "c64" in r:
        t: dict[str, object] = r["c64"]  # type: ignore[assignment]
        p: dict[str, float] = t["proxy"]  # type: ignore[assignment]
        d: dict[str, float] = t["direct"]  # type: ignore[assignment]
        lines += [
            f"| c=64 non-streaming `/api/chat` (wrk), requests/s | {d['rps']:.0f} | {p['rps']:.0f} | {p['rps'] / d['rps']:.2f}x |",
            f"| c=64 errors | {d['errors']:.0f} | {p['errors']:.0f} | |",
            f"| c=64 proxy CPU per request | | {t['proxy_cpu_us_per_request']:.0f} µs | |",
        ]
    lines += [
        f"| {s['streams']:.0f} concurrent streams (1 chunk / 100 ms, 10 s), 2 workers: completed / errors | | {s['completed']:.0f} / {s['errors']:.0f} | at once: {s['proxy_max_connections_held']:.0f} requests held by the proxy (sockets / 2), {s['proxy_max_streams_in_flight']:.0f} past their first line |",
        f"| same: idle, peak, after RSS (all processes) | | {s['idle_rss_mb']:.0f} / {s['peak_rss_mb']:.0f} / {s['rss_after_mb']:.0f} MB | {s['rss_per_stream_kb']:.1f} KB per stream held |",
    ]
    if "streams_held" in r:
        h: dict[str, float] = r["streams_held"]  # type: ignore[assignment]
        lines += [
            f"| {h['streams']:.0f} concurrent streams (1 chunk / s), 2 workers: completed / errors | | {h['completed']:.0f} / {h['errors']:.0f} | at once: {h['proxy_max_streams_in_flight']:.0f} streams open in the proxy, {h['max_open_at_once']:.0f} seen by the client |",
            f"| same: idle, peak, after RSS (all processes) | | {h['idle_rss_mb']:.0f} / {h['peak_rss_mb']:.0f} / {h['rss_after_mb']:.0f} MB | {h['rss_per_stream_kb']:.1f} KB per stream held |",
        ]
    lines.append("")
    if "c64" in r:
        lines += ["![latency vs concurrency](performance.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
