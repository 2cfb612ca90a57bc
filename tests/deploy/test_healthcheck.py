"""The container's HEALTHCHECK command against a live proxy and a dead port."""

from __future__ import annotations

import socket
import subprocess
import sys
from urllib.parse import urlsplit

from ollama_openai_proxy.healthcheck import url
from tests.servers import ProxyServer


def check(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ollama_openai_proxy.healthcheck"],
        env={"PROXY_PORT": str(port), "PROXY_HOST": "0.0.0.0"},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def test_healthy(proxy: ProxyServer) -> None:
    out = check(urlsplit(proxy.url).port or 0)
    assert out.returncode == 0, out.stderr


def test_unhealthy_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = check(port)
    assert out.returncode == 1
    assert f"unhealthy: http://127.0.0.1:{port}/health" in out.stderr


def test_url_follows_the_server_settings() -> None:
    assert url({}) == "http://127.0.0.1:11434/health"
    assert url({"PROXY_HOST": "::", "PROXY_PORT": "8080"}) == "http://127.0.0.1:8080/health"
    assert url({"PROXY_HOST": "10.0.0.5"}) == "http://10.0.0.5:11434/health"
    assert url({"PROXY_HOST": "::1"}) == "http://[::1]:11434/health"
    assert url({"SSL_CERTFILE": "/certs/c.pem"}) == "https://127.0.0.1:11434/health"
