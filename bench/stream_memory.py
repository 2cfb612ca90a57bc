"""Memory per open stream (issue #18: at most 20 KB), and where it goes.

Starts bench/upstream.py (100 chunks, 1 s apart) and one proxy process, opens 30 streams and
drops them (the first stream's imports and pools), then holds STREAMS streamed ``/api/chat``
requests open, each read as it comes, and prints the proxy's RSS growth per stream held.

With ``--trace`` the proxy runs with tracemalloc, started after the warm-up (so only what the
streams allocate is traced) and read with every stream held: Python-heap bytes per stream,
grouped by the innermost frame of the project's code (``ollama_openai_bridge/...:line``), or of
the library where none is (the C parts of uvloop and httptools count there too). RSS is then
inflated by tracemalloc's own bookkeeping: read it from a run without ``--trace``.

Usage: python bench/stream_memory.py [STREAMS] [--allocator pymalloc|jemalloc] [--trace [TOP]]
(defaults: 1,000 streams, pymalloc). Not a test: nothing here runs in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
BODY = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]})
REQUEST = (
    f"POST /api/chat HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    f"Content-Length: {len(BODY)}\r\n\r\n{BODY}"
).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def traced_proxy(snapshot: str) -> None:
    """The proxy command in this process: SIGUSR1 starts tracemalloc, SIGUSR2 writes a snapshot
    to ``snapshot`` (then touches the same name with the suffix ``.done``)."""
    import gc  # noqa: PLC0415

    def start(*_: object) -> None:
        gc.collect()
        tracemalloc.start(12)

    def dump(*_: object) -> None:
        gc.collect()
        tracemalloc.take_snapshot().dump(snapshot)
        Path(snapshot).with_suffix(".done").touch()

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, dump)
    from ollama_openai_bridge.cli import main  # noqa: PLC0415

    sys.exit(main([]))


async def one(port: int, first: asyncio.Event, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    got = b""
    while b'"content"' not in got:  # the first line has come
        data = await reader.read(65536)
        if not data:
            raise RuntimeError(f"the stream ended early: {got[:300]!r}")
        got += data
    first.set()

    async def drain() -> None:
        while await reader.read(65536):
            pass

    draining = asyncio.ensure_future(drain())
    await stop.wait()
    draining.cancel()
    writer.close()


async def hold(port: int, n: int) -> tuple[asyncio.Event, list[asyncio.Future[None]]]:
    stop = asyncio.Event()
    firsts = [asyncio.Event() for _ in range(n)]
    tasks = []
    for i, first in enumerate(firsts):
        tasks.append(asyncio.ensure_future(one(port, first, stop)))
        if i % 200 == 199:
            await asyncio.sleep(0.2)  # not one SYN burst
    await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 120)
    return stop, tasks


def report(snapshot: str, n: int, top: int) -> None:
    snap = tracemalloc.Snapshot.load(snapshot)
    size: Counter[str] = Counter()
    blocks: Counter[str] = Counter()
    for _, nbytes, frames, *_rest in snap.traces._traces:  # (domain, size, frames, ...)
        where = next((f for f in frames if "ollama_openai_bridge" in f[0]), frames[0])
        key = f"{where[0].split('site-packages/')[-1].split('/src/')[-1]}:{where[1]}"
        size[key] += nbytes
        blocks[key] += 1
    print(f"tracemalloc: {sum(size.values()) / n:,.0f} B per stream held")
    for key, nbytes in size.most_common(top):
        print(f"{nbytes / n:8.0f} B {blocks[key] / n:6.2f} blocks  {key}")


def wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.5)


async def session(args: argparse.Namespace, pid: int, port: int, snapshot: Path) -> None:
    """Warm up, hold the streams, measure; the processes are the caller's."""
    await asyncio.sleep(6)  # the proxy's start
    stop, tasks = await hold(port, 30)  # warm-up: imports, pools, first-use caches
    stop.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(3)
    if args.trace:
        os.kill(pid, signal.SIGUSR1)
        await asyncio.sleep(2)
    before = rss_kb(pid)
    stop, tasks = await hold(port, args.streams)
    await asyncio.sleep(2.5)
    held = rss_kb(pid)
    allocator = "pymalloc" if args.trace else args.allocator
    print(
        f"{args.streams} streams held ({allocator}): RSS {before:,} -> {held:,} kB, "
        f"{(held - before) / args.streams:.2f} KB per stream"
    )
    if args.trace:
        os.kill(pid, signal.SIGUSR2)
        await asyncio.to_thread(wait_for, snapshot.with_suffix(".done"))
    stop.set()
    await asyncio.gather(*tasks)


def measure(args: argparse.Namespace) -> None:
    up_port, port = free_port(), free_port()
    env = {
        **os.environ,
        "OPENAI_API_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
        "PROXY_PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "MEMORY_ALLOCATOR": "pymalloc" if args.trace else args.allocator,
        "MAX_CONCURRENT_REQUESTS": str(args.streams * 2),
        "MAX_CLIENT_CONNECTIONS_PER_IP": "0",
    }
    scratch = Path(tempfile.mkdtemp(prefix="stream-memory-"))
    snapshot = scratch / "streams.tracemalloc"
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "upstream.py"), str(up_port), "100", "1.0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # the streams cut at the end: writes to closed sockets
    )
    command = [sys.executable, __file__, "--serve", str(snapshot)]
    proxy = subprocess.Popen(
        command if args.trace else [sys.executable, "-m", "ollama_openai_bridge"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(session(args, proxy.pid, port, snapshot))
        if args.trace:
            report(str(snapshot), args.streams, args.trace)
    finally:
        for process in (proxy, upstream):
            process.terminate()
            process.wait(30)
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        traced_proxy(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("streams", nargs="?", type=int, default=1000)
    parser.add_argument("--allocator", choices=("pymalloc", "jemalloc"), default="pymalloc")
    parser.add_argument("--trace", nargs="?", type=int, const=30, default=0, metavar="TOP")
    measure(parser.parse_args())


if __name__ == "__main__":
    main()
