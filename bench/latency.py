"""Added latency of the proxy at concurrency 1, against calling the upstream directly, in one run.

Starts bench/upstream.py and the proxy (the real `ollama-openai-bridge` command) on loopback, then
alternates blocks of requests between the two paths so both see the same machine state:
  direct: POST /v1/chat/completions to the upstream (OpenAI body)
  proxy:  POST /api/chat to the proxy (Ollama body, stream false; the proxy calls the same upstream)
  direct-stream / proxy-stream: the same with a 100-chunk stream, time to first byte and to the end.
Prints a table and writes JSON to bench/results/latency.json.
Usage: python bench/latency.py [REQUESTS]   (default 2000 per path)
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def timed(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[float, float]:
    """(time to first body byte, total) in seconds for one request on a kept-alive connection."""
    t0 = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    first = resp.read(1)
    t1 = time.perf_counter()
    rest = resp.read()
    t2 = time.perf_counter()
    if resp.status != 200 or not (first + rest):
        raise RuntimeError(f"{path}: HTTP {resp.status}: {(first + rest)[:200]!r}")
    return t1 - t0, t2 - t0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    up_port, proxy_port = free_port(), free_port()
    procs = [subprocess.Popen([sys.executable, str(HERE / "upstream.py"), str(up_port), "100"])]
    env = {
        **os.environ,
        "OPENAI_API_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
        "OPENAI_API_KEY": "bench",
        "PROXY_PORT": str(proxy_port),
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        "MAX_RETRIES": "0",
    }
    procs.append(
        subprocess.Popen(
            [sys.executable, "-m", "ollama_openai_bridge"],
            env=env,
            cwd=HERE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    try:
        wait(up_port)
        wait(proxy_port)
        direct = http.client.HTTPConnection("127.0.0.1", up_port)
        proxy = http.client.HTTPConnection("127.0.0.1", proxy_port)
        msgs = [{"role": "user", "content": "Say hello"}]
        cases = {
            "chat": (
                (
                    direct,
                    "/v1/chat/completions",
                    json.dumps({"model": "bench-model", "messages": msgs}).encode(),
                ),
                (
                    proxy,
                    "/api/chat",
                    json.dumps(
                        {"model": "bench-model", "messages": msgs, "stream": False}
                    ).encode(),
                ),
            ),
            "stream": (
                (
                    direct,
                    "/v1/chat/completions",
                    json.dumps(
                        {
                            "model": "bench-model",
                            "messages": msgs,
                            "stream": True,
                            "stream_options": {"include_usage": True},
                        }
                    ).encode(),
                ),
                (
                    proxy,
                    "/api/chat",
                    json.dumps({"model": "bench-model", "messages": msgs}).encode(),
                ),
            ),
        }
        results: dict[str, dict[str, float]] = {}
        cpu_us: dict[str, float] = {}
        for name, (d, p) in cases.items():
            for _ in range(200):  # warm-up both paths
                timed(*d)
                timed(*p)
            samples: dict[str, list[tuple[float, float]]] = {"direct": [], "proxy": []}
            block = 50
            proxy_cpu = 0.0
            for _ in range(n // block):  # alternate blocks so drift hits both paths alike
                samples["direct"] += [timed(*d) for _ in range(block)]
                before = cpu_seconds(procs[1].pid)
                samples["proxy"] += [timed(*p) for _ in range(block)]
                proxy_cpu += cpu_seconds(procs[1].pid) - before
            cpu_us[name] = proxy_cpu / len(samples["proxy"]) * 1e6
            for path, vals in samples.items():
                total = [v[1] * 1000 for v in vals]
                first = [v[0] * 1000 for v in vals]
                results[f"{name}/{path}"] = {
                    "p50_ms": statistics.median(total),
                    "p99_ms": pct(total, 99),
                    "ttfb_p50_ms": statistics.median(first),
                    "ttfb_p99_ms": pct(first, 99),
                    "n": len(vals),
                }
        print(f"{'case':<16}{'p50 ms':>10}{'p99 ms':>10}{'ttfb p50':>10}{'ttfb p99':>10}")
        for key, r in results.items():
            print(
                f"{key:<16}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}{r['ttfb_p50_ms']:>10.3f}{r['ttfb_p99_ms']:>10.3f}"
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
        for proc in procs:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
