"""The real entry point, as a user starts it: a subprocess with env vars."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from ollama_openai_bridge.allocator import find_jemalloc
from tests.fake_upstream import FakeUpstream, Script
from tests.servers import without_settings


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ollama_openai_bridge", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def base_env() -> dict[str, str]:
    # and the OpenAI SDK's own variables (OPENAI_BASE_URL), which the proxy warns about
    env = {k: v for k, v in without_settings(os.environ).items() if not k.startswith("OPENAI_")}
    env["PYTHONWARNINGS"] = "ignore"
    return env


def test_version_flag(tmp_path: Path) -> None:
    out = run_cli("--version", env=base_env(), cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.startswith("ollama-openai-bridge ")


def test_invalid_configuration_stops_with_one_clear_message(tmp_path: Path) -> None:
    env = {**base_env(), "PROXY_PORT": "http", "OPENAI_API_BASE_URL": "nope"}
    out = run_cli(env=env, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "invalid configuration:" in out.stderr
    assert "PROXY_PORT" in out.stderr
    assert "OPENAI_API_BASE_URL" in out.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"},
            "OPENAI_BASE_URL is set (the OpenAI SDK's variable), but the proxy reads "
            "OPENAI_API_BASE_URL: set OPENAI_API_BASE_URL=http://127.0.0.1:8000/v1",
        ),
        ({"OPENAI_API_KEY": "sk-..."}, "OPENAI_API_KEY: Value error, is still the placeholder"),
    ],
    ids=["openai-sdk-variable", "placeholder-key"],
)
def test_first_hour_mistakes_stop_the_start_with_what_to_do(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    """What a new user copies or already has exported (issue #19's review, L3): the OpenAI
    SDK's OPENAI_BASE_URL was ignored (the proxy called api.openai.com with the other
    backend's key), and README's ``sk-...`` placeholder only failed at the first request."""
    out = run_cli(env={**base_env(), **env}, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert message in out.stderr


def test_a_port_in_use_is_named_with_the_setting_to_change(tmp_path: Path) -> None:
    """uvicorn alone said "[Errno 98] Address already in use" (issue #19's review, L2)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**base_env(), "PROXY_PORT": str(port)}
        out = run_cli(env=env, cwd=tmp_path)
    assert out.returncode == 3  # uvicorn's STARTUP_FAILURE
    assert "Traceback" not in out.stderr
    assert out.stderr == (
        f"ollama-openai-bridge: cannot listen on 127.0.0.1:{port}: another program uses the "
        "port; stop it, or choose another port: PROXY_PORT=8080, or --port 8080\n"
    )


def test_ctrl_c_stops_quietly(tmp_path: Path, upstream: FakeUpstream) -> None:
    """SIGINT, as Ctrl+C on `make run` sends it: a graceful stop, status 130, and no
    KeyboardInterrupt traceback after it (issue #19's review, L1)."""
    proxy = Running(tmp_path, {"OPENAI_API_BASE_URL": upstream.url})
    proxy.proc.send_signal(signal.SIGINT)
    proxy.proc.wait(timeout=30)
    out = proxy.stop()
    assert proxy.proc.returncode == 130
    assert "Traceback" not in out
    assert "KeyboardInterrupt" not in out


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
        [sys.executable, "-m", "ollama_openai_bridge"],
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


class Running:
    """The CLI in a subprocess, on a free port, with the given settings as env vars."""

    def __init__(
        self, tmp_path: Path, env: dict[str, str], scheme: str = "http", log: Path | None = None
    ) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = None if log is None else log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ollama_openai_bridge"],
            env={**base_env(), "PROXY_PORT": str(self.port), **env},
            cwd=tmp_path,
            stdout=subprocess.PIPE if self._log_file is None else self._log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Generous: several workers may be importing at once on a loaded machine.
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/health", verify=False)
                return
            except httpx.TransportError:
                exited = self.proc.poll() is not None
                if exited or time.monotonic() > deadline:
                    out = self.stop()  # leaves neither the process nor its log file open
                    pytest.fail(f"proxy {'exited' if exited else 'did not start'}:\n{out[-3000:]}")
                time.sleep(0.1)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        if self._log_file is None or self.log is None:
            return out
        self._log_file.close()
        return self.log.read_text()


def test_graceful_shutdown_lets_open_streams_finish(tmp_path: Path, upstream: FakeUpstream) -> None:
    env = {
        "OPENAI_API_BASE_URL": upstream.url,
        "OPENAI_API_KEY": upstream.api_key,
        "SHUTDOWN_GRACE_PERIOD": "10",
    }
    server = Running(tmp_path, env)
    upstream.script(Script(chunks=[{"content": str(i)} for i in range(10)], delay=0.1))
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(base_url=server.url) as c, c.stream("POST", "/api/chat", json=chat) as r:
        lines = r.iter_lines()
        first = next(lines)
        server.proc.send_signal(signal.SIGTERM)  # mid-stream
        rest = list(lines)
    out = server.stop()
    parsed = [json.loads(x) for x in [first, *rest]]
    assert "".join(x["message"]["content"] for x in parsed) == "0123456789"
    assert parsed[-1]["done"] is True
    assert "Traceback" not in out
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/health")  # no longer accepting


# A stream the grace period cannot see through: two events, then three seconds of silence.
_STALLED = Script(chunks=[{"content": "Hel"}, {"content": "lo"}], stall_after=2)
_STREAMS = (
    ("/api/chat", {"messages": [{"role": "user", "content": "x"}]}),
    ("/v1/messages", {"max_tokens": 9, "messages": [{"role": "user", "content": "x"}]}),
    ("/v1/responses", {"input": "x"}),
)


def test_streams_cut_by_shutdown_end_with_an_error_in_their_dialect(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """SHUTDOWN_GRACE_PERIOD over, uvicorn cancels what still runs: each stream ended with a
    cut connection (curl exit 18) and the log had 'Exception in ASGI application' with a
    traceback. Now each ends with its dialect's error, and a request still waiting for the
    backend's first byte is a 503; each logged once, no traceback."""
    env = {
        "OPENAI_API_BASE_URL": upstream.url,
        "OPENAI_API_KEY": upstream.api_key,
        "SHUTDOWN_GRACE_PERIOD": "1",
    }
    server = Running(tmp_path, env)
    upstream.script(_STALLED, _STALLED, _STALLED, Script(first_delay=10))
    tails: dict[str, list[str]] = {}
    answers: list[httpx.Response] = []
    chat = {"model": "gpt-4o-mini", "stream": False, **_STREAMS[0][1]}

    def waiting() -> None:  # for the backend's first byte when the grace period ends
        answers.append(httpx.post(server.url + "/api/chat", json=chat, timeout=30))

    def asked() -> int:
        return sum(e["path"] == "/v1/chat/completions" for e in upstream.journal)

    try:
        with ExitStack() as stack:
            c = stack.enter_context(httpx.Client(base_url=server.url, timeout=30))
            lines = {}
            for path, body in _STREAMS:
                json_body = {"model": "gpt-4o-mini", "stream": True, **body}
                r = stack.enter_context(c.stream("POST", path, json=json_body))
                lines[path] = r.iter_lines()
                next(lines[path])  # under way
            thread = threading.Thread(target=waiting)
            thread.start()
            deadline = time.monotonic() + 10
            while asked() < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            for path, it in lines.items():
                tails[path] = [line for line in it if line]
            thread.join(30)
    finally:
        out = server.stop()
    assert "Traceback" not in out
    assert "Exception in ASGI application" not in out
    last = json.loads(tails["/api/chat"][-1])
    assert last["error"].startswith("the proxy is shutting down")
    assert "done" not in last
    anthropic = tails["/v1/messages"][-2:]
    assert anthropic[0] == "event: error"
    error = json.loads(anthropic[1].removeprefix("data: "))
    assert error["error"]["type"] == "overloaded_error"  # the anthropic SDKs retry it
    events = [
        json.loads(line.removeprefix("data: "))
        for line in tails["/v1/responses"]
        if line.startswith("data: ")
    ]
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1]["response"]["error"]["code"] == "server_error"  # Codex retries it
    (answer,) = answers
    assert answer.status_code == 503
    assert answer.json()["error"].startswith("the proxy is shutting down")
    logged = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    failed = [e for e in logged if e["event"] == "request_failed"]
    assert sorted(e.get("stage", "") for e in failed) == ["", "stream", "stream", "stream"]
    assert {e["reason"] for e in failed} == {"ShuttingDown"}


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (skips the test without openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls(tmp_path: Path, upstream: FakeUpstream) -> None:
    cert, key = self_signed(tmp_path)
    env = {"OPENAI_API_BASE_URL": upstream.url, "SSL_CERTFILE": str(cert), "SSL_KEYFILE": str(key)}
    server = Running(tmp_path, env, scheme="https")
    try:
        assert (
            httpx.get(
                server.url + "/api/version", verify=ssl.create_default_context(cafile=str(cert))
            ).status_code
            == 200
        )
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.port}/api/version")  # plain HTTP is refused
        # the container HEALTHCHECK follows SSL_CERTFILE to HTTPS
        check = subprocess.run(
            [sys.executable, "-m", "ollama_openai_bridge.healthcheck"],
            env={**env, "PROXY_PORT": str(server.port)},
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert check.returncode == 0, check.stderr
    finally:
        server.stop()


def test_workers_share_one_metrics_view(tmp_path: Path, upstream: FakeUpstream) -> None:
    env = {"OPENAI_API_BASE_URL": upstream.url, "WORKERS": "2"}
    server = Running(tmp_path, env)
    try:
        with httpx.Client(base_url=server.url) as c:
            for _ in range(20):
                c.get("/api/version", headers={"Connection": "close"})
        values = set()
        for _ in range(6):  # whichever worker answers, the counts cover both
            text = httpx.get(server.url + "/v1/metrics", headers={"Connection": "close"}).text
            m = re.search(
                r'ollama_proxy_requests_total\{endpoint="/api/version",model="",status="200"\} (\S+)',
                text,
            )
            assert m, text[:500]
            values.add(float(m.group(1)))
        assert values == {20.0}
    finally:
        server.stop()


def test_inbound_keys_never_logged(tmp_path: Path, upstream: FakeUpstream) -> None:
    secret = "inbound-secret-0123456789"
    env = {
        "OPENAI_API_BASE_URL": upstream.url,
        "OPENAI_API_KEY": upstream.api_key,
        "PROXY_API_KEYS": secret,
        "LOG_LEVEL": "DEBUG",
    }
    server = Running(tmp_path, env)
    try:
        ok = httpx.post(
            server.url + "/api/chat",
            headers={"Authorization": f"Bearer {secret}"},
            json={
                "model": "gpt-4o-mini",
                "stream": False,
                "messages": [{"role": "user", "content": secret}],
            },
        )
        assert ok.status_code == 200
        assert (
            httpx.get(
                server.url + "/api/tags", headers={"Authorization": f"Bearer {secret}x"}
            ).status_code
            == 401
        )
        httpx.post(
            server.url + "/api/chat",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": secret, "messages": [{"role": "user", "content": "x"}]},
        )
    finally:
        out = server.stop()
    assert secret not in out
    assert upstream.api_key not in out
    access = [json.loads(x) for x in out.splitlines() if '"event":"request"' in x]
    chat_line = next(x for x in access if x["path"] == "/api/chat" and x["status"] == 200)
    assert (chat_line["model"], chat_line["prompt_tokens"], chat_line["completion_tokens"]) == (
        "gpt-4o-mini",
        7,
        2,
    )
    assert chat_line["duration_ms"] > 0
    assert chat_line["upstream"] == "default"  # which backend served it (UPSTREAMS_FILE names)


@pytest.mark.parametrize("choice", ["auto", "pymalloc"])
def test_memory_allocator(tmp_path: Path, upstream: FakeUpstream, choice: str) -> None:
    """`auto` re-executes the command on jemalloc when installed: same pid, same port."""
    env = {
        "OPENAI_API_BASE_URL": upstream.url,
        "OPENAI_API_KEY": upstream.api_key,
        "MEMORY_ALLOCATOR": choice,
    }
    server = Running(tmp_path, env)
    try:
        expected = "jemalloc" if choice == "auto" and find_jemalloc() else "pymalloc"
        assert httpx.get(server.url + "/v1/version").json()["allocator"] == expected
        maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
        assert ("libjemalloc" in maps) == (expected == "jemalloc")
        chat = {
            "model": "gpt-4o-mini",
            "stream": False,
            "messages": [{"role": "user", "content": "x"}],
        }
        assert httpx.post(server.url + "/api/chat", json=chat).json()["done"] is True
    finally:
        out = server.stop()
    assert "Traceback" not in out
