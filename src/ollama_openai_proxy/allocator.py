"""Which memory allocator the server process runs on, chosen before the app is imported.

CPython's own allocator (pymalloc) returns an arena to the system only when every object in it
is freed. After a burst of a thousand streams, a few long-lived objects (pooled connections,
grown hash tables) keep most arenas alive, so RSS stays near its peak although the live heap is
back to its idle size (measured in bench/load.py: 67 MB idle, 111 MB after the burst, with or
without ``malloc_trim``). With ``PYTHONMALLOC=malloc`` and jemalloc, freed pages go back to the
system within about a second, for the same CPU per request (docs/PERFORMANCE.md).

Both must be in place when the interpreter starts (``LD_PRELOAD`` is read by the dynamic loader,
``PYTHONMALLOC`` at interpreter start-up), so the command re-executes itself once with them set.
"""

from __future__ import annotations

import ctypes.util
import os
from collections.abc import Mapping
from pathlib import Path

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
