"""Replicas of one upstream (``base_urls``) through the real proxy and three fake backends of
different latencies over real sockets: how each strategy spreads requests, a failing replica
ejected and returned, a dead one skipped, and what ``/ready`` and ``/metrics`` say of them."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

MODEL = "qwen3:8b"
NAMES = ("fast-a", "fast-b", "slow")


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    started = {name: FakeUpstream([MODEL], api_key="") for name in NAMES}
    for fake in started.values():
        fake.start()
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture(autouse=True)
def _clean(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()
    # Latencies: two fast replicas and one ten times slower.
    fakes["fast-a"].rules.append((lambda _: True, Script(first_delay=0.01)))
    fakes["fast-b"].rules.append((lambda _: True, Script(first_delay=0.01)))
    fakes["slow"].rules.append((lambda _: True, Script(first_delay=0.25)))


def start(
    tmp_path: Path,
    fakes: dict[str, FakeUpstream],
    balance: str = "least_outstanding",
    weights: tuple[int, ...] = (1, 1, 1),
    urls: list[str] | None = None,
    outlier: dict[str, Any] | None = None,
) -> ProxyServer:
    urls = urls or [fakes[n].url for n in NAMES]
    entry: dict[str, Any] = {
        "name": "vllm",
        "base_urls": [
            {"url": u, "weight": w, "name": n} for u, w, n in zip(urls, weights, NAMES, strict=True)
        ],
        "balance": balance,
    }
    if outlier:
        entry["outlier_detection"] = outlier
    path = tmp_path / "upstreams.json"
    path.write_text(json.dumps({"upstreams": [entry]}))
    return ProxyServer(settings_for("http://unused.invalid/v1", upstreams_file=path))


def chat(server: ProxyServer, text: str = "hi", system: str | None = None) -> httpx.Response:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    body = {"model": MODEL, "messages": messages, "stream": False}
    return httpx.post(server.url + "/api/chat", json=body, timeout=10)


def served(fakes: dict[str, FakeUpstream]) -> Counter[str]:
    return Counter(
        {n: sum(e["path"] == "/v1/chat/completions" for e in f.journal) for n, f in fakes.items()}
    )


def clear(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.journal.clear()


def ready(server: ProxyServer) -> dict[str, Any]:
    body = httpx.get(server.url + "/ready", timeout=10).json()
    return dict(body["upstreams"]["vllm"])


def test_least_outstanding_sends_less_to_the_slow_replica(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    with start(tmp_path, fakes) as server:
        clear(fakes)
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda i: chat(server, f"q{i}"), range(60)))
        assert all(a.status_code == 200 for a in answers)
        counts = served(fakes)
        assert sum(counts.values()) == 60
        # Three clients, three replicas: a call goes to a replica with nothing outstanding, and
        # the slow one, which holds its calls 25 times longer, is rarely free (round robin
        # would give it 20).
        assert counts["slow"] < 15, counts
        assert counts["slow"] < min(counts["fast-a"], counts["fast-b"]), counts
        state = ready(server)
        assert state["balance"] == "least_outstanding"
        assert [r["in_flight"] for r in state["replicas"]] == [0, 0, 0]  # all given back


def test_weighted_round_robin_follows_the_weights(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    with start(tmp_path, fakes, "weighted_round_robin", (2, 1, 1)) as server:
        clear(fakes)
        for i in range(12):
            assert chat(server, f"q{i}").status_code == 200
        assert served(fakes) == {"fast-a": 6, "fast-b": 3, "slow": 3}


def test_affinity_keeps_a_conversation_on_one_replica(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    with start(tmp_path, fakes, "affinity") as server:
        homes = set()
        for c in range(12):
            clear(fakes)
            for _ in range(3):
                assert chat(server, f"conversation {c}", system="be brief").status_code == 200
            counts = served(fakes)
            assert sorted(counts.values()) == [0, 0, 3], counts  # every turn to one replica
            homes.add(counts.most_common(1)[0][0])
        assert len(homes) > 1  # different conversations spread over the replicas


def test_a_failing_replica_is_ejected_and_returns(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    settings = {"consecutive_failures": 2, "base_ejection_time": 1.5, "max_ejection_percent": 34}
    with start(tmp_path, fakes, "weighted_round_robin", outlier=settings) as server:
        fakes["slow"].faults.append(
            (lambda path, _: path.endswith("/chat/completions"), Script(status=503))
        )
        clear(fakes)
        # Each call that meets the failing replica moves on to another at once: clients see no
        # error (MAX_RETRIES is 0 here; the move is not a retry of the same server).
        for i in range(9):
            assert chat(server, f"q{i}").status_code == 200
        assert served(fakes)["slow"] == 2  # two failures in a row, then ejected
        state = ready(server)
        slow = state["replicas"][2]
        assert slow["replica"] == "slow"
        assert slow["state"] == "ejected"
        assert 0 < slow["ejected_for_s"] <= 1.5
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", slow["ejected_until"])
        assert [r["state"] for r in state["replicas"][:2]] == ["healthy", "healthy"]
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert 'ollama_proxy_replica_ejected{replica="slow",upstream="vllm"} 1.0' in metrics
        assert 'ollama_proxy_replica_ejections_total{replica="slow",upstream="vllm"} 1.0' in metrics
        assert (
            'ollama_proxy_replica_requests_total{outcome="failure",replica="slow",upstream="vllm"} 2.0'
            in metrics
        )
        assert (
            'ollama_proxy_replica_requests_in_flight{replica="fast-a",upstream="vllm"} 0.0'
            in metrics
        )
        # Healed: once its time is up it is tried again, and serves.
        fakes["slow"].faults.clear()
        time.sleep(1.6)
        clear(fakes)
        for i in range(6):
            assert chat(server, f"r{i}").status_code == 200
        assert served(fakes)["slow"] >= 1  # back in the rotation
        assert ready(server)["replicas"][2]["state"] == "healthy"
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert 'ollama_proxy_replica_ejected{replica="slow",upstream="vllm"} 0.0' in metrics


def test_a_dead_replica_is_skipped_and_ejected(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # refused once the socket closes
    urls = [fakes["fast-a"].url, fakes["fast-b"].url, dead]
    settings = {"consecutive_failures": 1, "base_ejection_time": 60}
    with start(tmp_path, fakes, "weighted_round_robin", urls=urls, outlier=settings) as server:
        clear(fakes)
        for i in range(6):
            assert chat(server, f"q{i}").status_code == 200
        assert sum(served(fakes).values()) == 6
        state = ready(server)
        assert state["status"] == "ready"
        assert [r["state"] for r in state["replicas"]] == ["healthy", "healthy", "ejected"]


def test_a_stream_holds_its_replica_until_it_ends(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    for fake in fakes.values():
        fake.rules[:] = [(lambda _: True, Script(chunks=[{"content": "a"}] * 5, delay=0.2))]
    with start(tmp_path, fakes) as server:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        lines: list[bytes] = []

        def stream() -> None:
            with httpx.stream("POST", server.url + "/api/chat", json=body, timeout=10) as resp:
                lines.extend(resp.iter_lines())  # type: ignore[arg-type]

        reader = threading.Thread(target=stream)
        reader.start()
        time.sleep(0.4)
        during = [r["in_flight"] for r in ready(server)["replicas"]]
        reader.join(10)
        assert sorted(during) == [0, 0, 1]  # the stream's replica, while it streams
        assert len(lines) == 6  # five chunks and the final line
        assert [r["in_flight"] for r in ready(server)["replicas"]] == [0, 0, 0]
