"""When the command re-executes itself on jemalloc, and when the operator's choice wins."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ollama_openai_bridge import allocator
from ollama_openai_bridge.allocator import JEMALLOC_CONF, AllocatorError, exec_environment

LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: LIB)


@pytest.fixture
def missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: None)


@pytest.mark.usefixtures("installed")
def test_auto_switches_to_jemalloc_when_installed() -> None:
    env = exec_environment("auto", {"PATH": "/bin"})
    assert env == {
        "PATH": "/bin",
        "LD_PRELOAD": LIB,
        "PYTHONMALLOC": "malloc",
        "MALLOC_CONF": JEMALLOC_CONF,
    }
    # the re-executed process sees both set and carries on: no loop
    assert exec_environment("auto", env) is None
    assert allocator.current(env) == "jemalloc"


@pytest.mark.usefixtures("installed")
def test_operator_malloc_conf_is_kept() -> None:
    env = exec_environment("jemalloc", {"MALLOC_CONF": "narenas:1"})
    assert env is not None
    assert env["MALLOC_CONF"] == "narenas:1"


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize(
    "preset", [{"LD_PRELOAD": "/opt/libtcmalloc.so"}, {"PYTHONMALLOC": "debug"}]
)
def test_auto_respects_an_allocator_the_operator_chose(preset: dict[str, str]) -> None:
    assert exec_environment("auto", preset) is None
    with pytest.raises(AllocatorError, match="conflicts"):
        exec_environment("jemalloc", preset)


@pytest.mark.usefixtures("installed")
def test_pymalloc_never_re_executes() -> None:
    assert exec_environment("pymalloc", {}) is None


@pytest.mark.usefixtures("missing")
def test_missing_library() -> None:
    assert exec_environment("auto", {}) is None
    with pytest.raises(AllocatorError, match="libjemalloc2"):
        exec_environment("jemalloc", {})


def test_current_names_the_allocator() -> None:
    assert allocator.current({}) == "pymalloc"
    assert allocator.current({"PYTHONMALLOC": "malloc"}) == "malloc"
    assert allocator.current({"LD_PRELOAD": LIB}) == "pymalloc"


def test_find_jemalloc_returns_a_loadable_library_or_none() -> None:
    found = allocator.find_jemalloc()
    assert found is None or "jemalloc" in found


def test_release_returns_memory_with_the_allocator_in_use() -> None:
    done = allocator.release()
    # this test process runs on glibc (pytest is not re-executed): malloc_trim
    assert done in ("malloc_trim", "jemalloc purge")
    rss = allocator.rss_mb()
    assert rss is not None
    assert rss > 1


class FakeActivity:
    def __init__(self) -> None:
        self.active = 0
        self.waiting = 0
        self.granted = 0


def test_release_waits_for_a_burst_then_for_idleness(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    activity = FakeActivity()

    def release() -> str:
        calls.append(activity.granted)
        return "test"

    monkeypatch.setattr(allocator, "release", release)
    asyncio.run(_scenario(activity, calls))


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def _scenario(activity: FakeActivity, calls: list[int]) -> None:
    task = asyncio.create_task(allocator.release_when_idle(activity, after=0.05, poll=0.01))
    try:
        await asyncio.sleep(0.2)
        assert calls == []  # nothing served yet: nothing to give back
        activity.granted, activity.active = 5, 1
        await asyncio.sleep(0.2)
        assert calls == []  # a call is open
        activity.active = 0
        await _until(lambda: calls == [5])  # idle long enough after the burst: once
        await asyncio.sleep(0.2)
        assert calls == [5]  # and not again until something else is served
        activity.granted = 6
        await _until(lambda: calls == [5, 6])
    finally:
        task.cancel()


@pytest.mark.parametrize(("after_release", "recycled"), [(80.0, False), (90.5, True)])
def test_recycles_when_rss_stays_above_its_start(
    monkeypatch: pytest.MonkeyPatch, after_release: float, recycled: bool
) -> None:
    """70 MB at start, a 20 MB allowance: asked to recycle only when release leaves more. The
    start's size is read after a release of its own, so both sides are measured alike."""
    readings = [70.0, 95.0, after_release]  # at start, before release, after release
    order: list[str] = []

    def rss() -> float:
        value = readings.pop(0) if readings else 0.0
        order.append(f"rss {value}")
        return value

    monkeypatch.setattr(allocator, "rss_mb", rss)

    def release() -> str:
        order.append("release")
        return "test"

    monkeypatch.setattr(allocator, "release", release)
    asked: list[bool] = []
    activity = FakeActivity()

    async def scenario() -> bool:
        task = asyncio.create_task(
            allocator.release_when_idle(
                activity,
                after=0.02,
                poll=0.01,
                recycle_above_mb=20,
                recycle=lambda: asked.append(True),
            )
        )
        await asyncio.sleep(0.03)  # watching from the worker's start
        activity.granted = 1  # then a burst was served, and it is over
        await _until(lambda: order.count("release") == 2)
        await asyncio.sleep(0.05)
        done = task.done()  # having asked, it stops watching
        task.cancel()
        return done

    assert asyncio.run(scenario()) is recycled
    assert asked == ([True] if recycled else [])
    assert order == ["release", "rss 70.0", "rss 95.0", "release", f"rss {after_release}"]


def test_back_to_back_requests_between_polls_are_not_idleness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Requests that start and end between two polls hold no slot when it looks; the grants
    # they took still say the proxy is busy.
    calls: list[int] = []

    def release() -> str:
        calls.append(1)
        return "test"

    monkeypatch.setattr(allocator, "release", release)
    activity = FakeActivity()

    async def scenario() -> None:
        task = asyncio.create_task(allocator.release_when_idle(activity, after=0.05, poll=0.01))
        try:
            for _ in range(30):  # 0.3 s of traffic, never a slot held at a poll
                activity.granted += 1
                await asyncio.sleep(0.01)
            assert calls == []
            await _until(lambda: calls == [1])  # then idle: released once
        finally:
            task.cancel()

    asyncio.run(scenario())
