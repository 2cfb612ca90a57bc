"""Replacing a worker process by a fresh one (``MEMORY_RECYCLE_ABOVE_MB``) without refusing a
client.

Memory kept by fragmentation after a burst only goes back to the system with the process
(bench/README.md). Two ways, by how the proxy runs:

- alone (``WORKERS=1``): the command keeps its listening socket open across ``execve`` and runs
  again on it (:func:`exec_in_place`). The kernel keeps queueing new connections in the socket's
  backlog meanwhile, so they wait about half a second; the process id stays, so supervisors and
  signals are unaffected.
- several workers: the worker shuts down and uvicorn's supervisor starts a new one on the shared
  socket while the others serve.

Either way the server first stops accepting and only then shuts down (:func:`leave`): uvicorn's
graceful shutdown closes every connection that has not yet sent a request, which would reset a
client that connected a moment before.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable

import uvicorn

# The listening socket's file descriptor, handed to the process that replaces this one.
LISTEN_FD_ENV = "OLLAMA_PROXY_LISTEN_FD"
# How long a just-accepted connection gets to send its request once accepting has stopped.
DRAIN_SECONDS = 0.25

_tasks: set[asyncio.Task[None]] = set()


def leave(server: uvicorn.Server) -> None:
    """Stop accepting now, then start uvicorn's graceful shutdown (open requests finish)."""

    async def drain_then_exit() -> None:
        for listener in getattr(server, "servers", ()):
            listener.close()  # new clients wait in the kernel's backlog for the next process
        await asyncio.sleep(DRAIN_SECONDS)
        server.should_exit = True

    task = asyncio.get_running_loop().create_task(drain_then_exit())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def supervised() -> Callable[[], None] | None:
    """In a worker of uvicorn's supervisor: a way to leave (the supervisor starts another)."""
    if multiprocessing.parent_process() is None:
        return None
    # uvicorn installs its Server's handle_exit for SIGTERM in each worker (Server.capture_signals).
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if isinstance(server, uvicorn.Server):
        return lambda: leave(server)
    return lambda: os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's own graceful shutdown


def inherited_listener() -> socket.socket | None:
    """The listening socket a process being replaced left open for this one."""
    fd = os.environ.pop(LISTEN_FD_ENV, None)
    return None if fd is None else socket.socket(fileno=int(fd))


def exec_in_place(listener: socket.socket) -> None:
    """Run this command again, same process id, serving ``listener``."""
    # execve discards what Python has buffered: the last access-log lines, for one.
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.set_inheritable(listener.fileno(), True)
    env = {**os.environ, LISTEN_FD_ENV: str(listener.fileno())}
    # bandit B606: this very interpreter and command line, started again; no shell
    os.execve(sys.executable, sys.orig_argv, env)  # nosec B606
