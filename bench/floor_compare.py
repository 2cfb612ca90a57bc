"""The proxy beside the floor and the direct path, at concurrency 1, in one run.

Starts bench/upstream.py, bench/floor.py (a bare uvicorn app making the same aiohttp call, no
proxy features) and the proxy (the real command), then alternates blocks of 50 non-streaming
chats between the three, so that machine drift affects them alike. Prints the added p50 latency
and the CPU per request of the floor and of the proxy: the difference is what the proxy's own
work costs, the floor what uvicorn + aiohttp cost before it does anything.
Usage: python bench/floor_compare.py [REQUESTS=3000]   (BENCH_LOG_LEVEL as in latency.py)
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from latency import cpu_seconds, free_port, timed, wait

HERE = Path(__file__).resolve().parent


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    up, floor, proxy = free_port(), free_port(), free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen([sys.executable, str(HERE / "upstream.py"), str(up), "100"], **quiet),
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "floor.py"),
                f"http://127.0.0.1:{up}/v1/chat/completions",
                str(floor),
            ],
            **quiet,
        ),
    ]
    env = {
        **os.environ,
        "OPENAI_API_BASE_URL": f"http://127.0.0.1:{up}/v1",
        "OPENAI_API_KEY": "bench",
        "PROXY_PORT": str(proxy),
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        "MAX_RETRIES": "0",
    }
    procs.append(
        subprocess.Popen([sys.executable, "-m", "ollama_openai_bridge"], env=env, cwd=HERE, **quiet)
    )
    try:
        for port in (up, floor, proxy):
            wait(port)
        msgs = [{"role": "user", "content": "Say hello"}]
        ollama = json.dumps({"model": "bench-model", "messages": msgs, "stream": False}).encode()
        paths = {
            "direct": (
                http.client.HTTPConnection("127.0.0.1", up),
                "/v1/chat/completions",
                json.dumps({"model": "bench-model", "messages": msgs}).encode(),
            ),
            "floor": (http.client.HTTPConnection("127.0.0.1", floor), "/api/chat", ollama),
            "proxy": (http.client.HTTPConnection("127.0.0.1", proxy), "/api/chat", ollama),
        }
        pids = {"floor": procs[1].pid, "proxy": procs[2].pid}
        for _ in range(300):  # warm-up
            for args in paths.values():
                timed(*args)
        samples: dict[str, list[float]] = {name: [] for name in paths}
        cpu = dict.fromkeys(pids, 0.0)
        for _ in range(n // 50):
            for name, args in paths.items():
                before = cpu_seconds(pids[name]) if name in pids else 0.0
                samples[name] += [timed(*args)[1] for _ in range(50)]
                if name in pids:
                    cpu[name] += cpu_seconds(pids[name]) - before
        p50 = {name: statistics.median(v) * 1000 for name, v in samples.items()}
        for name in ("floor", "proxy"):
            print(
                f"{name}: added p50 {p50[name] - p50['direct']:.3f} ms "
                f"(direct {p50['direct']:.3f} ms), CPU {cpu[name] / len(samples[name]) * 1e6:.0f} "
                "us/request"
            )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
