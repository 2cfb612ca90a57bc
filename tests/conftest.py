from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scripts.compat_matrix import merge_results, whole_run

from tests.fake_upstream import FakeUpstream
from tests.servers import KEPT_FROM_THE_SHELL, SETTING_NAMES, ProxyServer, settings_for

for _name in SETTING_NAMES - KEPT_FROM_THE_SHELL:  # tests/servers.py says why
    os.environ.pop(_name, None)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "contract"
AGENTS = FIXTURES.parent / "agents"


def contract(name: str) -> Any:
    """A fixture from the shared Ollama contract (copied into tests/fixtures/contract; the two
    streamed tool-call fixtures follow the corrected contract: one call per line, #7836)."""
    return json.loads((FIXTURES / name).read_text())


def _digest(value: Any) -> str:
    # tests/agents/capture.py's: an item's own id aside, sorted keys
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "id"}
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def agent_request(name: str) -> dict[str, Any]:
    """The body of a captured agent request (tests/fixtures/agents), whole: each
    ``{"$same_as": file, "sha256": ...}`` replaced by the value it stands for in that file (an
    item keeps its own ``id``)."""
    body: dict[str, Any] = json.loads((AGENTS / name).read_text())["body"]

    def whole(value: Any) -> Any:
        if not (isinstance(value, dict) and "$same_as" in value):
            return value
        other = json.loads((AGENTS / value["$same_as"]).read_text())["body"]
        candidates = [other.get("tools"), other.get("system"), other.get("instructions")]
        candidates += other.get("input") or other.get("messages") or []
        found = next(c for c in candidates if c is not None and _digest(c) == value["sha256"])
        return {**found, "id": value["id"]} if "id" in value else found

    for key in ("tools", "system", "instructions"):
        if key in body:
            body[key] = whole(body[key])
    for key in ("input", "messages"):
        if isinstance(body.get(key), list):
            body[key] = [whole(item) for item in body[key]]
    return body


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _reset_upstream(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").reset()


@pytest.fixture(scope="session")
def proxy(upstream: FakeUpstream) -> Iterator[ProxyServer]:
    with ProxyServer(settings_for(upstream.url)) as server:
        yield server


# --- compatibility matrix -------------------------------------------------------------------
# Tests marked @pytest.mark.compat(client, feature) are the cells of docs/COMPATIBILITY.md;
# their outcomes are written to build/compat-results.json for scripts/compat_matrix.py.

_COMPAT: dict[tuple[str, str], list[str]] = {}
# COMPAT_RESULTS: another file, for a partial run (the Makefile's second pass on aiohttp) that
# must not replace the full run's cells
RESULTS = Path(
    os.environ.get(
        "COMPAT_RESULTS", Path(__file__).resolve().parents[1] / "build" / "compat-results.json"
    )
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    marker = item.get_closest_marker("compat")
    if marker is not None and (report.when == "call" or report.outcome != "passed"):
        client, feature = marker.args
        outcome = "skipped" if report.skipped else report.outcome
        _COMPAT.setdefault((client, feature), []).append(outcome)
    return report


_DESELECTED: list[pytest.Item] = []


def pytest_deselected(items: list[pytest.Item]) -> None:
    _DESELECTED.extend(items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _COMPAT:
        return
    config = session.config
    # A partial run (one file, -k, -x, ...) merges its cells into the last results instead of
    # replacing them, and `make compat-doc` refuses results no whole run produced (issue #19's
    # review, M4: one file's run truncated the tracked matrix to its 8 cells).
    whole = whole_run(
        [config.invocation_params.dir / a.split("::")[0] for a in config.args],
        [config.rootpath / p for p in config.getini("testpaths")],
        narrowed=bool(config.option.keyword or config.option.markexpr)
        or any("::" in a for a in config.args),
        deselected=len(_DESELECTED),
        stopped=bool(session.shouldfail or session.shouldstop),
    )
    cells = []
    for (client, feature), outcomes in sorted(_COMPAT.items()):
        if "failed" in outcomes:
            status = "fail"
        elif all(o == "skipped" for o in outcomes):
            status = "skipped"
        else:
            status = "pass"
        cells.append(
            {"client": client, "feature": feature, "status": status, "tests": len(outcomes)}
        )
    RESULTS.parent.mkdir(exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
    RESULTS.write_text(json.dumps(merge_results(previous, cells, whole), indent=1))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on loopback for the session (Debian package redis-server)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
