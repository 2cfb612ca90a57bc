"""Load test: many concurrent streams against a backend that fails on purpose.

Starts bench/upstream.py (CHUNKS chunks per stream, DELAY s apart, BENCH_FAIL_RATE of requests
failing: half with a 500 before the stream, half cut in the middle of it) and the proxy (the real
command, default settings), then keeps CONCURRENCY streaming /api/chat requests open for DURATION
seconds. Every answer is classified:
  complete -- a done line, and exactly the text the upstream sent (nothing lost or duplicated);
  error    -- a clear error: an HTTP error status with {"error": "..."}, or text that is a prefix
              of what the upstream sent followed by one {"error": "..."} line and no done line;
  bad      -- anything else (a malformed line, a hang, a connection failure).
The proxy's RSS is sampled from /proc before, during and after: "after" is read once the proxy is
idle again (its pooled backend connections closed, at most 60 s). Two rounds are run back to back,
to tell memory kept for reuse from memory leaked. The proxy runs with its default settings, so on
jemalloc when that is installed (MEMORY_ALLOCATOR=auto); pass MEMORY_ALLOCATOR=pymalloc in the
environment to compare, or MEMORY_RECYCLE_ABOVE_MB=10 to have a worker that stays above its
starting size replaced once idle. Loopback only; bounded in time.
Usage: python bench/load.py [CONCURRENCY=1000] [DURATION=60] [FAIL_RATE=0.05]
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from harness import UPSTREAM_KEY, free_port

HERE = Path(__file__).resolve().parent
CHUNKS, DELAY = 20, 0.05
EXPECTED = "".join(f"tok{i} " for i in range(CHUNKS))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def settle(pid: int, idle_fds: int, limit: float = 60.0) -> float:
    """Wait until the proxy holds no more sockets than when idle (aiohttp closes pooled backend
    connections after 15 s unused), then a little longer; returns the seconds waited."""
    started = time.monotonic()
    while fds(pid) > idle_fds and time.monotonic() - started < limit:  # noqa: ASYNC110 -- polls /proc
        await asyncio.sleep(1)
    await asyncio.sleep(3)
    return time.monotonic() - started


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing on port {port}")


async def one(session: aiohttp.ClientSession, url: str) -> str:
    body = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=60)) as resp:
            raw = await resp.read()
            if resp.status != 200:
                return "error" if isinstance(json.loads(raw).get("error"), str) else "bad"
            lines = [json.loads(x) for x in raw.decode().split("\n")[:-1]]
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return "bad"
    text = "".join(x.get("message", {}).get("content", "") for x in lines)
    last = lines[-1] if lines else {}
    if (
        last.get("done") is True
        and text == EXPECTED
        and sum(1 for x in lines if x.get("done")) == 1
    ):
        return "complete"
    if (
        isinstance(last.get("error"), str)
        and EXPECTED.startswith(text)
        and not any(x.get("done") for x in lines)
    ):
        return "error"
    return "bad"


async def run(concurrency: int, duration: float, proxy_url: str, pid: int) -> dict[str, object]:
    counts = {"complete": 0, "error": 0, "bad": 0}
    peak = 0.0
    deadline = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.monotonic() < deadline:
                counts[await one(session, proxy_url + "/api/chat")] += 1

        async def sampler() -> None:
            nonlocal peak
            while time.monotonic() < deadline:
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.5)

        await asyncio.gather(sampler(), *(worker() for _ in range(concurrency)))
    return {**counts, "peak_rss_mb": round(peak, 1)}


async def main() -> None:
    concurrency = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    duration = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    fail_rate = sys.argv[3] if len(sys.argv) > 3 else "0.05"
    up_port, proxy_port = free_port(), free_port()
    env = {**os.environ, "BENCH_FAIL_RATE": fail_rate}
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "upstream.py"), str(up_port), str(CHUNKS), str(DELAY)], env=env
    )
    proxy_env = {
        **os.environ,
        "OPENAI_API_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
        "OPENAI_API_KEY": UPSTREAM_KEY,  # harness.py: not a word of the answers
        "PROXY_PORT": str(proxy_port),
        "LOG_LEVEL": "WARNING",
        # one address holds CONCURRENCY streams: no per-address share (default 1,024)
        "MAX_CLIENT_CONNECTIONS_PER_IP": "0",
    }
    proxy = subprocess.Popen(
        [sys.executable, "-m", "ollama_openai_bridge"],
        env=proxy_env,
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_port(up_port)
        await wait_port(proxy_port)
        url = f"http://127.0.0.1:{proxy_port}"
        idle_fds = fds(proxy.pid)
        async with aiohttp.ClientSession() as s:  # warm-up
            for _ in range(50):
                await one(s, url + "/api/chat")
        async with aiohttp.ClientSession() as s, s.get(url + "/v1/version") as r:
            allocator = (await r.json())["allocator"]
        await settle(proxy.pid, idle_fds)
        baseline = rss_mb(proxy.pid)
        rounds = []
        # Two identical rounds: a leak shows as the second round ending above the first; memory
        # an allocator keeps for reuse (CPython's arenas, without jemalloc) shows as both rounds
        # ending at the same figure above the idle one.
        for _ in range(2):
            started = time.monotonic()
            result = await run(concurrency, duration, url, proxy.pid)
            elapsed = time.monotonic() - started
            waited = await settle(proxy.pid, idle_fds)
            total = result["complete"] + result["error"] + result["bad"]  # type: ignore[operator]
            rounds.append(
                {
                    "duration_s": round(elapsed, 1),
                    "requests": total,
                    "requests_per_s": round(total / elapsed, 1),
                    **result,
                    "rss_after_mb": round(rss_mb(proxy.pid), 1),
                    "idle_wait_s": round(waited, 1),
                }
            )
        report = {
            "concurrency": concurrency,
            "fail_rate": float(fail_rate),
            "allocator": allocator,
            "baseline_rss_mb": round(baseline, 1),
            "rounds": rounds,
        }
        print(json.dumps(report, indent=1))
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        (out / "load.json").write_text(json.dumps(report, indent=1))
    finally:
        for p in (proxy, upstream):
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
