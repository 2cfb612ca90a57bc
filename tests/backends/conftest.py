from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.backends import FakeBackend, backend


@pytest.fixture(scope="module")
def fake() -> Iterator[Callable[[str], FakeBackend]]:
    """``fake("groq")``: that rule set's FakeBackend, started once per module, reset per call."""
    started: dict[str, FakeBackend] = {}

    def get(name: str) -> FakeBackend:
        if name not in started:
            started[name] = backend(name).start()
        started[name].reset()
        return started[name]

    yield get
    for f in started.values():
        f.stop()
