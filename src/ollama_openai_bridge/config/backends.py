"""Settings of the backends the proxy calls: where they are (OPENAI_API_BASE_URL or
UPSTREAMS_FILE) and how requests are shaped for them, the timeouts and retries of a call, the
circuit breaker, the HTTP client and its connection pool, and how many calls run or wait at once.

:meth:`BackendSettings.topology` turns them into the validated backends (topology.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import NoDecode

from ollama_openai_bridge import egress, topology
from ollama_openai_bridge.config.parsing import ByteSize, ConfigError, ExistingFile, json_object
from ollama_openai_bridge.http1 import unsupported
from ollama_openai_bridge.profiles import PROFILES


class BackendSettings(BaseModel):
    """The backends, their timeouts, retries, breaker and client: a part of
    :class:`~ollama_openai_bridge.config.Settings`, which reads them from the environment."""

    model_config = ConfigDict(defer_build=True)  # validated only within Settings (settings.py)

    _topology: topology.Topology | None = PrivateAttr(None)

    openai_api_base_url: str = Field(
        "https://api.openai.com/v1",
        description="Base URL of the OpenAI-compatible backend, including /v1.",
    )
    openai_api_key: SecretStr = Field(
        SecretStr(""), description="Key sent upstream as 'Authorization: Bearer'; may be empty."
    )
    request_timeout: float = Field(
        300.0, gt=0, description="Seconds a non-streaming answer may take in all."
    )
    first_byte_timeout: float = Field(
        300.0, gt=0, description="Seconds a stream may take to produce its first line."
    )
    stream_idle_timeout: float = Field(
        300.0, gt=0, description="Longest silence inside a stream, in seconds."
    )
    stream_timeout: float = Field(
        0.0, ge=0, description="Seconds a whole stream may last; 0 = no limit."
    )
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a backend connection.")
    max_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Retries of a backend call that failed before any byte "
        "reached the client (connection errors, 429, 502, 503, 504).",
    )
    upstreams_file: ExistingFile = Field(
        None,
        description="YAML or JSON file of several backends, aliases and fallbacks; when set, "
        "it alone defines the backends (OPENAI_API_BASE_URL and OPENAI_API_KEY are ignored).",
    )
    disable_ssl_verification: bool = Field(
        False, description="Do not verify the backend's TLS certificate (unsafe)."
    )
    response_max_size: ByteSize = Field(
        256 * 1024 * 1024,
        gt=0,
        description="Largest whole (non-streamed) backend answer the proxy reads, after "
        "decompression (bytes, or 256MiB).",
    )
    health_check_timeout: float = Field(
        5.0, gt=0, description="Seconds /ready waits for the backend."
    )
    models_cache_ttl: float = Field(
        60.0, ge=0, description="Seconds the backend's model list is cached."
    )
    max_connections: int = Field(
        10000, ge=1, description="Most concurrent backend connections (open streams included)."
    )
    upstream_http_client: Literal["auto", "http1", "aiohttp"] = Field(
        "auto",
        description="The client that calls the backends: http1 (the proxy's own HTTP/1.1 "
        "client, half of aiohttp's CPU), aiohttp, or auto: http1 for every backend URL it "
        "handles, aiohttp for the others.",
    )
    backend_profile: str = Field(
        "auto",
        description="How requests are shaped for the backend at OPENAI_API_BASE_URL: auto "
        "(detected from its host) or a profile name (docs/BACKENDS.md).",
    )
    backend_extra_body: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="JSON object of fields added to every request body sent to the backend, "
        'e.g. {"reasoning_format": "parsed"}.',
    )
    backend_headers: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description='JSON object of headers sent with every backend call, e.g. {"HTTP-Referer": '
        '"https://example.org"}.',
    )
    # The circuit breaker (resilience.CircuitBreaker): one outcome per client call, retries
    # included; it opens on a failure rate, or on a run of failures while too few calls were seen
    # to judge a rate by.
    circuit_breaker_threshold: int = Field(
        5,
        ge=0,
        description="Calls in a row (each after its retries) that got no answer or a "
        "502/503/504 and open the circuit breaker while the window holds fewer than "
        "CIRCUIT_BREAKER_MIN_CALLS calls; 0 disables the breaker.",
    )
    circuit_breaker_failure_rate: float = Field(
        50.0,
        gt=0,
        le=100,
        description="Percentage of failed calls over CIRCUIT_BREAKER_WINDOW that opens the "
        "breaker, once the window holds CIRCUIT_BREAKER_MIN_CALLS calls.",
    )
    circuit_breaker_window: int = Field(
        30, ge=1, le=3600, description="Seconds of calls the failure rate is taken over."
    )
    circuit_breaker_min_calls: int = Field(
        20, ge=1, description="Calls the window must hold before its failure rate counts."
    )
    circuit_breaker_half_open_calls: int = Field(
        3,
        ge=1,
        le=1000,
        description="Trial calls let through at a time after the cooldown; that many successes "
        "close the breaker, one failure re-opens it.",
    )
    circuit_breaker_cooldown: float = Field(
        30.0,
        gt=0,
        description="Seconds an open breaker fails fast before trial calls are let through.",
    )
    max_concurrent_requests: int = Field(
        10000, ge=1, description="Most backend calls at once (an open stream counts until it ends)."
    )
    max_queued_requests: int = Field(
        1000, ge=0, description="Requests that may wait for a slot beyond that; more get 503."
    )
    queue_timeout: float = Field(
        30.0, gt=0, description="Seconds a queued request waits for a slot before 503."
    )

    @field_validator("openai_api_base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"must be an http:// or https:// URL, got {v!r}")
        return v

    @field_validator("openai_api_key")
    @classmethod
    def _api_key(cls, v: SecretStr) -> SecretStr:
        # README and .env.example show "sk-..."; copied as is, every call would get the
        # backend's 401 (issue #19's review, L3). Said at start instead.
        if "..." in v.get_secret_value() or "\u2026" in v.get_secret_value():
            raise ValueError(
                "is still the placeholder of README/.env.example ('sk-...'): set your "
                "backend's key, or leave it empty for a backend without keys"
            )
        return v

    @field_validator("upstream_http_client", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("backend_profile")
    @classmethod
    def _backend_profile(cls, v: str) -> str:
        v = v.strip().lower()
        if v != "auto" and v not in PROFILES:
            raise ValueError(f"unknown profile {v!r}; expected auto or one of {sorted(PROFILES)}")
        return v

    @field_validator("backend_extra_body", mode="before")
    @classmethod
    def _backend_extra_body(cls, v: Any) -> Any:
        return topology.check_extra_body(json_object(v))

    @field_validator("backend_headers", mode="before")
    @classmethod
    def _backend_headers(cls, v: Any) -> Any:
        return topology.check_headers(json_object(v))

    def topology(self, env: Mapping[str, str] | None = None) -> topology.Topology:
        """The backends: UPSTREAMS_FILE, or OPENAI_API_BASE_URL + OPENAI_API_KEY.

        ``api_key_env`` names are looked up in ``env`` (load_settings passes the environment
        over the .env file's values), read once and kept."""
        if self._topology is not None:
            return self._topology
        if self.upstreams_file is None:
            loaded = topology.single(
                self.openai_api_base_url,
                self.openai_api_key.get_secret_value(),
                self.backend_profile,
                self.backend_extra_body,
                self.backend_headers,
            )
        else:
            try:
                loaded = topology.load(self.upstreams_file, os.environ if env is None else env)
            except topology.TopologyError as exc:
                raise ConfigError(str(exc)) from None
        for spec in loaded.upstreams:
            # aiohttp turns user:password@ into Basic auth, and refuses it beside an
            # Authorization header ("Cannot combine AUTHORIZATION header with AUTH argument"):
            # every request of that upstream would fail, so say it at start (issue #19 review).
            # Replicas' URLs carry no credentials (balance_config refuses them): the base URL.
            url = urlsplit(spec.base_url)
            if (url.username or url.password) and (
                spec.api_key or any(k.lower() == "authorization" for k in spec.headers)
            ):
                raise ConfigError(
                    f"upstream {spec.name!r}: its base URL carries credentials (user:password@, "
                    "sent as Basic auth) and an API key or Authorization header is set too; a "
                    "backend takes one Authorization header: keep one of them"
                )
        for spec in loaded.upstreams:
            _check_egress(spec, self.upstream_http_client)
        if self.upstream_http_client == "http1":
            for spec in loaded.upstreams:
                reason = unsupported(spec.base_url)
                if reason is not None:
                    raise ConfigError(
                        f"UPSTREAM_HTTP_CLIENT=http1 cannot call upstream {spec.name!r}: it does "
                        f"not handle {reason}; use auto (aiohttp for that one) or aiohttp"
                    )
        self._topology = loaded
        return loaded


def _check_egress(spec: topology.UpstreamSpec, client: str) -> None:
    """Raise a ConfigError when an HTTP proxy from the process environment (HTTP_PROXY,
    HTTPS_PROXY, ALL_PROXY; read there as curl, requests and aiohttp read them, not from .env)
    applies to a URL of ``spec`` but cannot be used: one aiohttp cannot speak to (socks5://), or
    any under UPSTREAM_HTTP_CLIENT=http1, which connects directly only -- connecting directly
    anyway would bypass the operator's egress (issue #18's review, L2). Said by the proxy's
    host:port, never its credentials."""
    urls = [spec.base_url]
    if spec.balance is not None:
        urls += [replica.url for replica in spec.balance.replicas]
    for url in urls:
        host = urlsplit(url).hostname
        try:
            proxy = egress.proxy_for(url, os.environ)
        except egress.EgressError as exc:
            raise ConfigError(
                f"upstream {spec.name!r} ({host}): {exc}; add {host} to NO_PROXY to call it "
                "directly"
            ) from None
        if proxy is not None and client == "http1":
            raise ConfigError(
                f"UPSTREAM_HTTP_CLIENT=http1 cannot call upstream {spec.name!r} ({host}) "
                f"through the HTTP proxy {proxy.shown} that {proxy.variable} sets: the http1 "
                f"client connects directly only; use auto or aiohttp (which use the proxy), or "
                f"add {host} to NO_PROXY"
            )
