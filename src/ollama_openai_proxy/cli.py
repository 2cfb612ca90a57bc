"""``ollama-openai-proxy``: validate the configuration, then serve with uvicorn."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from ollama_openai_proxy import __version__
from ollama_openai_proxy.app import create_app
from ollama_openai_proxy.config import ConfigError, load_settings
from ollama_openai_proxy.errors import Redactor
from ollama_openai_proxy.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ollama-openai-proxy",
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
    if args.env_file:
        overrides["_env_file"] = args.env_file
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"ollama-openai-proxy: {exc}", file=sys.stderr)
        return 2
    level = "DEBUG" if settings.debug else settings.log_level
    configure_logging(level, Redactor([settings.openai_api_key.get_secret_value()]))
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.proxy_host,
        port=settings.proxy_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=30,
    )
    return 0
