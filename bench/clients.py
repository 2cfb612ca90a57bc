"""The two backend clients, proxy and floor, in one run (issue #18).

Starts bench/upstream.py (100-chunk streams), two floors (bench/floor.py: a bare uvicorn app
making the same call through aiohttp, and through ollama_openai_bridge.http1, the minimal client)
and two proxies (the real command, UPSTREAM_HTTP_CLIENT=aiohttp and http1). Then, in ROUNDS
rounds, each variant in turn (the order rotates every round, so drift on a shared machine falls
on all alike):

- c=1 non-streamed chat: ``/api/chat`` ``stream: false`` (direct: the upstream's own
  ``/v1/chat/completions``), a block of 50: added p50 against direct, CPU per request;
- c=1 stream: ``/api/chat`` streamed (100 content chunks), a block of 20: added time to first
  byte, CPU per chunk (per stream / 100);
- c=1 ``/v1/chat/completions`` passthrough, a block of 50: added p50, CPU per request;
- c=64 non-streamed chat with wrk, 3 s each: CPU per request.

CPU is the server process's time on a CPU (its threads' schedstat, in ns). Prints, per figure, the minimum and the
median over the rounds, and the ratios against the http1 floor (the target of issue #18: the
proxy on http1 within 1.5x of it, /v1 within 1.3x); writes bench/results/clients.json.
Usage: python bench/clients.py [ROUNDS=5]   (run from the repository root; PYTHONPATH=src for a
checkout that is not installed; BENCH_BASE=/path/to/an/older/checkout adds its proxy)
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from latency import free_port, timed, wait

HERE = Path(__file__).resolve().parent
MSGS = [{"role": "user", "content": "Say hello"}]
OLLAMA_CHAT = json.dumps({"model": "bench-model", "messages": MSGS, "stream": False}).encode()
OLLAMA_STREAM = json.dumps({"model": "bench-model", "messages": MSGS}).encode()
OPENAI_CHAT = json.dumps({"model": "bench-model", "messages": MSGS}).encode()
OPENAI_STREAM = json.dumps(
    {
        "model": "bench-model",
        "messages": MSGS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()
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
CHUNKS = 100


def cpu_seconds(pid: int) -> float:
    """CPU time of a process's threads, from the scheduler's nanosecond counters
    (/proc/PID/task/*/schedstat): /proc/PID/stat counts 10 ms ticks, too coarse for a block."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def start(up: int) -> tuple[dict[str, int], dict[str, int], list[subprocess.Popen[bytes]]]:
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([sys.executable, str(HERE / "upstream.py"), str(up), str(CHUNKS)])]
    ports = {"direct": up}
    pids: dict[str, int] = {}
    chat_url = f"http://127.0.0.1:{up}/v1/chat/completions"
    for name in SERVERS:
        port = ports[name] = free_port()
        kind, client = name.split("-")
        if kind == "floor":
            cmd = [sys.executable, str(HERE / "floor.py"), chat_url, str(port), client]
            proc = subprocess.Popen(cmd, **quiet)  # type: ignore[call-overload]
        else:
            env = {
                **os.environ,
                "OPENAI_API_BASE_URL": f"http://127.0.0.1:{up}/v1",
                "OPENAI_API_KEY": "bench",
                "PROXY_PORT": str(port),
                "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
                "MAX_RETRIES": "0",
                "UPSTREAM_HTTP_CLIENT": client,
            }
            cwd = HERE
            module = "ollama_openai_bridge"
            if kind == "base" and BASE:
                env["PYTHONPATH"] = str(Path(BASE) / "src")
                cwd = Path(BASE) / "bench"
                if not (Path(BASE) / "src" / module).is_dir():  # a checkout from before the rename
                    module = "ollama_openai_proxy"
            proc = subprocess.Popen(  # type: ignore[call-overload]
                [sys.executable, "-m", module], env=env, cwd=cwd, **quiet
            )
        procs.append(proc)
        pids[name] = proc.pid
    for port in ports.values():
        wait(port)
    return ports, pids, procs


def request(case: str, variant: str) -> tuple[str, bytes]:
    if variant == "direct":
        return "/v1/chat/completions", OPENAI_STREAM if case == "stream" else OPENAI_CHAT
    if case == "v1":
        return "/v1/chat/completions", OPENAI_CHAT
    return "/api/chat", OLLAMA_STREAM if case == "stream" else OLLAMA_CHAT


def wrk(port: int, seconds: int) -> int:
    """Requests completed by wrk at 64 connections against the non-streamed chat."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        body = OLLAMA_CHAT.decode()
        f.write(
            f"wrk.method = 'POST'\nwrk.body = '{body}'\n"
            "wrk.headers['Content-Type'] = 'application/json'\n"
        )
    url = f"http://127.0.0.1:{port}/api/chat"
    # bandit B607: wrk is found on PATH on purpose (bench/README.md: the developer's own
    # install); the arguments are a list, no shell.
    out = subprocess.run(  # nosec B607
        ["wrk", "-t1", "-c64", f"-d{seconds}s", "-s", f.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)
    found = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if found is None or errors is not None:
        raise RuntimeError(f"wrk against {port}: {out}")
    return int(found.group(1))


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5

    ports, pids, procs = start(free_port())
    variants = ("direct", *SERVERS)
    conns = {v: http.client.HTTPConnection("127.0.0.1", ports[v]) for v in variants}
    # per round: figure -> variant -> value
    runs: list[dict[str, dict[str, float]]] = []
    try:
        for case in ("chat", "stream", "v1"):  # warm-up
            for v in variants:
                for _ in range(100 if case != "stream" else 20):
                    timed(conns[v], *request(case, v))
        for v in SERVERS:
            wrk(ports[v], 1)
        for r in range(rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            figures: dict[str, dict[str, float]] = {}
            for case, block in (("chat", 50), ("stream", 20), ("v1", 50)):
                p50: dict[str, float] = {}
                ttfb: dict[str, float] = {}
                for v in order:
                    # a new connection, opened outside the block: an idle one may have expired
                    conns[v].close()
                    conns[v] = http.client.HTTPConnection("127.0.0.1", ports[v])
                    timed(conns[v], *request(case, v))
                    before = cpu_seconds(pids[v]) if v in pids else 0.0
                    samples = [timed(conns[v], *request(case, v)) for _ in range(block)]
                    if v in pids:
                        cpu = (cpu_seconds(pids[v]) - before) / block * 1e6
                        per = cpu / CHUNKS if case == "stream" else cpu
                        unit = "cpu_us_per_chunk" if case == "stream" else "cpu_us_per_request"
                        figures.setdefault(f"{case}_{unit}", {})[v] = per
                    p50[v] = statistics.median(s[1] for s in samples) * 1000
                    ttfb[v] = statistics.median(s[0] for s in samples) * 1000
                for v in SERVERS:
                    if case == "stream":
                        figures.setdefault("stream_added_ttfb_ms", {})[v] = ttfb[v] - ttfb["direct"]
                        figures.setdefault("stream_ttfb_ms", {})[v] = ttfb[v]
                    else:
                        figures.setdefault(f"{case}_added_p50_ms", {})[v] = p50[v] - p50["direct"]
            for v in order:
                if v == "direct":
                    continue
                before = cpu_seconds(pids[v])
                done = wrk(ports[v], 3)
                figures.setdefault("c64_cpu_us_per_request", {})[v] = (
                    (cpu_seconds(pids[v]) - before) / done * 1e6
                )
            runs.append(figures)
            print(f"round {r + 1}/{rounds} done, load {os.getloadavg()[0]:.1f}", flush=True)
            time.sleep(1)
    finally:
        for c in conns.values():
            c.close()
        for proc in procs:
            proc.terminate()
            proc.wait(10)
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
