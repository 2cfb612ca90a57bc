"""Settings from environment variables and ``.env``, validated once at start.

Every setting is documented in docs/CONFIGURATION.md; ``Settings.model_fields`` is the source of
truth and a test keeps the two in step.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ollama_openai_proxy import budget_plan, topology
from ollama_openai_proxy.http1 import unsupported
from ollama_openai_proxy.limits import Limits
from ollama_openai_proxy.model_map import CAPABILITIES, ModelMap, ModelMeta
from ollama_openai_proxy.policy import THINK_STYLES, Policy
from ollama_openai_proxy.profiles import PROFILES

# The Ollama release whose REST API the proxy serves, reported by /api/version. 0.30.0 is the
# release of the newest fields it answers (`capabilities`, `details.context_length` and
# `embedding_length` in /api/tags), after /api/status (0.16.2) and `think: "max"` (0.22.0).
# Clients gate features on this number: Codex's --oss mode requires at least 0.13.4, VS Code
# Copilot 0.6.4, and Open WebUI parses it as dotted integers (routers/ollama.py).
OLLAMA_API_VERSION = "0.30.0"
DEFAULT_AUTH_FAILURE_LIMIT = "10/minute"

_ORIGIN = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^\s,]*|[^\s,]*\*[^\s,]*)$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """Bytes from ``1048576``, ``"64MB"``, ``"64MiB"``, ``"1g"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(
            f"not a size: {value!r} (use bytes, or a number with KB/MB/GB/KiB/MiB/GiB)"
        )
    number, unit = float(m.group(1)), (m.group(2) or "b").lower()
    return int(number * (1024 if "i" in unit else 1000) ** "bkmg".index(unit[0]))


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )
    _topology: topology.Topology | None = PrivateAttr(None)

    openai_api_base_url: str = Field(
        "https://api.openai.com/v1",
        description="Base URL of the OpenAI-compatible backend, including /v1.",
    )
    openai_api_key: SecretStr = Field(
        SecretStr(""), description="Key sent upstream as 'Authorization: Bearer'; may be empty."
    )
    proxy_host: str = Field("127.0.0.1", description="Interface to listen on (0.0.0.0 for all).")
    proxy_port: int = Field(11434, ge=1, le=65535, description="Port to listen on (Ollama's).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Log level."
    )
    debug: bool = Field(False, description="Shortcut for LOG_LEVEL=DEBUG.")
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
    model_mapping_file: Path | None = Field(
        None,
        description="JSON file: alias -> upstream id, or alias -> {model, context_length, "
        "capabilities, think_style, max_output_tokens}.",
    )
    upstreams_file: Path | None = Field(
        None,
        description="YAML or JSON file of several backends, aliases and fallbacks; when set, "
        "it alone defines the backends (OPENAI_API_BASE_URL and OPENAI_API_KEY are ignored).",
    )
    disable_ssl_verification: bool = Field(
        False, description="Do not verify the backend's TLS certificate (unsafe)."
    )
    cors_origins: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Comma-separated browser origins allowed besides Ollama's local defaults "
        "(as OLLAMA_ORIGINS): '*' inside an origin is a wildcard (chrome-extension://*), "
        "'*' alone allows any origin.",
    )
    request_max_size: int = Field(
        64 * 1024 * 1024, gt=0, description="Largest accepted request body (bytes, or 64MB/64MiB)."
    )
    response_max_size: int = Field(
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
    passthrough_options: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Comma-separated Ollama options forwarded as-is, "
        "optionally renamed: 'top_k,min_p,repeat_penalty=repetition_penalty'.",
    )
    default_context_length: int = Field(
        32768, ge=256, description="Context length /api/show reports for unknown models."
    )
    think_style: Literal[
        "auto",
        "reasoning_effort",
        "openrouter",
        "chat_template_kwargs",
        "thinking",
        "groq",
        "none",
    ] = Field(
        "auto",
        description="How 'think' reaches the backend: auto (as its backend profile says), "
        "reasoning_effort (OpenAI), openrouter (reasoning object), chat_template_kwargs "
        "(vLLM/SGLang enable_thinking), thinking (Anthropic), groq (reasoning_format), none.",
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
    max_output_tokens: int = Field(
        0,
        ge=0,
        description="The most output tokens a request may ask for (num_predict, max_tokens, "
        "max_output_tokens): more is lowered to it, for models whose limit neither the "
        "backend's model list nor MODEL_MAPPING_FILE gives; 0 = no limit.",
    )
    completions_max_tokens: int = Field(
        2048,
        ge=1,
        description="max_tokens for /v1/completions (generate with suffix or raw) "
        "when the client sets no num_predict; those endpoints default to 16.",
    )
    embed_max_inputs: int = Field(
        2048,
        ge=1,
        description="Most inputs in one /api/embed or /v1/embeddings request (OpenAI's limit).",
    )
    request_max_values: int = Field(
        500_000,
        ge=1000,
        description="Most commas (JSON values, or commas in text) in a body the proxy parses; "
        "checked before parsing, which costs memory per value.",
    )
    request_max_messages: int = Field(
        100_000, ge=1, description="Most messages in one chat request."
    )
    request_max_images: int = Field(
        3000, ge=1, description="Most images in one request, all messages together."
    )
    request_max_tools: int = Field(
        1024, ge=1, description="Most tools in one request, and tool calls in one message."
    )
    request_max_stop: int = Field(256, ge=1, description="Most stop sequences in one request.")
    request_max_context: int = Field(
        262_144,
        ge=1,
        description="Most integers in a generate request's 'context', and in the context an "
        "answer returns.",
    )
    context_signing_key: SecretStr = Field(
        SecretStr(""),
        description="Secret that signs generate's 'context' (HMAC-SHA256), at least 32 "
        "characters; unset = a random key per start of the proxy, so contexts do not survive "
        "a restart nor move between instances.",
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
    proxy_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated keys clients must send as "
        "'Authorization: Bearer <key>'; unset = no authentication.",
    )
    proxy_api_keys_file: Path | None = Field(
        None, description="File with one inbound key per line (added to PROXY_API_KEYS)."
    )
    auth_failure_limit: str = Field(
        DEFAULT_AUTH_FAILURE_LIMIT,
        description="Failed authentications allowed per client address (with PROXY_API_KEYS), "
        "in the limits library's notation; beyond it that address gets 429 until the window "
        "frees an attempt. Empty = no limit.",
    )
    rate_limit: str = Field(
        "",
        description="Requests allowed per client, e.g. '60/minute' or '10/second;500/hour' "
        "(the limits library's notation); empty = no limit.",
    )
    rate_limit_storage_uri: str = Field(
        "memory://",
        description="Where rate-limit counters live: memory:// (one instance) or "
        "redis://host:6379 (shared by several instances).",
    )
    token_budget: str = Field(
        "",
        description="Tokens (prompt + completion) each inbound key may use per fixed UTC window "
        "(minute, hour, day, month), e.g. '20k/minute;1M/day'; then 429 until the window ends. "
        "Empty = no budget but TOKEN_BUDGETS_FILE's. Needs PROXY_API_KEYS.",
    )
    token_budgets_file: Path | None = Field(
        None,
        description="YAML or JSON file of key id (the first 8 hex digits of the key's SHA-256) "
        "-> budget, or -> {name, budget}: budgets per key, and names for the usage endpoint, "
        "logs and metrics.",
    )
    token_budget_storage_uri: str = Field(
        "",
        pattern=r"^$|^(memory|redis|rediss)://",
        description="Where token counts live: memory:// or redis://host:6379 (replicas share "
        "the budgets). Empty = RATE_LIMIT_STORAGE_URI if that is Redis, else memory.",
    )
    usage_admin_key: SecretStr = Field(
        SecretStr(""),
        description="Key (at least 16 characters, not an inbound key) that reads every key's "
        "usage at /v1/usage; an inbound key reads its own.",
    )
    tool_call_store_uri: str = Field(
        "",
        pattern=r"^$|^(memory|redis|rediss)://",
        description="Where the backend's ids and provider data of tool calls (Gemini 3's "
        "thought signatures) are kept for the next turn: memory:// or redis://host:6379 "
        "(replicas share them). Empty = RATE_LIMIT_STORAGE_URI if that is Redis, else memory.",
    )
    tool_call_store_ttl: float = Field(
        3600, gt=0, description="Seconds a tool call's kept data lives (TOOL_CALL_STORE_URI)."
    )
    tool_call_store_size: int = Field(
        10_000, ge=1, description="Tool calls kept in each process's memory at most."
    )
    enable_metrics: bool = Field(
        True,
        validation_alias=AliasChoices("enable_metrics", "enable_prometheus_metrics"),
        description="Serve Prometheus metrics at /v1/metrics and METRICS_PATH "
        "(ENABLE_PROMETHEUS_METRICS is accepted too).",
    )
    metrics_path: str = Field("/metrics", pattern=r"^/", description="Second path for metrics.")
    api_docs_enabled: bool = Field(
        True,
        description="Serve the API documentation: /docs (Swagger UI), /redoc, /openapi.json "
        "and /openapi.yaml.",
    )
    version_endpoint_enabled: bool = Field(
        True, description="Serve build and dependency versions at /v1/version."
    )
    ssl_certfile: Path | None = Field(None, description="TLS certificate (PEM) to serve HTTPS.")
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM) for SSL_CERTFILE.")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes.")
    memory_release_after_idle: float = Field(
        10.0,
        ge=0,
        description="Seconds without backend calls after which freed memory is returned to the "
        "system (garbage collection, then jemalloc purge or malloc_trim); 0 = never.",
    )
    memory_recycle_above_mb: float = Field(
        0.0,
        ge=0,
        description="After that idle period and release, a worker whose RSS is still more than "
        "this many MB above its RSS at start is replaced by a fresh process on the same "
        "listening socket (connections arriving meanwhile wait, none are refused); 0 = never.",
    )
    memory_allocator: Literal["auto", "jemalloc", "pymalloc"] = Field(
        "auto",
        description="auto: run on jemalloc when libjemalloc2 is installed, so memory goes back "
        "to the system after load; jemalloc: require it; pymalloc: CPython's default.",
    )
    backlog: int = Field(
        16384,
        ge=64,
        description="Listen backlog: connections waiting to be accepted (the "
        "kernel caps it at net.core.somaxconn).",
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses or CIDR networks of reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto headers are believed; '*' = any peer (unsafe "
        "unless only proxies can reach the port); unset = those headers are ignored.",
    )
    request_headers_max_size: int = Field(
        64 * 1024,
        ge=1024,
        le=8 * 1024 * 1024,
        description="Largest request line plus headers, in bytes (or 64KiB); more gets 431.",
    )
    request_headers_max_count: int = Field(
        100, ge=1, le=10000, description="Most header fields in one request; more gets 431."
    )
    request_headers_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a request's line and headers may take to arrive, from their first "
        "byte (or the connection's opening); then 408 and close.",
    )
    request_body_timeout: float = Field(
        30.0,
        gt=0,
        description="Longest silence while a request body is read, in seconds; then 408 and "
        "close. Also the grace period of REQUEST_BODY_MIN_RATE.",
    )
    request_body_min_rate: int = Field(
        500,
        ge=0,
        description="Slowest accepted request body, in bytes/s after REQUEST_BODY_TIMEOUT's "
        "grace; 0 = no minimum.",
    )
    max_client_connections: int = Field(
        16384,
        ge=1,
        description="Most open client connections per process; more are answered 503 and closed.",
    )
    max_client_connections_per_ip: int = Field(
        1024,
        ge=0,
        description="Most open connections from one client address per process (addresses in "
        "FORWARDED_ALLOW_IPS excepted); 0 = no cap.",
    )
    shutdown_grace_period: float = Field(
        30.0,
        ge=0,
        description="Seconds open streams get to finish on shutdown before they are closed.",
    )
    ollama_version: str = Field(
        OLLAMA_API_VERSION,
        pattern=r"^\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$",
        description="Version /api/version reports: the Ollama release whose API the proxy "
        "serves (clients check it: Codex --oss needs >= 0.13.4, Copilot >= 0.6.4).",
    )

    @field_validator("openai_api_base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"must be an http:// or https:// URL, got {v!r}")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("upstream_http_client", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("request_max_size", "response_max_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)

    @field_validator("request_headers_max_size", mode="before")
    @classmethod
    def _head_size(cls, v: Any) -> int:
        return parse_size(v)

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _forwarders(cls, v: Any) -> Any:
        return _split(v) or []

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        # uvicorn takes anything that is not an address or network as a literal host name that
        # never matches a peer; a typo would silently trust no one, so each entry is checked.
        for entry in v:
            if entry == "*":
                continue
            try:
                ipaddress.ip_network(entry)
            except ValueError as exc:
                raise ValueError(
                    f"{entry!r} is not an IP address or CIDR network ({exc})"
                ) from None
        return ["*"] if "*" in v else v

    @field_validator("context_signing_key")
    @classmethod
    def _signing_key(cls, v: SecretStr) -> SecretStr:
        key = v.get_secret_value()
        if key and len(key) < 32:
            raise ValueError(
                "must be at least 32 characters (e.g. the output of `openssl rand -hex 32`), "
                "or unset for a random key per start"
            )
        return v

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, v: Any) -> Any:
        return _split(v) or None

    @field_validator("cors_origins")
    @classmethod
    def _origin_shapes(cls, v: list[str] | None) -> list[str] | None:
        # Ollama refuses to start on an origin with neither a scheme nor a wildcard
        # (gin-contrib/cors: "bad origin: origins must contain '*' or include http://,...").
        for origin in v or ():
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: use scheme://host[:port] (e.g. "
                    "https://app.example.com), with '*' as a wildcard (chrome-extension://*)"
                )
        return v

    @field_validator("passthrough_options", mode="before")
    @classmethod
    def _passthrough(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        out: dict[str, str] = {}
        for item in _split(v):
            name, _, target = item.partition("=")
            out[name.strip()] = target.strip() or name.strip()
        return out

    @field_validator("token_budget")
    @classmethod
    def _token_budget(cls, v: str) -> str:
        budget_plan.parse_budget(v)  # BudgetError is a ValueError: named with the variable
        return v.strip()

    @field_validator("usage_admin_key")
    @classmethod
    def _admin_key(cls, v: SecretStr) -> SecretStr:
        if 0 < len(v.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. openssl rand -hex 24)")
        return v

    @field_validator(
        "model_mapping_file",
        "proxy_api_keys_file",
        "ssl_certfile",
        "ssl_keyfile",
        "upstreams_file",
        "token_budgets_file",
    )
    @classmethod
    def _file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"file not found: {v}")
        return v

    @field_validator("proxy_api_keys", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        return _split(v)

    @field_validator("auth_failure_limit")
    @classmethod
    def _auth_failure_limit(cls, v: str) -> str:
        # The default is known good: the limits library is imported (1.7 MB a worker, issue
        # #18) only for a value an operator wrote, or when a throttle is made of it.
        if v.strip() and v.strip() != DEFAULT_AUTH_FAILURE_LIMIT:
            from limits import parse  # noqa: PLC0415 -- only when a limit is set

            try:
                parse(v)
            except ValueError as exc:
                raise ValueError(f"not one limit ({exc}); use e.g. '10/minute'") from None
        return v.strip()

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
        return topology.check_extra_body(_json_object(v))

    @field_validator("backend_headers", mode="before")
    @classmethod
    def _backend_headers(cls, v: Any) -> Any:
        return topology.check_headers(_json_object(v))

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, v: str) -> str:
        if v.strip():
            from limits import parse_many  # noqa: PLC0415 -- only when a limit is set

            try:
                parse_many(v)
            except ValueError as exc:
                raise ValueError(f"not a rate limit ({exc}); use e.g. '60/minute'") from None
        return v.strip()

    @model_validator(mode="after")
    def _combinations(self) -> Settings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("SSL_CERTFILE and SSL_KEYFILE must be set together")
        if self.memory_recycle_above_mb and not self.memory_release_after_idle:
            raise ValueError(
                "MEMORY_RECYCLE_ABOVE_MB needs MEMORY_RELEASE_AFTER_IDLE > 0: a worker is only "
                "replaced after that idle period"
            )
        return self

    def inbound_keys(self) -> list[str]:
        """PROXY_API_KEYS plus the lines of PROXY_API_KEYS_FILE (blank lines and # comments
        skipped)."""
        keys = [k.get_secret_value() for k in self.proxy_api_keys]
        if self.proxy_api_keys_file is not None:
            for raw in self.proxy_api_keys_file.read_text().splitlines():
                key = raw.strip()
                if key and not key.startswith("#"):
                    keys.append(key)
        return keys

    def store_uri(self) -> str:
        """Where tool calls' data is kept (TOOL_CALL_STORE_URI, else a Redis rate-limit store)."""
        if self.tool_call_store_uri:
            return self.tool_call_store_uri
        if self.rate_limit_storage_uri.startswith(("redis://", "rediss://")):
            return self.rate_limit_storage_uri
        return "memory://"

    def budget_uri(self) -> str:
        """Where token counts live (TOKEN_BUDGET_STORAGE_URI, else a Redis rate-limit store)."""
        if self.token_budget_storage_uri:
            return self.token_budget_storage_uri
        if self.rate_limit_storage_uri.startswith(("redis://", "rediss://")):
            return self.rate_limit_storage_uri
        return "memory://"

    def budget_accounts(self) -> dict[str, budget_plan.Account] | None:
        """Each inbound key's token budget, by caller (budget_plan.load_accounts); None when
        budgets are off. Raises ConfigError."""
        try:
            return budget_plan.load_accounts(
                self.token_budget,
                self.token_budgets_file,
                self.inbound_keys(),
                self.usage_admin_key.get_secret_value(),
            )
        except budget_plan.BudgetError as exc:
            raise ConfigError(str(exc)) from None

    def secrets(self) -> list[str]:
        """Every key that must never reach a log line, an error body or a metric."""
        keys = [
            self.openai_api_key.get_secret_value(),
            self.context_signing_key.get_secret_value(),
            self.usage_admin_key.get_secret_value(),
            *self.inbound_keys(),
        ]
        # redis://:password@host
        keys.extend(
            urlsplit(u).password or ""
            for u in (
                self.rate_limit_storage_uri,
                self.tool_call_store_uri,
                self.token_budget_storage_uri,
            )
        )
        for u in self.topology().upstreams:
            keys.append(u.api_key)
            keys.extend(v for k, v in u.headers.items() if topology.SECRET_HEADER.search(k))
            keys.extend(
                v
                for k, v in u.extra_body.items()
                if isinstance(v, str) and topology.SECRET_HEADER.search(k)
            )
        return [k for k in dict.fromkeys(keys) if k]

    def limits(self) -> Limits:
        """The request limits in force (REQUEST_MAX_* and EMBED_MAX_INPUTS)."""
        return Limits(
            values=self.request_max_values,
            messages=self.request_max_messages,
            images=self.request_max_images,
            tools=self.request_max_tools,
            stop=self.request_max_stop,
            context=self.request_max_context,
            embed_inputs=self.embed_max_inputs,
        )

    def policy(self) -> Policy:
        return Policy(
            passthrough=self.passthrough_options,
            completions_max_tokens=self.completions_max_tokens,
            max_output_tokens=self.max_output_tokens or None,
        )

    def model_map(self) -> ModelMap:
        return load_model_map(self.model_mapping_file) if self.model_mapping_file else ModelMap()

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


def _json_object(value: Any) -> Any:
    """An environment variable's JSON object text, decoded (objects pass as they are)."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc})") from None
    return value


class ConfigError(Exception):
    """Invalid configuration; the message is meant for the operator, as is."""


def load_model_map(path: Path) -> ModelMap:
    try:
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"MODEL_MAPPING_FILE {path}: cannot read JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"MODEL_MAPPING_FILE {path}: must be a JSON object of alias -> model")
    entries: dict[str, ModelMeta] = {}
    for alias, value in raw.items():
        where = f"MODEL_MAPPING_FILE {path}: entry {alias!r}"
        if isinstance(value, str) and value:
            entries[alias] = ModelMeta(upstream=value)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be an upstream model id or an object")
        upstream = value.get("model", alias)
        ctx = value.get("context_length")
        caps = value.get("capabilities")
        think = value.get("think_style")
        if think is not None and think not in THINK_STYLES:
            raise ConfigError(f"{where}: 'think_style' must be one of {list(THINK_STYLES)}")
        if not isinstance(upstream, str) or not upstream:
            raise ConfigError(f"{where}: 'model' must be a non-empty string")
        for key in ("context_length", "max_output_tokens"):
            n = value.get(key)
            if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n <= 0):
                raise ConfigError(f"{where}: {key!r} must be a positive integer")
        if caps is not None and (
            not isinstance(caps, list) or not all(c in CAPABILITIES for c in caps)
        ):
            raise ConfigError(f"{where}: 'capabilities' must be a list of {sorted(CAPABILITIES)}")
        entries[alias] = ModelMeta(
            upstream,
            ctx,
            tuple(caps) if caps is not None else None,
            think,
            value.get("max_output_tokens"),
        )
    return ModelMap(entries)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and .env), or a ConfigError naming every bad variable."""
    try:
        settings = Settings(**overrides)
        settings.model_map()  # validate the mapping file now, not on the first request
        settings.budget_accounts()  # and the token budgets, which need the inbound keys
        env_file = overrides.get("_env_file", ".env")
        dotenv = dotenv_values(env_file) if env_file and Path(env_file).is_file() else {}
        settings.topology({**{k: v for k, v in dotenv.items() if v is not None}, **os.environ})
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            name = str(err["loc"][0]).upper() if err["loc"] else "settings"
            if err["type"] == "value_error" and not err["loc"]:
                name = "settings"
            lines.append(f"  {name}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    return settings
