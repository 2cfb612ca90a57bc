"""MEMORY_RECYCLE_ABOVE_MB through the real command: after a burst and the idle period, a worker
whose memory stayed up is replaced by a fresh process on the same listening socket, and a client
arriving meanwhile waits instead of being refused."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from tests.fake_upstream import FakeUpstream
from tests.integration.test_cli import Running, base_env, self_signed

CHAT = {
    "model": "gpt-4o-mini",
    "stream": False,
    "messages": [{"role": "user", "content": "x" * 200_000}],  # a burst that leaves garbage
}


def recycling_env(upstream: FakeUpstream, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_API_BASE_URL": upstream.url,
        "OPENAI_API_KEY": upstream.api_key,
        "MEMORY_RELEASE_AFTER_IDLE": "0.5",
        # Any growth at all: the test must not depend on how much the burst leaves behind.
        "MEMORY_RECYCLE_ABOVE_MB": "0.001",
        **extra,
    }


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match, status
    return int(match.group(1)) / 1024


def workers(pid: int) -> set[int]:
    """The worker processes of a supervisor (not multiprocessing's resource tracker)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {
        int(p) for p in text.split() if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
    }


class Prober(threading.Thread):
    """GET /api/version on a new connection every few milliseconds: (sent at, status or
    error) for each, so the test can tell whether any client was refused while the worker was
    being replaced."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.results: list[tuple[float, float, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            sent = time.time()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/api/version")
                outcome = str(conn.getresponse().status)
            except OSError as exc:
                outcome = repr(exc)
            finally:
                conn.close()
            self.results.append((sent, time.time(), outcome))
            time.sleep(0.005)


def burst(port: int, n: int = 10) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(n):
        conn.request("POST", "/api/chat", json.dumps(CHAT), {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
    conn.close()


def wait_for(log: Path, event: str, count: int = 1, within: float = 20) -> list[dict[str, object]]:
    deadline = time.monotonic() + within
    while True:
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        found = [x for x in lines if x["event"] == event]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"no {event!r} in the log:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def at(line: dict[str, object]) -> float:
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


def test_one_worker_is_replaced_in_place_and_no_client_is_refused(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    log = tmp_path / "proxy.log"
    server = Running(tmp_path, recycling_env(upstream), log=log)
    pid = server.proc.pid
    prober = Prober(server.port)
    try:
        time.sleep(0.5)
        rss_at_start = rss_mb(pid)
        prober.start()
        burst(server.port)
        (asked,) = wait_for(log, "worker_recycling")
        (fresh,) = wait_for(log, "worker_recycled")
        started = wait_for(log, "Application startup complete.", count=2)[1]
        time.sleep(0.3)
        prober.stop.set()
        prober.join(10)
        # Same process id (what supervisors watch), serving again, back to its starting size.
        assert server.proc.poll() is None
        assert rss_mb(pid) < rss_at_start + 3
        assert asked["limit_mb"] == 0.001
        assert float(str(asked["rss_mb"])) > float(str(asked["rss_at_start_mb"]))
        burst(server.port, 1)
    finally:
        out = server.stop()
    assert "Traceback" not in out
    failures = [r for r in prober.results if r[2] != "200"]
    assert failures == []
    # Some clients arrived while no process was serving: they waited in the socket's backlog.
    gap = [r for r in prober.results if at(asked) < r[0] < at(started)]
    assert gap, (at(asked), at(fresh), at(started), prober.results[-5:])
    assert len(prober.results) > 20
    # Every request has its access-log line, also those logged just before execve.
    logged = [x for x in out.splitlines() if '"path":"/api/version"' in x]
    assert len(logged) == len(prober.results)


def test_over_tls_the_fresh_process_serves_the_same_socket(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    cert, key = self_signed(tmp_path)
    log = tmp_path / "proxy.log"
    env = recycling_env(upstream, SSL_CERTFILE=str(cert), SSL_KEYFILE=str(key))
    server = Running(tmp_path, env, scheme="https", log=log)
    context = ssl.create_default_context(cafile=str(cert))
    try:
        for _ in range(3):
            conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context)
            conn.request(
                "POST", "/api/chat", json.dumps(CHAT), {"Content-Type": "application/json"}
            )
            assert conn.getresponse().status == 200
            conn.close()
        wait_for(log, "worker_recycled")
        wait_for(log, "Application startup complete.", count=2)
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
        conn.request("GET", "/api/version")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        out = server.stop()
    assert "Traceback" not in out


def test_workers_are_replaced_and_counters_survive(tmp_path: Path, upstream: FakeUpstream) -> None:
    """With WORKERS=2 a worker leaves gracefully and uvicorn's supervisor starts a new one; the
    request counters live in the shared multiprocess directory, so they carry on."""
    log = tmp_path / "proxy.log"
    server = Running(tmp_path, recycling_env(upstream, WORKERS="2"), log=log)
    prober = Prober(server.port)
    try:
        before = workers(server.proc.pid)
        assert len(before) == 2
        prober.start()
        for _ in range(4):  # four connections: the kernel hands each to either worker
            burst(server.port, 3)
        # Every worker that served a burst asks to be replaced once idle; the one that may have
        # served none has nothing to give back.
        wait_for(log, "worker_recycling")
        time.sleep(2)  # the other worker too, if it served a burst
        recycled = len(wait_for(log, "worker_recycling"))
        wait_for(log, "Application startup complete.", count=2 + recycled)
        prober.stop.set()
        prober.join(10)
        after = workers(server.proc.pid)
        assert len(after) == 2
        assert len(after - before) == recycled >= 1
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/v1/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        match = re.search(
            r'ollama_proxy_request_duration_seconds_count\{endpoint="/api/chat"\} (\S+)', text
        )
        assert match, text[:2000]
        assert float(match.group(1)) == 12  # including what workers now gone counted
    finally:
        out = server.stop()
    assert "Traceback" not in out
    assert [r for r in prober.results if r[2] != "200"] == []


def test_recycling_is_off_when_not_started_by_the_command(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """An app built by another server (say, uvicorn run by hand with --factory) has nothing
    that would start a fresh process: it says so once and serves on."""
    code = "from ollama_openai_proxy.app import create_app; create_app()"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**base_env(), **recycling_env(upstream)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    (line,) = [
        json.loads(x)
        for x in out.stdout.splitlines() + out.stderr.splitlines()
        if "memory_recycle" in x
    ]
    assert line["event"] == "memory_recycle_disabled"
    assert line["level"] == "warning"
