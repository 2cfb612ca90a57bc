"""Settings of the listening server: its address and TLS, the listen backlog, the reverse
proxies it believes, the limits and timeouts of a request's head and body and the connection
caps (transport.py), the shutdown grace period, and the Ollama version it answers as."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from ollama_openai_bridge.config.parsing import ByteSize, ExistingFile, split_list

# The Ollama release whose REST API the proxy serves, reported by /api/version. 0.30.0 is the
# release of the newest fields it answers (`capabilities`, `details.context_length` and
# `embedding_length` in /api/tags), after /api/status (0.16.2) and `think: "max"` (0.22.0).
# Clients gate features on this number: Codex's --oss mode requires at least 0.13.4, VS Code
# Copilot 0.6.4, and Open WebUI parses it as dotted integers (routers/ollama.py).
OLLAMA_API_VERSION = "0.30.0"


class ServerSettings(BaseModel):
    """The listening server, its limits and timeouts: a part of
    :class:`~ollama_openai_bridge.config.Settings`, which reads them from the environment."""

    model_config = ConfigDict(defer_build=True)  # validated only within Settings (settings.py)

    proxy_host: str = Field("127.0.0.1", description="Interface to listen on (0.0.0.0 for all).")
    proxy_port: int = Field(11434, ge=1, le=65535, description="Port to listen on (Ollama's).")
    ssl_certfile: ExistingFile = Field(None, description="TLS certificate (PEM) to serve HTTPS.")
    ssl_keyfile: ExistingFile = Field(None, description="TLS private key (PEM) for SSL_CERTFILE.")
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
    request_headers_max_size: ByteSize = Field(
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

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _forwarders(cls, v: Any) -> Any:
        return split_list(v) or []

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

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("SSL_CERTFILE and SSL_KEYFILE must be set together")
        return self
