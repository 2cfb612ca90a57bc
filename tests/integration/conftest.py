from __future__ import annotations

from collections.abc import Iterator

import ollama
import pytest

from tests.servers import ProxyServer


@pytest.fixture
def client(proxy: ProxyServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=proxy.url) as c:
        yield c
