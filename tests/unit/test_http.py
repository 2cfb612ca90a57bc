"""http.DisconnectWatch: a departed client cancels its request, reported by the command's
protocol (no task per request) or, under another server, watched for with a task."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ollama_openai_bridge.http import DisconnectWatch

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _request(started: asyncio.Event) -> None:
    started.set()
    await asyncio.sleep(30)


async def _running() -> tuple[asyncio.Task[None], asyncio.Event]:
    started = asyncio.Event()
    task = asyncio.ensure_future(_request(started))
    await started.wait()
    return task, started


async def test_a_reported_departure_cancels_the_request_and_costs_no_task() -> None:
    task, _ = await _running()
    watch = DisconnectWatch(_never, task, reported=True)
    before = len(asyncio.all_tasks())
    watch.arm()
    watch.start()
    await asyncio.sleep(0.6)  # past WATCH_AFTER: still nothing started
    assert len(asyncio.all_tasks()) == before
    watch.lost()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert watch.gone


async def test_a_departure_before_the_body_was_read_or_after_the_end_cancels_nothing() -> None:
    task, _ = await _running()
    watch = DisconnectWatch(_never, task, reported=True)
    watch.lost()  # before arm(): the body read sees it itself (ClientDisconnect)
    watch.arm()
    watch.stop()
    watch.lost()  # after stop(): the request is over
    await asyncio.sleep(0)
    assert not task.done()
    assert not watch.gone
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_under_another_server_a_task_waits_for_http_disconnect() -> None:
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    task, _ = await _running()
    watch = DisconnectWatch(receive, task)
    before = len(asyncio.all_tasks())
    watch.start()
    assert len(asyncio.all_tasks()) == before + 1
    gone.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert watch.gone
