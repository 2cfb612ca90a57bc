"""Least outstanding vs round robin across three replicas of one model, one of them slow.

Three fake replicas (subprocesses of this script, aiohttp): each serves SLOTS requests at a time
(an inference server's batch) and queues the rest; two answer in FAST_MS, one in SLOW_MS. The
proxy (the real ``ollama-openai-bridge`` command) fronts them as one upstream with ``base_urls``,
once per strategy. Requests arrive open-loop (Poisson, a fixed seed, so both strategies see the
same arrivals) at RATE per second for SECONDS: an open loop shows the queue a strategy builds at
a slow replica, which a closed loop of clients would hide by slowing down with it.

Prints p50/p90/p99/max of the client's latency (non-streaming ``/api/chat``) and each replica's
share of the calls (from the proxy's ``ollama_proxy_replica_requests_total``); writes
bench/results/balance.json.

Usage: python bench/balance.py [RATE] [SECONDS]   (default 100 per second for 8 s)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import free_port, pct, wait

HERE = Path(__file__).resolve().parent
FAST_MS, SLOW_MS, SLOTS = 20, 200, 4
REPLICAS = (("fast-a", FAST_MS), ("fast-b", FAST_MS), ("slow", SLOW_MS))
STRATEGIES = ("weighted_round_robin", "least_outstanding")  # equal weights: plain round robin
MODEL = "bench-model"


# --- a replica ----------------------------------------------------------------------------------


def replica(port: int, service_ms: int) -> None:
    """Serve ``/v1/models`` and ``/v1/chat/completions`` on ``port``: SLOTS at a time, each
    taking ``service_ms``; the others wait their turn."""
    from aiohttp import web  # noqa: PLC0415 -- the replica subprocess only

    slots = asyncio.Semaphore(SLOTS)
    answer = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1767000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        async with slots:
            await asyncio.sleep(service_ms / 1000)
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- the load -----------------------------------------------------------------------------------


async def load(proxy_port: int, rate: float, seconds: float) -> list[float]:
    """Open-loop Poisson arrivals: the latency (s) of every request, all answered 200."""
    import aiohttp  # noqa: PLC0415 -- the driver only

    rng = random.Random(20)  # the same arrivals for every strategy
    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    ).encode()
    url = f"http://127.0.0.1:{proxy_port}/api/chat"
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            started = time.perf_counter()
            async with session.post(url, data=body) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")
            latencies.append(time.perf_counter() - started)

        for _ in range(20):  # warm up: connections, model list
            await one()
        latencies.clear()
        tasks = []
        start = time.perf_counter()
        at = 0.0
        while at < seconds:
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
            at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
    return latencies


def shares(proxy_port: int) -> dict[str, int]:
    import urllib.request  # noqa: PLC0415

    url = f"http://127.0.0.1:{proxy_port}/metrics"
    # bandit B310: the URL is built above, http:// on loopback; no scheme comes from outside.
    text = urllib.request.urlopen(url).read().decode()  # nosec B310
    out: dict[str, int] = {}
    for name, count in re.findall(
        r'ollama_proxy_replica_requests_total\{outcome="success",replica="([^"]+)",'
        r'upstream="bench"\} ([0-9.e+]+)',
        text,
    ):
        out[name] = int(float(count))
    return out


def run(strategy: str, ports: list[int], rate: float, seconds: float) -> dict[str, Any]:
    proxy_port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        upstreams = Path(tmp) / "upstreams.json"
        upstreams.write_text(
            json.dumps(
                {
                    "upstreams": [
                        {
                            "name": "bench",
                            "base_urls": [
                                {"url": f"http://127.0.0.1:{p}/v1", "name": n}
                                for p, (n, _) in zip(ports, REPLICAS, strict=True)
                            ],
                            "balance": strategy,
                        }
                    ]
                }
            )
        )
        env = {
            **os.environ,
            "UPSTREAMS_FILE": str(upstreams),
            "PROXY_PORT": str(proxy_port),
            "LOG_LEVEL": "WARNING",
            "MAX_RETRIES": "0",
            "ENABLE_METRICS": "true",
        }
        proxy = subprocess.Popen(
            [sys.executable, "-m", "ollama_openai_bridge"],
            env=env,
            cwd=HERE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait(proxy_port)
            latencies = asyncio.run(load(proxy_port, rate, seconds))
            by_replica = shares(proxy_port)
        finally:
            proxy.terminate()
            proxy.wait(20)
    ms = [v * 1000 for v in latencies]
    return {
        "strategy": strategy,
        "requests": len(ms),
        "p50_ms": round(pct(ms, 50), 1),
        "p90_ms": round(pct(ms, 90), 1),
        "p99_ms": round(pct(ms, 99), 1),
        "max_ms": round(max(ms), 1),
        "calls_per_replica": by_replica,
    }


def main() -> None:
    if sys.argv[1:2] == ["--replica"]:
        replica(int(sys.argv[2]), int(sys.argv[3]))
        return
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 100.0
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 8.0
    ports = [free_port() for _ in REPLICAS]
    backends = [
        subprocess.Popen([sys.executable, __file__, "--replica", str(p), str(ms)])
        for p, (_, ms) in zip(ports, REPLICAS, strict=True)
    ]
    try:
        for p in ports:
            wait(p)
        results = [run(s, ports, rate, seconds) for s in STRATEGIES]
    finally:
        for b in backends:
            b.terminate()
            b.wait(10)
    print(
        f"{len(REPLICAS)} replicas, {SLOTS} slots each, {FAST_MS}/{FAST_MS}/{SLOW_MS} ms; "
        f"{rate:g} requests/s open-loop for {seconds:g} s"
    )
    print(f"{'strategy':<22} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  calls per replica")
    for r in results:
        print(
            f"{r['strategy']:<22} {r['p50_ms']:>7.1f}ms {r['p90_ms']:>7.1f}ms "
            f"{r['p99_ms']:>7.1f}ms {r['max_ms']:>7.1f}ms  {r['calls_per_replica']}"
        )
    out = HERE / "results" / "balance.json"
    out.parent.mkdir(exist_ok=True)
    meta = {"rate": rate, "seconds": seconds, "slots": SLOTS, "replicas": dict(REPLICAS)}
    out.write_text(json.dumps({"setup": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
