"""``ollama-openai-bridge``: validate the configuration, then serve with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import resource
import secrets
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import structlog
import uvicorn
from pydantic import SecretStr
from uvicorn.config import STARTUP_FAILURE

from ollama_openai_bridge import __version__
from ollama_openai_bridge.allocator import AllocatorError, exec_environment
from ollama_openai_bridge.config import ConfigError, Settings, load_settings
from ollama_openai_bridge.errors import Redactor
from ollama_openai_bridge.logs import configure_logging
from ollama_openai_bridge.recycle import LISTEN_FD_ENV, exec_in_place, inherited_listener, leave
from ollama_openai_bridge.transport import server_options


def _raise_fd_limit() -> None:
    """Each proxied stream holds two sockets (client and backend): lift the soft limit on open
    files to the hard one, as servers meant for many connections do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _one_context_key(settings: Settings) -> Settings:
    """Without CONTEXT_SIGNING_KEY, one random key for this start of the command: its WORKERS
    (which read the environment) and the processes that replace a recycled one (recycle.py
    executes the command again with this environment) then all accept the generate contexts
    any of them issued. A restart draws a new one (docs/CONFIGURATION.md)."""
    if settings.context_signing_key.get_secret_value():
        return settings
    key = secrets.token_hex(32)
    os.environ["CONTEXT_SIGNING_KEY"] = key
    return settings.model_copy(update={"context_signing_key": SecretStr(key)})


# The first name (the distribution had to move: docs/RELEASING.md), kept for one release.
RENAMED = (
    "ollama-openai-proxy is now ollama-openai-bridge: the old command, `python -m "
    "ollama_openai_proxy` and the ollama_openai_proxy module still work in this release and "
    "will be removed in a later one; use `ollama-openai-bridge` (or `python -m "
    "ollama_openai_bridge`)."
)


RENAMED_SAID = "OLLAMA_BRIDGE_RENAME_NOTICE_SHOWN"


def deprecated_main(argv: list[str] | None = None) -> int:
    """The ``ollama-openai-proxy`` command and ``python -m ollama_openai_proxy``: one line on
    stderr saying the project was renamed, then :func:`main` with the same arguments."""
    # Once: the command may execute itself again (a memory allocator to load, a recycled
    # worker), and the environment is what the new process keeps.
    if os.environ.get(RENAMED_SAID) != "1":
        print(f"warning: {RENAMED}", file=sys.stderr, flush=True)
        os.environ[RENAMED_SAID] = "1"
    return main(argv)


def main(argv: list[str] | None = None) -> int:
    """The ``ollama-openai-bridge`` command: validate the settings, then serve until stopped.

    ``argv`` defaults to ``sys.argv[1:]``. Returns the exit status: 0 after a clean stop, 2 for
    invalid settings (one message on stderr), uvicorn's start-up failure status otherwise.
    """
    parser = argparse.ArgumentParser(
        prog="ollama-openai-bridge",
        description="Serve Ollama's API on :11434 from an OpenAI-compatible backend. "
        "Configuration comes from environment variables and .env (see docs/CONFIGURATION.md).",
    )
    parser.add_argument("--host", help="override PROXY_HOST")
    parser.add_argument("--port", type=int, help="override PROXY_PORT")
    parser.add_argument("--env-file", help="read settings from this file instead of .env")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    args = parser.parse_args(argv)

    overrides: dict[str, object] = {}
    if args.host:
        overrides["proxy_host"] = args.host
    if args.port:
        overrides["proxy_port"] = args.port
    env_file = args.env_file or os.environ.get("PROXY_ENV_FILE")
    if env_file:
        overrides["_env_file"] = env_file
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"ollama-openai-bridge: {exc}", file=sys.stderr)
        return 2
    if argv is None:  # the command itself, never a programmatic call
        try:
            exec_env = exec_environment(settings.memory_allocator, os.environ)
        except AllocatorError as exc:
            print(f"ollama-openai-bridge: {exc}", file=sys.stderr)
            return 2
        if exec_env is not None:
            # The loader reads LD_PRELOAD and CPython PYTHONMALLOC only at start: begin again,
            # same process id (supervisors and signals are unaffected), same command line.
            # bandit B606: this very interpreter and command line, started again; no shell
            os.execve(sys.executable, sys.orig_argv, exec_env)  # nosec B606
    if argv is None or settings.workers > 1:
        settings = _one_context_key(settings)
    _raise_fd_limit()
    level = "DEBUG" if settings.debug else settings.log_level
    redact = Redactor(settings.secrets())
    configure_logging(level, redact)
    server: dict[str, Any] = {
        "host": settings.proxy_host,
        "port": settings.proxy_port,
        "loop": "uvloop",
        "log_config": None,
        "access_log": False,  # RequestContextMiddleware logs each request once, at its end
        "server_header": False,
        "timeout_graceful_shutdown": settings.shutdown_grace_period,
        "backlog": settings.backlog,  # uvicorn's 2,048 drops bursts of new streams
        # the guarded httptools protocol (header, timing and connection limits), no WebSocket,
        # forwarding headers only from FORWARDED_ALLOW_IPS
        **server_options(settings),
    }
    if settings.ssl_certfile is not None:
        server["ssl_certfile"] = str(settings.ssl_certfile)
        server["ssl_keyfile"] = str(settings.ssl_keyfile)
    # Not for a recycled process: it serves the socket its predecessor left it (recycle.py).
    inherits = LISTEN_FD_ENV in os.environ
    if not inherits and (taken := _address_taken(settings)) is not None:
        print(f"ollama-openai-bridge: {taken}", file=sys.stderr)
        return STARTUP_FAILURE
    if settings.workers > 1:
        if settings.enable_metrics and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Must be set before any worker imports prometheus_client.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
                prefix="ollama-proxy-metrics-"
            )
        if args.env_file:
            os.environ["PROXY_ENV_FILE"] = args.env_file
        # Each worker builds its own app (and upstream session) from the same environment.
        with _quiet_interrupt():
            uvicorn.run(
                "ollama_openai_bridge.app:create_app",
                factory=True,
                workers=settings.workers,
                **server,
            )
        return 0
    with _quiet_interrupt():
        return _serve_alone(settings, server, recycling=argv is None)


# The shell's status for a command stopped by SIGINT (128 + 2).
INTERRUPTED = 130


@contextlib.contextmanager
def _quiet_interrupt() -> Iterator[None]:
    """Ctrl+C ends the server gracefully (uvicorn catches SIGINT), then uvicorn raises the
    signal again for the default handler: without this, a KeyboardInterrupt traceback of 25
    lines after a clean stop (issue #19's review, L1). The exit status stays 130."""
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit(INTERRUPTED) from None


def _address_taken(settings: Settings) -> str | None:
    """Why PROXY_HOST:PROXY_PORT cannot be listened on, with what to do, or None when it can.

    Asked before uvicorn binds, which says only "[Errno 98] Address already in use": the
    usual cause is Ollama itself on 11434 (issue #19's review, L2). SO_REUSEADDR as uvicorn
    binds, so a port in TIME_WAIT is not reported."""
    host, port = settings.proxy_host, settings.proxy_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            if exc.errno == errno.EADDRINUSE:
                hint = " (Ollama itself listens there)" if port == 11434 else ""
                return (
                    f"cannot listen on {where}: another program uses the port{hint}; stop it, "
                    "or choose another port: PROXY_PORT=8080, or --port 8080"
                )
            return f"cannot listen on {where}: {exc.strerror or exc}; check PROXY_HOST/PROXY_PORT"
    return None


def _serve_alone(settings: Settings, options: dict[str, Any], *, recycling: bool) -> int:
    """One process: bind (or take over) the listening socket and serve; when the app asks to be
    recycled, shut down gracefully and run this command again on the same socket (recycle.py).
    uvicorn gets a duplicate of the socket, since its shutdown closes the sockets it serves."""
    from ollama_openai_bridge.app import create_app  # noqa: PLC0415 -- after the env is final

    recycled = False

    def recycle() -> None:
        nonlocal recycled
        recycled = True
        leave(server)

    app = create_app(settings, recycle=recycle if recycling else None)
    config = uvicorn.Config(app, **options)
    listener = inherited_listener()
    if listener is None:
        listener = config.bind_socket()
    else:
        structlog.get_logger("ollama_openai_bridge").info(
            "worker_recycled", detail="a fresh process serves the same socket"
        )
    server = uvicorn.Server(config)
    server.run(sockets=[listener.dup()])
    if recycled:
        exec_in_place(listener)
    return 0 if server.started else STARTUP_FAILURE
