"""Run the real app under uvicorn (uvloop + httptools) on a loopback port, in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import uvicorn

from ollama_openai_bridge import egress
from ollama_openai_bridge.app import create_app
from ollama_openai_bridge.config import Settings
from ollama_openai_bridge.transport import server_options

# Every setting's variable. The suite runs with the proxy's defaults: a setting exported in the
# shell of whoever runs it (PROXY_API_KEYS, MODEL_MAPPING_FILE, ...) would otherwise reach each
# Settings made here and each proxy process started, and fail tests for no fault of the code
# (issue #19's review, M2). UPSTREAM_HTTP_CLIENT stays: the Makefile's second pass sets it.
# OPENAI_BASE_URL too: the proxy refuses to start when it is set alone (config/settings.py).
# HTTP_PROXY and the others too, in either case (egress.py): every backend here is on loopback,
# and a proxy from a developer's or CI's shell would carry each call away from it (and the test
# clients with it: httpx and the OpenAI SDK read them as well). A test of egress sets its own.
SETTING_NAMES = (
    frozenset(name.upper() for name in Settings.model_fields)
    | {"OPENAI_BASE_URL"}
    | {v for name in egress.VARIABLES for v in (name, name.lower())}
)
KEPT_FROM_THE_SHELL = frozenset({"UPSTREAM_HTTP_CLIENT"})


def without_settings(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the proxy's settings (but KEPT_FROM_THE_SHELL) and proxy variables."""
    return {k: v for k, v in env.items() if k not in SETTING_NAMES - KEPT_FROM_THE_SHELL}


def settings_for(upstream_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_api_base_url": upstream_url,
        "openai_api_key": "sk-test-upstream",
        "max_retries": 0,
        "circuit_breaker_threshold": 0,  # tests of the breaker turn it on
        "connect_timeout": 2.0,
        "request_timeout": 10.0,
        "first_byte_timeout": 10.0,
        "stream_idle_timeout": 10.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class ProxyServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            loop="uvloop",
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            **server_options(settings),  # the command's protocol and forwarding options
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="proxy", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ProxyServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("proxy did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
