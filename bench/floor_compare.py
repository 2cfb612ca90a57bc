"""The proxy beside the floor and the direct path, at concurrency 1, in one run.

Starts bench/upstream.py, bench/floor.py (a bare uvicorn app making the same aiohttp call, no
proxy features) and the proxy (the real command), then alternates blocks of 50 non-streaming
chats between the three, the order rotating (harness.py), so that machine drift affects them
alike. Prints the added p50 latency and the CPU per request of the floor and of the proxy: the
difference is what the proxy's own work costs, the floor what uvicorn + aiohttp cost before it
does anything. (`make bench` now has these rows, on both floors: run.py.)
Usage: python bench/floor_compare.py [REQUESTS=3000]   (BENCH_LOG_LEVEL as in latency.py)
"""

from __future__ import annotations

import sys

from harness import (
    Block,
    c1_round,
    free_port,
    p50_ms,
    start_floor,
    start_proxy,
    start_upstream,
    stop,
    wait,
)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    ports = {"direct": free_port(), "floor": free_port(), "proxy": free_port()}
    up = ports["direct"]
    procs = [start_upstream(up), start_floor(up, ports["floor"], "aiohttp")]
    procs.append(start_proxy(up, ports["proxy"]))
    pids = {"floor": procs[1].pid, "proxy": procs[2].pid}
    try:
        for port in ports.values():
            wait(port)
        c1_round(0, list(ports), ports, pids, {"chat": 300})  # warm-up
        blocks: dict[str, list[Block]] = {name: [] for name in ports}
        for r in range(n // 50):
            for name, block in c1_round(r, list(ports), ports, pids, {"chat": 50})["chat"].items():
                blocks[name].append(block)
        p50 = {name: p50_ms(b) for name, b in blocks.items()}
        for name in pids:
            cpu = sum(b.cpu_s or 0.0 for b in blocks[name]) / (n // 50 * 50)
            print(
                f"{name}: added p50 {p50[name] - p50['direct']:.3f} ms "
                f"(direct {p50['direct']:.3f} ms), CPU {cpu * 1e6:.0f} us/request"
            )
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
