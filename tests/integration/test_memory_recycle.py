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

# How long one step may take on a loaded machine (a worker starting, a client waiting in the
# listening socket's backlog while no process accepts) before a test gives up: only a hang
# should reach it.
PATIENCE = 60.0

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
    found = set()
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:  # exited and reaped since the list was read
            continue
        if b"spawn_main" in cmdline:
            found.add(int(child))
    return found


class Prober(threading.Thread):
    """GET /api/version on a new connection every few milliseconds: (sent at, status or
    error) for each, so the test can tell whether any client was refused while the worker was
    being replaced."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.timeout = timeout
        self.results: list[tuple[float, float, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            sent = time.time()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
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


def chats(port: int, connections: int, each: int) -> tuple[list[str], int]:
    """``each`` chats, one after another, on each of ``connections`` keep-alive connections:
    the request id of every answer, and how many chats had to be sent again.

    A worker that leaves closes the connections with no request in progress (uvicorn's graceful
    shutdown) and answers every request it has read (within SHUTDOWN_GRACE_PERIOD). So a chat
    that finds its reused connection closed was never served: it is sent again on a new
    connection, as HTTP clients do when a keep-alive connection has gone stale. A new
    connection that fails is an error."""
    ids, resent = [], 0
    body, headers = json.dumps(CHAT), {"Content-Type": "application/json"}
    for _ in range(connections):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE)
        for _ in range(each):
            reused = conn.sock is not None  # http.client opens a new one after Connection: close
            try:
                conn.request("POST", "/api/chat", body, headers)
                response = conn.getresponse()
            except ConnectionError:
                if not reused:
                    raise
                conn.close()
                resent += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE)
                conn.request("POST", "/api/chat", body, headers)
                response = conn.getresponse()
            answer = response.read()
            assert response.status == 200, answer
            ids.append(response.headers["x-request-id"])
        conn.close()
    return ids, resent


def worker_of(request_id: str) -> str:
    """The process that answered: a request id is a prefix drawn by each process and a counter
    of 8 hex digits (RequestContextMiddleware)."""
    return request_id[:-8]


def lines(log: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]


def events(log: Path, event: str) -> list[dict[str, object]]:
    return [x for x in lines(log) if x["event"] == event]


def pids(log: Path, event: str) -> set[int]:
    """The process ids in uvicorn's lines such as "Started server process [1234]"."""
    pattern = re.compile(re.escape(event) + r" \[(\d+)\]")
    return {int(m[1]) for x in lines(log) if (m := pattern.fullmatch(str(x["event"])))}


def wait_for(
    log: Path, event: str, count: int = 1, within: float = PATIENCE
) -> list[dict[str, object]]:
    deadline = time.monotonic() + within
    while True:
        found = events(log, event)
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
    """With WORKERS=2 a worker that served chats leaves gracefully once idle and uvicorn's
    supervisor starts a new one; the request counters live in the shared multiprocess
    directory, so they carry on. Which worker serves which connection is the kernel's choice, so
    how many are replaced is found out from the answers, never assumed, and nothing is timed:
    each step waits for what the previous one implies."""
    log = tmp_path / "proxy.log"
    server = Running(tmp_path, recycling_env(upstream, WORKERS="2"), log=log)
    # While every worker is being replaced at once, clients wait in the socket's backlog until a
    # new one accepts: several seconds on a loaded machine. Waiting is fine; being refused is not.
    prober = Prober(server.port, timeout=PATIENCE)
    try:
        wait_for(log, "Application startup complete.", count=2)
        before = workers(server.proc.pid)
        assert len(before) == 2
        prober.start()
        # Four connections, three chats each: the kernel hands each connection to either worker.
        ids, resent = chats(server.port, connections=4, each=3)
        served = {worker_of(x) for x in ids}
        # Each worker that served a chat gives memory back once idle and, as it is still above
        # its size at start (any growth counts), asks to be replaced; the supervisor then starts
        # one new process for it. A worker that served none has nothing to give back and stays.
        wait_for(log, "memory_released", count=len(served))
        wait_for(log, "worker_recycling", count=len(served))
        wait_for(log, "Application startup complete.", count=2 + len(served))
        prober.stop.set()
        prober.join(PATIENCE)
        assert not prober.is_alive()
        assert len(events(log, "memory_released")) == len(served)
        assert len(events(log, "worker_recycling")) == len(served)
        started = pids(log, "Started server process")
        finished = pids(log, "Finished server process")  # each logged before its process exits
        assert before <= started
        assert len(started) == 2 + len(served)  # no worker restarted for any other reason
        assert finished <= started
        assert len(finished) == len(served)
        after = workers(server.proc.pid)
        assert after == started - finished
        assert len(after) == 2
        assert after - before
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=PATIENCE)
        conn.request("GET", "/v1/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        match = re.search(
            r'ollama_proxy_request_duration_seconds_count\{endpoint="/api/chat"\} (\S+)', text
        )
        assert match, text[:2000]
        assert float(match.group(1)) == len(ids) == 12  # including what workers now gone counted
        longest = max((done - sent for sent, done, _ in prober.results), default=0.0)
        print(f"{len(served)} workers served chats, {resent} resent; longest probe {longest:.1f} s")
    finally:
        prober.stop.set()
        out = server.stop()
    assert "Traceback" not in out
    assert [r for r in prober.results if r[2] != "200"] == []


def test_recycling_is_off_when_not_started_by_the_command(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """An app built by another server (say, uvicorn run by hand with --factory) has nothing
    that would start a fresh process: it says so once and serves on."""
    code = "from ollama_openai_bridge.app import create_app; create_app()"
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
