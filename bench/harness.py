"""What the benchmark scripts share: the request bodies, the upstream, the floor and the proxy
started as subprocesses, one timed request, CPU from the scheduler's counters, wrk, and the
rounds that put several servers side by side in one run with their order rotating (issue #18:
the proxy beside the bare-stack floor, so that drift on a shared machine falls on both alike).

Variants are named by what answers: ``direct`` (bench/upstream.py itself, OpenAI bodies),
``floor-aiohttp`` / ``floor-http1`` (bench/floor.py on that client), ``proxy`` or
``proxy-<client>`` / ``base-<client>`` (the real command). Every server but ``direct`` has a
process whose CPU is read around each block.
Imported by the scripts next to it (``python bench/X.py`` puts bench/ on sys.path).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHUNKS = 100  # content chunks per stream of bench/upstream.py, unless told otherwise
# The short stream (case "stream1"): bench/upstream.py sends N chunks for model bench-model-N.
# CPU per chunk is the difference between the two lengths over the chunks between them, so
# that what a stream costs once (the request, its head, the last line) is not counted as
# per-chunk work (issue #18 review, L4).
SHORT = 1
MSGS = [{"role": "user", "content": "Say hello"}]
OLLAMA_CHAT = json.dumps({"model": "bench-model", "messages": MSGS, "stream": False}).encode()
OLLAMA_STREAM = json.dumps({"model": "bench-model", "messages": MSGS}).encode()  # Ollama's default
OPENAI_CHAT = json.dumps({"model": "bench-model", "messages": MSGS}).encode()
OPENAI_STREAM = json.dumps(
    {
        "model": "bench-model",
        "messages": MSGS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()
OLLAMA_STREAM_SHORT = json.dumps({"model": f"bench-model-{SHORT}", "messages": MSGS}).encode()
OPENAI_STREAM_SHORT = OPENAI_STREAM.replace(b'"bench-model"', f'"bench-model-{SHORT}"'.encode())
UPSTREAM_KEY = "upstream-key-for-benchmarks"  # a fake: bench/upstream.py checks no key
QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(port: int) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``; RuntimeError after 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def timed(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[float, float]:
    """(time to first body byte, total) in seconds for one POST on a kept-alive connection;
    RuntimeError on a status other than 200 or an empty body."""
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


def pct(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def cpu_seconds(pid: int) -> float:
    """CPU time (s) of a process's threads, from the scheduler's nanosecond counters
    (/proc/PID/task/*/schedstat): /proc/PID/stat counts 10 ms ticks, too coarse for a block."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def rss_mb(pids: Iterable[int]) -> float:
    """Resident memory (MB, VmRSS) of these processes together."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


# --- the servers ---------------------------------------------------------------------------------


def start_upstream(
    port: int, chunks: int = CHUNKS, delay: float = 0.0, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """bench/upstream.py on ``port``: streams of ``chunks`` chunks ``delay`` s apart."""
    return subprocess.Popen(
        [sys.executable, str(HERE / "upstream.py"), str(port), str(chunks), str(delay)],
        env=None if env is None else dict(env),
    )


def start_floor(upstream_port: int, port: int, client: str) -> subprocess.Popen[bytes]:
    """bench/floor.py on ``port`` (``client``: aiohttp or http1) calling the upstream's chat."""
    url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    return subprocess.Popen(
        [sys.executable, str(HERE / "floor.py"), url, str(port), client],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_proxy(
    upstream_port: int,
    port: int,
    settings: Mapping[str, str] | None = None,
    cwd: Path = HERE,
    module: str = "ollama_openai_bridge",
) -> subprocess.Popen[bytes]:
    """The real command (``python -m module``) on ``port`` in front of the upstream, its output
    dropped. At the default ``LOG_LEVEL=INFO`` (``BENCH_LOG_LEVEL`` to change it) every request
    writes its access-log line, to /dev/null here. ``settings`` add to or override the
    environment (for an older checkout: its PYTHONPATH)."""
    env = {
        **os.environ,
        "OPENAI_API_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        # Not a word of the answers: the proxy redacts its backend key from everything it
        # relays, and a key that appears in every line ("bench", as in bench-model) made
        # each line pay for a replacement no real deployment pays.
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "PROXY_PORT": str(port),
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        "MAX_RETRIES": "0",
        # every load generator here is one address (127.0.0.1), and the 10,000-stream run holds
        # more than the default per-address share (1,024 per worker)
        "MAX_CLIENT_CONNECTIONS_PER_IP": "0",
    }
    # One worker writes its metrics in its own memory; an inherited multiprocess directory would
    # make it write mmap files instead (prometheus_client), which the floor never pays.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(settings or {})
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """Terminate these processes and wait for each (15 s at most)."""
    for proc in procs:
        proc.terminate()
        proc.wait(15)


# --- one request, a block of them, a round --------------------------------------------------------


def request(case: str, variant: str) -> tuple[str, bytes]:
    """(path, body) of ``case`` -- ``chat`` (non-streamed ``/api/chat``), ``stream`` (streamed
    ``/api/chat``, CHUNKS chunks), ``stream1`` (the same, SHORT chunks) or ``v1``
    (``/v1/chat/completions`` passed through) -- for ``variant``; the direct path gets the
    OpenAI request the proxy would send."""
    if variant == "direct":
        streams = {"stream": OPENAI_STREAM, "stream1": OPENAI_STREAM_SHORT}
        return "/v1/chat/completions", streams.get(case, OPENAI_CHAT)
    if case == "v1":
        return "/v1/chat/completions", OPENAI_CHAT
    streams = {"stream": OLLAMA_STREAM, "stream1": OLLAMA_STREAM_SHORT}
    return "/api/chat", streams.get(case, OLLAMA_CHAT)


def per_chunk(cpu_long_us: float, cpu_short_us: float) -> float:
    """CPU per streamed chunk (µs) from the CPU per request of a CHUNKS-chunk stream and of a
    SHORT-chunk one in the same run: the chunks between them, without the per-request part."""
    return (cpu_long_us - cpu_short_us) / (CHUNKS - SHORT)


def rotated(variants: Sequence[str], r: int) -> list[str]:
    """``variants`` starting at the ``r``-th (mod len): round ``r``'s order, so that none is
    always first after a pause or always last before one."""
    k = r % len(variants)
    return [*variants[k:], *variants[:k]]


@dataclass
class Block:
    """One variant's block of sequential requests: (time to first byte, total) seconds per
    request, and the server's CPU seconds over the block (None for the direct path)."""

    samples: list[tuple[float, float]]
    cpu_s: float | None


def c1_block(port: int, pid: int | None, case: str, variant: str, n: int) -> Block:
    """``n`` sequential requests of ``case`` to ``variant`` on ``port``, CPU of ``pid`` around
    them. On a new connection, opened outside the block: an idle one may have expired."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    try:
        timed(conn, *request(case, variant))
        before = cpu_seconds(pid) if pid is not None else 0.0
        samples = [timed(conn, *request(case, variant)) for _ in range(n)]
        cpu = cpu_seconds(pid) - before if pid is not None else None
    finally:
        conn.close()
    return Block(samples, cpu)


def c1_round(
    r: int,
    variants: Sequence[str],
    ports: Mapping[str, int],
    pids: Mapping[str, int],
    blocks: Mapping[str, int],
) -> dict[str, dict[str, Block]]:
    """Round ``r`` at concurrency 1: for each case of ``blocks`` (case -> requests per block),
    one block per variant in the round's rotated order. Returns case -> variant -> Block."""
    out: dict[str, dict[str, Block]] = {}
    for case, n in blocks.items():
        out[case] = {v: c1_block(ports[v], pids.get(v), case, v, n) for v in rotated(variants, r)}
    return out


WRK_LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, body: bytes, connections: int, seconds: float) -> dict[str, float]:
    """wrk (Debian's ``wrk``, one thread) POSTing ``body`` to ``url`` over ``connections``
    kept-alive connections for ``seconds``: requests, rps, p50_ms, p99_ms, errors (non-2xx
    answers and socket errors)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA.format(body=body.decode()))
    try:
        # bandit B607: wrk is found on PATH on purpose (bench/README.md: the developer's own
        # install); the arguments are a list, no shell.
        out = subprocess.run(  # nosec B607
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", f.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(f.name)

    def found(pattern: str) -> str:
        match = re.search(pattern, out)
        if match is None:
            raise RuntimeError(f"wrk against {url}: no {pattern!r} in {out}")
        return match.group(1)

    def ms(text: str) -> float:
        match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
        if match is None:  # wrk prints e.g. "-nan" when it has no sample
            return float("nan")
        value, unit = match.groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "requests": int(found(r"(\d+) requests in")),
        "rps": float(found(r"Requests/sec:\s+([\d.]+)")),
        "p50_ms": ms(found(r"50%\s+(\S+)")),
        "p99_ms": ms(found(r"99%\s+(\S+)")),
        "errors": (int(errors.group(1)) if errors else 0)
        + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
    }


def wrk_round(
    r: int,
    variants: Sequence[str],
    ports: Mapping[str, int],
    pids: Mapping[str, int],
    seconds: float,
    connections: int = 64,
) -> dict[str, dict[str, float]]:
    """Round ``r`` of wrk on the non-streamed chat, one run per variant in the rotated order:
    variant -> wrk's figures plus ``cpu_s``, the server's CPU seconds over the run (absent for
    the direct path)."""
    out: dict[str, dict[str, float]] = {}
    for v in rotated(variants, r):
        path, body = request("chat", v)
        pid = pids.get(v)
        before = cpu_seconds(pid) if pid is not None else 0.0
        out[v] = wrk(f"http://127.0.0.1:{ports[v]}{path}", body, connections, seconds)
        if pid is not None:
            out[v]["cpu_s"] = cpu_seconds(pid) - before
    return out


def p50_ms(blocks: Iterable[Block], which: int = 1) -> float:
    """Median (ms) over every request of these blocks: ``which`` 1 the total time, 0 the time
    to first byte."""
    return statistics.median(s[which] for b in blocks for s in b.samples) * 1000


def pooled(blocks: Sequence[Block]) -> dict[str, float]:
    """One variant's blocks together: p50_ms, p99_ms, ttfb_p50_ms, ttfb_p99_ms over every
    request, n (requests), and cpu_us_per_request (all its CPU / n; absent for direct)."""
    total = [s[1] * 1000 for b in blocks for s in b.samples]
    first = [s[0] * 1000 for b in blocks for s in b.samples]
    out = {
        "p50_ms": statistics.median(total),
        "p99_ms": pct(total, 99),
        "ttfb_p50_ms": statistics.median(first),
        "ttfb_p99_ms": pct(first, 99),
        "n": len(total),
    }
    if all(b.cpu_s is not None for b in blocks):
        out["cpu_us_per_request"] = sum(b.cpu_s or 0.0 for b in blocks) / len(total) * 1e6
    return out
