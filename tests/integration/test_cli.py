"""The real entry point, as a user starts it: a subprocess with env vars."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fake_upstream import FakeUpstream, Script


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ollama_openai_proxy", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "PROXY_", "LOG_", "MODEL_"))
    }
    env["PYTHONWARNINGS"] = "ignore"
    return env


def test_version_flag(tmp_path: Path) -> None:
    out = run_cli("--version", env=base_env(), cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.startswith("ollama-openai-proxy ")


def test_invalid_configuration_stops_with_one_clear_message(tmp_path: Path) -> None:
    env = {**base_env(), "PROXY_PORT": "http", "OPENAI_API_BASE_URL": "nope"}
    out = run_cli(env=env, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "invalid configuration:" in out.stderr
    assert "PROXY_PORT" in out.stderr
    assert "OPENAI_API_BASE_URL" in out.stderr


def test_serves_with_dotenv_and_logs_json_without_secrets(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / ".env").write_text(
        f"OPENAI_API_BASE_URL={upstream.url}\nOPENAI_API_KEY={upstream.api_key}\nPROXY_PORT={port}\nLOG_LEVEL=DEBUG\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ollama_openai_proxy"],
        env=base_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(url + "/api/version").status_code == 200
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
        r = httpx.post(
            url + "/api/chat",
            json={
                "model": "gpt-4o-mini",
                "stream": False,
                "messages": [{"role": "user", "content": "hi"}],
                "options": {"top_k": 1},
            },
        )
        assert r.json()["message"]["content"] == "Hello!"
        # an upstream error that echoes the key
        upstream.script(
            Script(status=401, error={"error": {"message": f"bad key {upstream.api_key}"}})
        )
        assert (
            httpx.post(
                url + "/api/chat",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
            ).status_code
            == 401
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells it.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in output
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    events = [line["event"] for line in lines]
    assert "started" in events
    assert "request" in events
    assert any(line.get("key") == "top_k" and line["level"] == "warning" for line in lines)
    assert all("request_id" in line for line in lines if line["event"] == "request")
    assert upstream.api_key not in output
