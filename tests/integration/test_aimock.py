"""A third-party OpenAI mock (@copilotkit/aimock, npm) as the upstream, driven by the ollama SDK."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from tests.servers import ProxyServer, settings_for

AIMOCK = Path(__file__).resolve().parents[1] / "aimock"
CLI = AIMOCK / "node_modules" / "@copilotkit" / "aimock" / "dist" / "cli.js"

CLIENT = "ollama-python, aimock upstream"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def aimock() -> Iterator[str]:
    node = shutil.which("node")
    if node is None or not CLI.exists():
        if os.environ.get("REQUIRE_AIMOCK"):
            pytest.fail(f"aimock is not installed: run `npm ci --prefix {AIMOCK}`")
        pytest.skip("aimock not installed (npm ci --prefix tests/aimock)")
    port = _free_port()
    proc = subprocess.Popen(
        [node, str(CLI), "-p", str(port), "-h", "127.0.0.1", "-f", str(AIMOCK / "fixtures")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "/v1/models", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("aimock did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def client(aimock: str) -> Iterator[ollama.Client]:
    with (
        ProxyServer(settings_for(aimock + "/v1", openai_api_key="mock")) as proxy,
        ollama.Client(host=proxy.url) as c,
    ):
        yield c


def journal(aimock: str) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = httpx.get(aimock + "/__aimock/journal").json()
    return entries


HELLO = "Hello! How can I help you today? Grüße, 日本語 🎉"


@pytest.mark.compat(CLIENT, "list models")
def test_list(client: ollama.Client) -> None:
    names = [m.model for m in client.list().models]
    assert "gpt-4o" in names
    assert "text-embedding-3-small" in names


@pytest.mark.compat(CLIENT, "chat stream")
def test_chat_streaming_and_not(client: ollama.Client) -> None:
    parts = list(
        client.chat(model="gpt-4o", messages=[{"role": "user", "content": "hello"}], stream=True)
    )
    assert "".join(p.message.content or "" for p in parts) == HELLO
    assert parts[-1].done
    assert parts[-1].eval_count == 12
    assert [p for p in parts if p.done] == [parts[-1]]
    r = client.chat(model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
    assert r.message.content == HELLO


@pytest.mark.compat(CLIENT, "generate stream")
def test_generate_stream(client: ollama.Client) -> None:
    parts = list(client.generate(model="gpt-4o", prompt="hello", stream=True))
    assert "".join(p.response or "" for p in parts) == HELLO


@pytest.mark.compat(CLIENT, "tools")
def test_tool_call_arrives_with_object_arguments(client: ollama.Client) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    for stream in (False, True):
        if stream:
            parts = list(
                client.chat(
                    model="gpt-4o",
                    messages=[{"role": "user", "content": "weather in paris"}],
                    tools=tools,
                    stream=True,
                )
            )
            calls = [c for p in parts for c in (p.message.tool_calls or [])]
        else:
            calls = list(
                client.chat(
                    model="gpt-4o",
                    messages=[{"role": "user", "content": "weather in paris"}],
                    tools=tools,
                ).message.tool_calls
                or []
            )
        assert len(calls) == 1
        assert calls[0].function.name == "get_weather"
        assert calls[0].function.arguments == {"city": "Paris", "unit": "celsius"}


@pytest.mark.compat(CLIENT, "errors")
def test_upstream_429_kept(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="gpt-4o", messages=[{"role": "user", "content": "rate limit me"}])
    assert info.value.status_code == 429
    assert info.value.error == "Rate limit exceeded"


def test_what_the_proxy_sent(client: ollama.Client, aimock: str) -> None:
    list(
        client.chat(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            options={"num_ctx": 2048, "temperature": 0.1},
        )
    )
    chats = [e for e in journal(aimock) if e.get("path") == "/v1/chat/completions"]
    sent = max(chats, key=lambda e: e["timestamp"])["body"]  # type: ignore[arg-type,return-value]
    assert isinstance(sent, dict), sent
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["temperature"] == 0.1
    assert "num_ctx" not in sent
    assert "options" not in sent
    assert "tools" not in sent
