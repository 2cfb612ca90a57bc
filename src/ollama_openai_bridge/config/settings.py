"""``Settings``: every setting, from environment variables and ``.env``, validated once at start.

Each concern declares its settings, their validators and the values derived from them in its
own module (a pydantic model used as a mixin); ``Settings`` combines them under
pydantic-settings, which reads the environment for all of them at once, and adds what spans
them (:meth:`Settings.secrets`). :func:`load_settings` is how the proxy builds it.

Every setting is documented in docs/CONFIGURATION.md; ``Settings.model_fields`` is the source of
truth and a test keeps the two in step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ollama_openai_bridge import egress, topology, tracing
from ollama_openai_bridge.config.backends import BackendSettings
from ollama_openai_bridge.config.cache import CacheSettings
from ollama_openai_bridge.config.operations import OperationsSettings
from ollama_openai_bridge.config.parsing import ConfigError
from ollama_openai_bridge.config.requests import RequestSettings
from ollama_openai_bridge.config.security import SecuritySettings
from ollama_openai_bridge.config.server import ServerSettings


# pydantic orders the fields of a model with several bases from the LAST base to the first
# (reversed MRO), so this reads backwards: the backends' settings come first in
# ``Settings.model_fields`` (and in the Helm chart's values.schema.json, written in that order by
# scripts/helm_chart.py), then the server's, requests', security's, operations' and the response
# cache's. The model
# validators run in the same order: the TLS pair is checked before memory recycling.
class Settings(
    CacheSettings,
    OperationsSettings,
    SecuritySettings,
    RequestSettings,
    ServerSettings,
    BackendSettings,
    BaseSettings,
):
    """Every setting; read from the environment (and ``.env``) when built. Raises pydantic's
    ValidationError; :func:`load_settings` turns that into a :class:`ConfigError`."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # The parts defer building their own validators (never used: about 120 KiB a process
        # saved), and a model inherits its bases' configuration: this one is built at import.
        defer_build=False,
    )

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
                self.response_cache_redis_uri,
            )
        )
        keys.extend(egress.secrets(os.environ))  # the user:password@ of HTTPS_PROXY, ...
        for u in self.topology().upstreams:
            keys.append(u.api_key)
            # a base URL's password (a replica's URL may carry none: balance_config refuses it)
            keys.append(urlsplit(u.base_url).password or "")
            keys.extend(v for k, v in u.headers.items() if topology.SECRET_HEADER.search(k))
            keys.extend(
                v
                for k, v in u.extra_body.items()
                if isinstance(v, str) and topology.SECRET_HEADER.search(k)
            )
        return [k for k in dict.fromkeys(keys) if k]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and .env), or a ConfigError naming every bad variable."""
    try:
        settings = Settings(**overrides)
        settings.model_map()  # validate the mapping file now, not on the first request
        settings.budget_accounts()  # and the token budgets, which need the inbound keys
        env_file = overrides.get("_env_file", ".env")
        dotenv = dotenv_values(env_file) if env_file and Path(env_file).is_file() else {}
        env = {**{k: v for k, v in dotenv.items() if v is not None}, **os.environ}
        settings.topology(env)
        if (
            "OPENAI_BASE_URL" in env
            and "OPENAI_API_BASE_URL" not in env
            and "openai_api_base_url" not in overrides
            and settings.upstreams_file is None
        ):
            # The OpenAI SDK's name for it: ignored, the proxy would call api.openai.com with
            # the key meant for the other backend (issue #19's review, L3).
            raise ConfigError(
                "OPENAI_BASE_URL is set (the OpenAI SDK's variable), but the proxy reads "
                f"OPENAI_API_BASE_URL: set OPENAI_API_BASE_URL={env['OPENAI_BASE_URL']} to use "
                "it (unset, the proxy would call https://api.openai.com/v1)"
            )
        # OTEL_* come from the process environment, as every OpenTelemetry SDK reads them.
        problem = tracing.check(os.environ)
        if problem is not None:
            raise ConfigError(f"invalid configuration:\n  {problem}")
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            name = str(err["loc"][0]).upper() if err["loc"] else "settings"
            if err["type"] == "value_error" and not err["loc"]:
                name = "settings"
            lines.append(f"  {name}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    return settings
