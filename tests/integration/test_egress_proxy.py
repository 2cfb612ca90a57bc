"""Egress through an HTTP proxy from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY;
egress.py), against a real forward proxy on loopback (tests/forward_proxy.py): absolute-form
requests for an http:// backend, a CONNECT tunnel for an https:// one, NO_PROXY honoured, the
proxy's refusals said clearly, and its credentials never in a log line or an answer. The env
variables are set per test (tests/conftest.py removes any from the shell)."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from structlog.testing import capture_logs

from ollama_openai_bridge.errors import UpstreamUnavailable
from tests.fake_upstream import FakeUpstream
from tests.forward_proxy import forward_proxy, in_thread
from tests.integration.test_cli import Running, base_env, run_cli
from tests.scripted import JSON_BODY, answers, ok, run, serve, upstream

PASSWORD = "pw-test-1"
BASIC = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()


async def chat(base_url: str, client: str, **settings: Any) -> tuple[int, bytes, list[Any]]:
    """One POST /chat/completions through an Upstream: (its status, its body, the log events);
    a failure raised as mapped."""
    up = upstream(base_url, client, **settings)
    with capture_logs() as logs:
        await up.start()
        try:
            resp = await up.send("POST", "/chat/completions", b"{}", total=5.0)
            return resp.status, await up.read(resp), logs
        finally:
            await up.close()


@pytest.mark.parametrize("client", ["auto", "aiohttp"])
def test_an_http_backend_is_called_through_the_proxy_in_absolute_form(
    monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    async def scenario() -> None:
        async with forward_proxy(password=PASSWORD) as (proxy, relayed):
            monkeypatch.setenv("HTTP_PROXY", f"http://alice:{PASSWORD}@{proxy}")
            async with serve(answers(ok())) as (url, seen):
                status, body, logs = await chat(url, client)
            assert (status, body) == (200, JSON_BODY)
            # RFC 9112 §3.2.2: the whole URL to the proxy, with its credentials as Basic
            assert relayed.requests == [("POST", f"{url}/chat/completions", BASIC)]
            assert seen.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
            assert b"proxy-authorization" not in seen.requests[0].lower()
            (line,) = [e for e in logs if e["event"] == "upstream_client"]
            assert (line["client"], line["proxy"], line["log_level"]) == ("aiohttp", proxy, "info")
            assert PASSWORD not in repr(logs)

    run(scenario())


def test_an_https_backend_is_reached_through_a_connect_tunnel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(tls)

    async def scenario() -> None:
        async with forward_proxy(password=PASSWORD) as (proxy, relayed):
            monkeypatch.setenv("HTTPS_PROXY", f"http://alice:{PASSWORD}@{proxy}")
            monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # http:// only: unused
            async with serve(answers(ok()), tls=tls) as (url, seen):
                # the test's CA is not the system's: the tunnel, not the certificate, is tested
                status, body, _ = await chat(url, "auto", disable_ssl_verification=True)
            assert (status, body) == (200, JSON_BODY)
            host = url.split("//")[1].split("/")[0]  # localhost:port
            assert relayed.requests == [("CONNECT", host, BASIC)]  # RFC 9110 §9.3.6
            assert seen.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")

    run(scenario())


def test_no_proxy_keeps_the_backend_direct_and_on_http1(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with forward_proxy() as (proxy, relayed):
            monkeypatch.setenv("HTTP_PROXY", f"http://{proxy}")
            monkeypatch.setenv("NO_PROXY", "example.org, 127.0.0.0/8")
            async with serve(answers(ok())) as (url, seen):
                status, body, logs = await chat(url, "auto")
            assert (status, body) == (200, JSON_BODY)
            assert relayed.requests == []
            assert len(seen.requests) == 1
            (line,) = [e for e in logs if e["event"] == "upstream_client"]
            assert (line["client"], line["proxy"], line["log_level"]) == ("http1", None, "debug")

    run(scenario())


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_that_refuses_the_credentials_is_named_without_them(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    """A 407: for http:// the proxy's answer to the request itself, never relayed (a client
    would take it for its own proxy's, RFC 9110 §15.5.8); for https:// its answer to CONNECT
    (aiohttp's ClientHttpProxyError, whose text quotes the proxy URL, credentials included)."""
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(tls)

    async def scenario() -> None:
        async with forward_proxy(password="another-pw") as (proxy, relayed):
            monkeypatch.setenv(f"{scheme.upper()}_PROXY", f"http://alice:{PASSWORD}@{proxy}")
            server = serve(answers(ok()), tls=tls if scheme == "https" else None)
            async with server as (url, seen):
                with pytest.raises(UpstreamUnavailable) as caught:
                    await chat(url, "auto", disable_ssl_verification=True, max_retries=2)
            assert seen.requests == []
            assert len(relayed.requests) == 1  # no retry: the credentials will not change
        what = "tunnel" if scheme == "https" else "request"
        assert caught.value.status == 502
        assert caught.value.message == (
            f"the HTTP proxy {proxy} refused the {what} to upstream {url.split('/')[2]}: "
            "407 Proxy Authentication Required (credentials in the proxy URL missing or wrong)"
        )

    run(scenario())


def test_a_proxy_that_is_down_is_named_as_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with forward_proxy() as (proxy, _):
            pass  # its port is free again: nothing listens there
        monkeypatch.setenv("HTTPS_PROXY", f"http://alice:{PASSWORD}@{proxy}")
        with pytest.raises(UpstreamUnavailable) as caught:
            await chat("https://api.example/v1", "auto")
        message = caught.value.message
        assert message.startswith(
            f"cannot connect to the HTTP proxy {proxy} for upstream api.example: "
        )
        assert PASSWORD not in message

    run(scenario())


# --- the proxy command, end to end ------------------------------------------------------------


def test_the_command_calls_through_the_proxy_and_logs_no_credentials(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    chat_body = {
        "model": "gpt-4o-mini",
        "stream": False,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with in_thread(password=PASSWORD) as (proxy, relayed):
        env = {
            "OPENAI_API_BASE_URL": upstream.url,
            "OPENAI_API_KEY": upstream.api_key,
            "HTTP_PROXY": f"http://alice:{PASSWORD}@{proxy}",
            "NO_PROXY": "example.org",
            "LOG_LEVEL": "DEBUG",
        }
        server = Running(tmp_path, env)
        try:
            r = httpx.post(server.url + "/api/chat", json=chat_body, timeout=30)
        finally:
            out = server.stop()
    assert r.status_code == 200, r.text
    assert r.json()["message"]["content"] == "Hello!"
    assert ("POST", f"{upstream.url}/chat/completions", BASIC) in relayed.requests
    assert PASSWORD not in out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    (line,) = [e for e in lines if e["event"] == "upstream_client"]
    assert (line["client"], line["proxy"]) == ("aiohttp", proxy)


def test_the_command_with_http1_forced_and_a_proxy_does_not_start(tmp_path: Path) -> None:
    env = {
        **base_env(),
        "UPSTREAM_HTTP_CLIENT": "http1",
        "OPENAI_API_BASE_URL": "http://vllm.internal:8000/v1",
        "http_proxy": f"http://alice:{PASSWORD}@proxy.corp:3128",
    }
    out = run_cli(env=env, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr == (
        "ollama-openai-bridge: UPSTREAM_HTTP_CLIENT=http1 cannot call upstream 'default' "
        "(vllm.internal) through the HTTP proxy proxy.corp:3128 that http_proxy sets: the "
        "http1 client connects directly only; use auto or aiohttp (which use the proxy), or "
        "add vllm.internal to NO_PROXY\n"
    )
