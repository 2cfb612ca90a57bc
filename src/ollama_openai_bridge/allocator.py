"""Which memory allocator the server process runs on, chosen before the app is imported.

CPython's own allocator (pymalloc) returns an arena to the system only when every object in it
is freed. After a burst of a thousand streams, a few long-lived objects (pooled connections,
grown hash tables) keep most arenas alive, so RSS stays near its peak although the live heap is
back to its idle size. With ``PYTHONMALLOC=malloc`` and jemalloc, freed pages go back to the
system page by page, for the same CPU per request. Measured with bench/load.py (1,000 streams
for a minute, idle at 70 MB): RSS afterwards 111 MB on pymalloc, 92 MB on jemalloc, 86 MB on
jemalloc with :func:`release_when_idle` (bench/README.md).

Both must be in place when the interpreter starts (``LD_PRELOAD`` is read by the dynamic loader,
``PYTHONMALLOC`` at interpreter start-up), so the command re-executes itself once with them set.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import structlog

log = structlog.get_logger("ollama_openai_bridge.allocator")

# Background purging returns dirty pages after about a second instead of on the next allocation.
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"
_SEARCH = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def find_jemalloc() -> str | None:
    """The path of the jemalloc shared library (Debian/Ubuntu ``libjemalloc2``), if installed."""
    for directory in _SEARCH:
        candidate = Path(directory, "libjemalloc.so.2")
        if candidate.is_file():
            return str(candidate)
    name = ctypes.util.find_library("jemalloc")
    return name or None


def current(env: Mapping[str, str] = os.environ) -> str:
    """The allocator a process started with this environment runs on (``/v1/version``)."""
    if "jemalloc" in env.get("LD_PRELOAD", "") and env.get("PYTHONMALLOC") == "malloc":
        return "jemalloc"
    return env.get("PYTHONMALLOC") or "pymalloc"


class AllocatorError(RuntimeError):
    pass


def exec_environment(choice: str, env: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to re-execute with, or None to carry on in this process.

    ``auto`` switches to jemalloc only when it is installed and the operator has not chosen an
    allocator themselves (``LD_PRELOAD`` or ``PYTHONMALLOC`` set): their choice always wins.
    After the re-execution both are set, so this returns None and nothing loops.
    """
    if choice == "pymalloc":
        return None
    if env.get("LD_PRELOAD") or env.get("PYTHONMALLOC"):
        if choice == "jemalloc" and current(env) != "jemalloc":
            raise AllocatorError(
                "MEMORY_ALLOCATOR=jemalloc conflicts with LD_PRELOAD/PYTHONMALLOC set in the "
                "environment; unset them or use MEMORY_ALLOCATOR=auto"
            )
        return None
    path = find_jemalloc()
    if path is None:
        if choice == "jemalloc":
            raise AllocatorError(
                "MEMORY_ALLOCATOR=jemalloc but libjemalloc.so.2 was not found "
                "(Debian/Ubuntu: apt-get install libjemalloc2)"
            )
        return None
    return {
        **env,
        "LD_PRELOAD": path,
        "PYTHONMALLOC": "malloc",
        "MALLOC_CONF": env.get("MALLOC_CONF", JEMALLOC_CONF),
    }


# --- giving memory back when idle ---------------------------------------------------------------

_ARENAS_ALL = 4096  # jemalloc's MALLCTL_ARENAS_ALL: "every arena" in arena.<i>.purge


def release() -> str | None:
    """Return freed memory to the system now: a full garbage collection, then jemalloc purges
    its dirty pages (``arena.<all>.purge``) or glibc trims its heap (``malloc_trim``). Returns
    what was done. Measured after a burst of 1,000 streams: jemalloc left on its own keeps about
    12 MB of dirty pages that this returns (bench/README.md)."""
    gc.collect()
    libc = ctypes.CDLL(None)
    mallctl = getattr(libc, "mallctl", None)
    if mallctl is not None:
        mallctl.restype = ctypes.c_int
        name = f"arena.{_ARENAS_ALL}.purge".encode()
        return "jemalloc purge" if mallctl(name, None, None, None, 0) == 0 else None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
        return "malloc_trim"
    return None


def rss_mb() -> float | None:
    """This process's resident memory in MB (to the page, unrounded: a recycle limit compares
    it with the start's, and rounding hid growth below 0.05 MB), or None where /proc is not."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class Activity(Protocol):
    active: int
    waiting: int
    granted: int


async def release_when_idle(
    activity: Activity,
    after: float,
    poll: float = 1.0,
    *,
    recycle_above_mb: float = 0.0,
    recycle: Callable[[], None] | None = None,
) -> None:
    """Run :func:`release` once the proxy has served something and then been idle (no backend
    call open or queued) for ``after`` seconds; again after the next burst, never in between.

    If RSS is then still more than ``recycle_above_mb`` above what it was when this started (the
    worker's start), call ``recycle``: memory kept by fragmentation only goes back with the
    process (bench/README.md), so the worker asks to be replaced by a fresh one. The start's
    size is taken after a release too, so that both sides are measured alike: what the start
    left unreturned (import-time garbage) would otherwise make a worker look smaller after a
    burst than at its start."""
    if recycle is not None and recycle_above_mb:
        release()
    baseline = rss_mb()
    released_at = seen = activity.granted
    idle_since: float | None = None
    while True:
        await asyncio.sleep(poll)
        # Slots granted since the last look mean traffic, even if none is held at this instant:
        # back-to-back requests must not look idle between two polls.
        busy = activity.granted != seen
        seen = activity.granted
        if busy or activity.active or activity.waiting or activity.granted == released_at:
            idle_since = None
            continue
        now = time.monotonic()
        if idle_since is None:
            idle_since = now
        if now - idle_since < after:
            continue
        before = rss_mb()
        done = release()
        rss = rss_mb()
        log.info(
            "memory_released",
            how=done,
            rss_before_mb=None if before is None else round(before, 1),
            rss_after_mb=None if rss is None else round(rss, 1),
        )
        released_at = activity.granted
        idle_since = None
        if (
            recycle is not None
            and recycle_above_mb
            and baseline is not None
            and rss is not None
            and rss - baseline > recycle_above_mb
        ):
            log.info(
                "worker_recycling",
                rss_mb=round(rss, 1),
                rss_at_start_mb=round(baseline, 1),
                limit_mb=recycle_above_mb,
                detail="RSS stays above MEMORY_RECYCLE_ABOVE_MB after release; replacing this "
                "worker with a fresh process",
            )
            recycle()
            return
