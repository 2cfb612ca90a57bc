"""HTTP proxies from the environment (egress.py): which applies to a backend URL, the client that
calls it (upstream.client_for), the start refused where one cannot be used (config/backends.py),
and the proxy's credentials among the secrets the redactor removes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from ollama_openai_bridge import egress
from ollama_openai_bridge.balance_config import BalanceSpec, ReplicaSpec
from ollama_openai_bridge.config import ConfigError, load_settings
from ollama_openai_bridge.errors import Redactor
from ollama_openai_bridge.topology import UpstreamSpec
from ollama_openai_bridge.upstream import Upstream, client_for
from tests.servers import settings_for

PROXY = "http://proxy.corp:3128"


def via(url: str, **env: str) -> str | None:
    """The proxy URL ``env`` sets for ``url``, None: directly."""
    proxy = egress.proxy_for(url, env)
    return None if proxy is None else proxy.url


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        # the scheme's own variable, then ALL_PROXY (curl's and requests' order)
        ("http://api.example/v1", {"HTTP_PROXY": PROXY}, PROXY),
        ("https://api.example/v1", {"HTTP_PROXY": PROXY}, None),
        ("https://api.example/v1", {"HTTPS_PROXY": PROXY}, PROXY),
        ("http://api.example/v1", {"HTTPS_PROXY": PROXY}, None),
        ("https://api.example/v1", {"ALL_PROXY": PROXY}, PROXY),
        ("http://api.example/v1", {"all_proxy": PROXY}, PROXY),
        ("https://api.example/v1", {"HTTPS_PROXY": PROXY, "ALL_PROXY": "http://b:1"}, PROXY),
        # lower case wins; set empty, it turns the upper-case one off (urllib's rule)
        ("https://api.example/v1", {"HTTPS_PROXY": "http://b:1", "https_proxy": PROXY}, PROXY),
        ("https://api.example/v1", {"HTTPS_PROXY": PROXY, "https_proxy": ""}, None),
        ("https://api.example/v1", {"HTTPS_PROXY": ""}, None),
        # a bare host:port is http:// (curl, requests)
        ("https://api.example/v1", {"HTTPS_PROXY": "proxy.corp:3128"}, PROXY),
    ],
)
def test_the_variable_that_applies(url: str, env: dict[str, str], expected: str | None) -> None:
    assert via(url, **env) == expected


@pytest.mark.parametrize(
    ("url", "no_proxy", "bypassed"),
    [
        ("https://api.example/v1", "*", True),
        ("https://api.example/v1", "other.example, *", True),
        ("https://api.example/v1", "api.example", True),
        ("https://API.Example/v1", "api.example", True),  # host names are not case-sensitive
        ("https://eu.api.example/v1", "api.example", True),  # a subdomain
        ("https://eu.api.example/v1", ".api.example", True),
        ("https://eu.api.example/v1", "*.api.example", True),
        ("https://api.example/v1", ".api.example", True),
        ("https://notapi.example/v1", "api.example", False),  # a suffix, not a subdomain
        ("https://api.example/v1", "example.org,localhost", False),
        ("https://api.example/v1", "api.example:443", True),  # the scheme's default port
        ("https://api.example/v1", "api.example:8443", False),
        ("http://api.example:8000/v1", "api.example:8000", True),
        ("http://api.example:8000/v1", "api.example:80", False),
        ("http://10.1.2.3:8000/v1", "10.0.0.0/8", True),  # CIDR
        ("http://11.1.2.3:8000/v1", "10.0.0.0/8", False),
        ("http://10.1.2.3:8000/v1", "10.1.2.3", True),
        ("http://10.1.2.3:8000/v1", "10.1.2.3:8000", True),
        ("http://[fd00::5]:8000/v1", "fd00::/8", True),
        ("http://[::1]:8000/v1", "::1", True),
        ("http://[::1]:8000/v1", "[::1]:8000", True),
        ("http://[::1]:8000/v1", "[::1]:9000", False),
        ("http://vllm.internal:8000/v1", "10.0.0.0/8", False),  # a name is not resolved
        ("http://127.0.0.1:8000/v1", "localhost", False),  # nor is localhost an address
    ],
)
def test_no_proxy(url: str, no_proxy: str, bypassed: bool) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        env = {"HTTP_PROXY": PROXY, "HTTPS_PROXY": PROXY, name: no_proxy}
        assert (via(url, **env) is None) is bypassed


def test_what_a_proxy_shows_is_its_host_and_port_alone() -> None:
    proxy = egress.proxy_for(
        "https://api.example/v1", {"HTTPS_PROXY": "http://alice:pw-test-1@proxy.corp:3128"}
    )
    assert proxy is not None
    assert proxy.url == "http://alice:pw-test-1@proxy.corp:3128"  # what aiohttp is given
    assert (proxy.shown, proxy.variable) == ("proxy.corp:3128", "HTTPS_PROXY")
    assert "pw-test-1" not in repr(proxy)
    bare = egress.proxy_for("http://a.example/v1", {"http_proxy": "http://[fd00::1]"})
    assert bare is not None
    assert (bare.shown, bare.variable) == ("[fd00::1]:80", "http_proxy")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "socks5://alice:pw-test-1@proxy.corp:1080",
            "ALL_PROXY names a socks5:// proxy (proxy.corp:1080); only http:// proxies are "
            "supported",
        ),
        (
            "https://proxy.corp",
            "ALL_PROXY names a https:// proxy (proxy.corp:443); only http:// proxies are supported",
        ),
        ("http://", "ALL_PROXY is not a proxy URL (http://host:port)"),
        ("http://proxy.corp:port", "ALL_PROXY is not a proxy URL (http://host:port)"),
    ],
)
def test_a_proxy_aiohttp_cannot_use_is_refused(value: str, message: str) -> None:
    with pytest.raises(egress.EgressError) as caught:
        egress.proxy_for("https://api.example/v1", {"ALL_PROXY": value})
    assert str(caught.value) == message
    # ... only when it applies
    assert egress.proxy_for("https://api.example/v1", {"ALL_PROXY": value, "NO_PROXY": "*"}) is None


def test_the_credentials_of_every_proxy_variable_are_secrets() -> None:
    env = {
        "HTTPS_PROXY": "http://alice:pw%40test-1@proxy.corp:3128",
        "http_proxy": "http://token-test-2@proxy.corp:3128",  # a user name alone: a token
        "ALL_PROXY": "bob:pw-test-3@proxy.corp:3128",
        "NO_PROXY": "user:not-a-proxy@x",  # not a proxy's
        "FTP_PROXY": "http://u:pw-test-4@proxy.corp",  # not read
    }
    assert sorted(egress.secrets(env)) == [
        "pw%40test-1",
        "pw-test-3",
        "pw@test-1",  # as aiohttp decodes it into Proxy-Authorization
        "token-test-2",
    ]


# --- the client of each upstream --------------------------------------------------------------


def test_auto_takes_aiohttp_where_a_proxy_applies_and_http1_elsewhere() -> None:
    env = {"HTTPS_PROXY": "http://alice:pw-test-1@proxy.corp:3128", "NO_PROXY": "10.0.0.0/8"}
    client, why, proxy = client_for("auto", "https://api.openai.com/v1", env)
    assert (client, why) == ("aiohttp", "HTTPS_PROXY applies: the http1 client connects directly")
    assert proxy is not None
    assert proxy.shown == "proxy.corp:3128"
    assert client_for("auto", "http://10.0.0.7:8000/v1", env) == (
        "http1",
        "UPSTREAM_HTTP_CLIENT=auto",
        None,
    )
    # aiohttp chosen: it uses the proxy too (it did not before: trust_env was off)
    assert client_for("aiohttp", "https://api.openai.com/v1", env)[2] == proxy
    assert client_for("aiohttp", "http://10.0.0.7:8000/v1", env)[2] is None


def test_the_upstream_client_line_names_the_client_and_the_proxy_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:pw-test-1@proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    balance = BalanceSpec(
        (
            ReplicaSpec("https://a.example/v1", name="a"),
            ReplicaSpec("http://127.0.0.1:9/v1", name="b"),
        )
    )
    spec = UpstreamSpec("pool", "https://a.example/v1", balance=balance)

    async def started() -> list[Any]:
        up = Upstream(settings_for("https://a.example/v1"), spec)
        with capture_logs() as logs:
            await up.start()
        await up.close()
        return logs

    (line,) = [e for e in asyncio.run(started()) if e["event"] == "upstream_client"]
    assert line == {
        "event": "upstream_client",
        "log_level": "info",  # a proxy decides where every call goes
        "upstream": "pool",
        "client": "aiohttp",
        "reason": "HTTPS_PROXY applies: the http1 client connects directly",
        "proxy": "a.example via proxy.corp:3128, 127.0.0.1:9 via direct",
    }


def test_no_proxy_keeps_the_debug_line_and_http1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    up = Upstream(settings_for("http://127.0.0.1:9/v1"), UpstreamSpec("d", "http://127.0.0.1:9/v1"))
    assert up.client == "http1"


# --- the start --------------------------------------------------------------------------------


def test_http1_forced_with_a_proxy_that_applies_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:pw-test-1@proxy.corp:3128")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, upstream_http_client="http1")
    assert str(caught.value) == (
        "UPSTREAM_HTTP_CLIENT=http1 cannot call upstream 'default' (api.openai.com) through "
        "the HTTP proxy proxy.corp:3128 that HTTPS_PROXY sets: the http1 client connects "
        "directly only; use auto or aiohttp (which use the proxy), or add api.openai.com to "
        "NO_PROXY"
    )
    assert "\n" not in str(caught.value)
    monkeypatch.setenv("NO_PROXY", "api.openai.com")
    assert load_settings(_env_file=None, upstream_http_client="http1").topology().names == (
        "default",
    )


def test_a_proxy_that_cannot_be_used_stops_the_start_whatever_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5h://alice:pw-test-1@proxy.corp:1080")
    for client in ("auto", "aiohttp"):
        with pytest.raises(ConfigError) as caught:
            load_settings(_env_file=None, upstream_http_client=client)
        assert str(caught.value) == (
            "upstream 'default' (api.openai.com): ALL_PROXY names a socks5h:// proxy "
            "(proxy.corp:1080); only http:// proxies are supported; add api.openai.com to "
            "NO_PROXY to call it directly"
        )


def test_the_proxy_password_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:pw-test-1@proxy.corp:3128")
    redact = Redactor(load_settings(_env_file=None).secrets())
    assert redact("via http://alice:pw-test-1@proxy.corp:3128") == (
        "via http://alice:[redacted]@proxy.corp:3128"
    )
