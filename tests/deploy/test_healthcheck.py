"""The container's HEALTHCHECK command, and the readiness probe of deploy/helm (``--ready``),
against a live proxy, a proxy with keys, a dead backend and a dead port."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from ollama_openai_bridge import healthcheck
from ollama_openai_bridge.healthcheck import inbound_key, url
from tests.fake_upstream import FakeUpstream
from tests.servers import ProxyServer, settings_for

# The module under test, not another copy the interpreter might find installed.
SRC = str(Path(healthcheck.__file__).resolve().parents[1])


def check(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ollama_openai_bridge.healthcheck"],
        env={"PROXY_PORT": str(port), "PROXY_HOST": "0.0.0.0", "PYTHONPATH": SRC},
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


def ready(port: int, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ollama_openai_bridge.healthcheck", "--ready"],
        env={"PROXY_PORT": str(port), "PYTHONPATH": SRC, **env},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_ready_sends_the_first_inbound_key(upstream: FakeUpstream, tmp_path: Path) -> None:
    """The Kubernetes readiness probe (deploy/helm): /ready is behind PROXY_API_KEYS."""
    keys = tmp_path / "keys"
    keys.write_text("# team keys\n\nkey-from-file\n")
    settings = settings_for(upstream.url, proxy_api_keys="key-a,key-b", proxy_api_keys_file=keys)
    with ProxyServer(settings) as server:
        out = ready(server.port)
        assert out.returncode == 1
        assert "401" in out.stderr
        assert ready(server.port, PROXY_API_KEYS=" key-a ,key-b").returncode == 0
        assert ready(server.port, PROXY_API_KEYS_FILE=str(keys)).returncode == 0
        out = ready(server.port, PROXY_API_KEYS="wrong-key")
        assert out.returncode == 1
        assert "wrong-key" not in out.stderr


def test_the_probe_never_goes_through_an_http_proxy(upstream: FakeUpstream) -> None:
    """A container whose backends are behind HTTP_PROXY has it set for the probe too; urlopen
    would send the probe (and its key) to the proxy, here a dead port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    proxies = {"HTTP_PROXY": dead, "http_proxy": dead, "HTTPS_PROXY": dead, "ALL_PROXY": dead}
    settings = settings_for(upstream.url, proxy_api_keys="key-a")
    with ProxyServer(settings) as server:
        out = ready(server.port, PROXY_API_KEYS="key-a", **proxies)
        assert out.returncode == 0, out.stderr
        live = subprocess.run(
            [sys.executable, "-m", "ollama_openai_bridge.healthcheck"],
            env={"PROXY_PORT": str(server.port), "PYTHONPATH": SRC, **proxies},
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert live.returncode == 0, live.stderr


def test_ready_fails_while_the_backend_is_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with ProxyServer(settings_for(f"http://127.0.0.1:{dead}/v1", health_check_timeout=1)) as server:
        assert check(server.port).returncode == 0  # alive...
        out = ready(server.port, HEALTH_CHECK_TIMEOUT="1")
        assert out.returncode == 1  # ...but not ready
        assert f"http://127.0.0.1:{server.port}/ready" in out.stderr
        assert "503" in out.stderr


def test_inbound_key_reads_keys_as_the_settings_do(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("  # comment\n\n  key-c  \nkey-d\n")
    assert inbound_key({}) is None
    assert inbound_key({"PROXY_API_KEYS": " , key-a,key-b"}) == "key-a"
    assert inbound_key({"PROXY_API_KEYS": "", "PROXY_API_KEYS_FILE": str(keys)}) == "key-c"
    settings = settings_for("http://127.0.0.1:1/v1", proxy_api_keys_file=keys)
    assert inbound_key({"PROXY_API_KEYS_FILE": str(keys)}) == settings.inbound_keys()[0]
    assert url({}, "/ready") == "http://127.0.0.1:11434/ready"
