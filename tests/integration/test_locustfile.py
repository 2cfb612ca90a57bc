"""The operators' load test (bench/locustfile.py), run headless for a few seconds by the real
locust against the real app and the fake backend: every task of the mix runs, every answer
passes the locustfile's checks, and nothing fails."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).with_name("locust")
KEY = "load-test-key"
# Each task's entries in locust's statistics; streams add their first line and whole stream.
EXPECTED = {
    "chat",
    "chat, streamed",
    "chat, streamed [first line]",
    "chat, streamed [whole stream]",
    "generate",
    "generate, streamed",
    "generate, streamed [first line]",
    "generate, streamed [whole stream]",
    "embed",
    "tools",
    "tools, result turn",
}
WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def run_locust(
    url: str, out: Path, env: dict[str, str], *options: str
) -> subprocess.CompletedProcess[str]:
    """locust headless on bench/locustfile.py, its statistics in ``out``/load_stats.csv; exit
    status 3 when any request failed."""
    if not LOCUST.exists():
        pytest.fail("locust missing: pip install -e '.[test]'")
    # Not measured by coverage, which would count the locustfile's process as the app's.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS")}
    command = [str(LOCUST), "-f", str(ROOT / "bench" / "locustfile.py"), "--headless"]
    command += ["--host", url, *options, "--only-summary", "--csv", str(out / "load")]
    return subprocess.run(
        [*command, "--exit-code-on-error", "3"],
        cwd=out,
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def stats(out: Path) -> dict[str, dict[str, str]]:
    with (out / "load_stats.csv").open() as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


@pytest.fixture
def proxy_with_key(upstream: FakeUpstream) -> Iterator[ProxyServer]:
    # The first turn of the tools task gets a call; the turn that carries its result, words.
    upstream.rules.append(
        (
            lambda body: bool(body.get("tools")) and body["messages"][-1]["role"] == "user",
            Script(
                message={"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
                finish_reason="tool_calls",
            ),
        )
    )
    with ProxyServer(settings_for(upstream.url, proxy_api_keys=KEY)) as server:
        yield server


def test_the_mix_runs_against_the_proxy_without_failures(
    proxy_with_key: ProxyServer, upstream: FakeUpstream, tmp_path: Path
) -> None:
    env = {
        "LOADTEST_CHAT_MODEL": "gpt-4o-mini",
        "LOADTEST_EMBED_MODEL": "text-embedding-3-small",
        "LOADTEST_API_KEY": KEY,
        "LOADTEST_WAIT": "0,0.05",
        "LOADTEST_NUM_PREDICT": "16",
    }
    options = ["--users", "4", "--spawn-rate", "4", "--run-time", "6s"]
    out = run_locust(proxy_with_key.url, tmp_path, env, *options)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = stats(tmp_path)
    aggregated = rows.pop("Aggregated")
    assert set(rows) == EXPECTED, out.stderr[-3000:]
    for name, row in rows.items():
        assert int(row["Request Count"]) > 0, name
        assert int(row["Failure Count"]) == 0, name
    assert int(aggregated["Failure Count"]) == 0
    # Aggregated counts the HTTP requests alone: the [first line] and [whole stream] rows time
    # the streamed requests again, one of each per stream (issue #19's review, L7)
    http = {n: int(r["Request Count"]) for n, r in rows.items() if r["Type"] == "POST"}
    timings = {n: int(r["Request Count"]) for n, r in rows.items() if r["Type"] == "STREAM"}
    assert set(http) | set(timings) == EXPECTED
    assert int(aggregated["Request Count"]) == sum(http.values())
    for stream in ("chat, streamed", "generate, streamed"):
        assert timings[f"{stream} [first line]"] == http[stream]
        assert timings[f"{stream} [whole stream]"] == http[stream]
    assert (tmp_path / "load_failures.csv").read_text().count("\n") == 1  # the header alone
    # the requests reached the backend through the proxy, keys and all
    paths = {entry["path"] for entry in upstream.journal}
    assert {"/v1/chat/completions", "/v1/embeddings"} <= paths
    tool_results = [
        m
        for entry in upstream.journal
        if entry["path"] == "/v1/chat/completions"
        for m in entry["body"].get("messages", [])
        if m["role"] == "tool"
    ]
    assert tool_results
    assert all(m["tool_call_id"] == "call_1" for m in tool_results)


def test_a_failing_backend_is_counted_as_failures(
    proxy_with_key: ProxyServer, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The checks are real: a backend that answers 500 makes the run fail, with the errors."""
    upstream.faults.append((lambda path, body: True, Script(status=500, error={"error": "down"})))
    env = {"LOADTEST_API_KEY": KEY, "LOADTEST_WAIT": "0,0.05"}
    out = run_locust(proxy_with_key.url, tmp_path, env, "-u", "2", "-r", "2", "--run-time", "3s")
    assert out.returncode == 3, out.stderr[-3000:]
    rows = stats(tmp_path)
    assert int(rows["Aggregated"]["Failure Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == int(rows["Aggregated"]["Request Count"])


def test_the_load_test_is_documented_as_it_is() -> None:
    """docs/PERFORMANCE.md names each variable the locustfile reads and each task it runs (the
    locustfile is not imported here: locust patches the standard library with gevent)."""
    source = (ROOT / "bench" / "locustfile.py").read_text()
    doc = (ROOT / "docs" / "PERFORMANCE.md").read_text()
    section = doc[doc.index("## Load-testing your deployment") :]
    read = set(re.findall(r'os\.environ\.get\("(LOADTEST_[A-Z_]+)"', source))
    assert read
    assert set(re.findall(r"`(LOADTEST_[A-Z_]+)`", section)) == read
    tasks = set(re.findall(r"^\| ([a-z, ]+) \| \d+ \|", section, re.MULTILINE))
    assert tasks == {n for n in EXPECTED if "[" not in n} - {"tools, result turn"}
    weights = dict(re.findall(r"^\| ([a-z, ]+) \| (\d+) \|", section, re.MULTILINE))
    coded = re.findall(r"@task\((\d+)\)\n    def (\w+)\(", source)
    assert {name.replace("_", ", "): w for w, name in coded} == weights
