from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_upstream import FakeUpstream
from tests.servers import ProxyServer, settings_for

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "contract"


def contract(name: str) -> Any:
    """A fixture from the shared Ollama contract (copied into tests/fixtures/contract)."""
    return json.loads((FIXTURES / name).read_text())


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
