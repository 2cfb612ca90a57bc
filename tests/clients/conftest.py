from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator

import ollama
import pytest

from tests.servers import ProxyServer


@pytest.fixture
def client(proxy: ProxyServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=proxy.url) as c:
        yield c


@pytest.fixture(autouse=True)
def _collect_library_leaks() -> Iterator[None]:
    """Some clients (LangChain's ChatOllama) open HTTP clients they never close. Collect them
    after each test with warnings off, so their sockets' ResourceWarnings are not blamed on us."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()
