"""How a worker leaves to be replaced: stop accepting first, then uvicorn's graceful shutdown."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
from collections.abc import Iterator

import pytest
import uvicorn

from ollama_openai_bridge import recycle


@pytest.fixture
def sigterm() -> Iterator[None]:
    original = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, original)


def test_leave_stops_accepting_before_the_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recycle, "DRAIN_SECONDS", 0.1)
    server = uvicorn.Server(uvicorn.Config(app="ollama_openai_bridge.app:create_app"))

    async def scenario() -> tuple[bool, bool]:
        listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        server.servers = [listener]
        recycle.leave(server)
        await asyncio.sleep(0.03)
        accepting, exiting = listener.is_serving(), server.should_exit
        await asyncio.sleep(0.2)
        assert server.should_exit
        return accepting, exiting

    # Accepting stopped at once; the shutdown waited for the drain.
    assert asyncio.run(scenario()) == (False, False)


def test_a_worker_leaves_through_its_server(monkeypatch: pytest.MonkeyPatch, sigterm: None) -> None:
    server = uvicorn.Server(uvicorn.Config(app="ollama_openai_bridge.app:create_app"))
    monkeypatch.setattr(recycle, "DRAIN_SECONDS", 0.0)
    monkeypatch.setattr(multiprocessing, "parent_process", object)
    signal.signal(signal.SIGTERM, server.handle_exit)  # as uvicorn's worker does
    leave = recycle.supervised()
    assert leave is not None

    async def scenario() -> None:
        leave()
        await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert server.should_exit


def test_alone_nothing_would_restart_it() -> None:
    assert multiprocessing.parent_process() is None
    assert recycle.supervised() is None


def test_the_listening_socket_is_handed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        fd = os.dup(sock.fileno())
        monkeypatch.setenv(recycle.LISTEN_FD_ENV, str(fd))
        inherited = recycle.inherited_listener()
        assert inherited is not None
        with inherited:
            assert inherited.getsockname() == sock.getsockname()
        assert recycle.LISTEN_FD_ENV not in os.environ  # read once, not passed on
    monkeypatch.delenv(recycle.LISTEN_FD_ENV, raising=False)
    assert recycle.inherited_listener() is None
