"""Settings of who may use the proxy and how much: browser origins (cors.py), inbound keys,
the throttle on failed authentications, rate limits and token budgets per key (security.py,
budgets.py), the usage endpoint's key, and the stores those counters and the tool calls' kept
data live in (memory or Redis)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from ollama_openai_bridge.config.parsing import ConfigError, ExistingFile, split_list

if TYPE_CHECKING:
    from ollama_openai_bridge import budget_plan

# AUTH_FAILURE_LIMIT's default, known good: checking it needs no limits library (below).
DEFAULT_AUTH_FAILURE_LIMIT = "10/minute"

_ORIGIN = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^\s,]*|[^\s,]*\*[^\s,]*)$")


class SecuritySettings(BaseModel):
    """Origins, inbound keys, throttles, rate limits, budgets, stores: a part of
    :class:`~ollama_openai_bridge.config.Settings`, which reads them from the environment."""

    model_config = ConfigDict(defer_build=True)  # validated only within Settings (settings.py)

    cors_origins: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Comma-separated browser origins allowed besides Ollama's local defaults "
        "(as OLLAMA_ORIGINS): '*' inside an origin is a wildcard (chrome-extension://*), "
        "'*' alone allows any origin.",
    )
    proxy_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated keys clients must send as "
        "'Authorization: Bearer <key>'; unset = no authentication.",
    )
    proxy_api_keys_file: ExistingFile = Field(
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
    token_budgets_file: ExistingFile = Field(
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

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, v: Any) -> Any:
        return split_list(v) or None

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

    @field_validator("proxy_api_keys", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        return split_list(v)

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

    @field_validator("token_budget")
    @classmethod
    def _token_budget(cls, v: str) -> str:
        if not v.strip():
            return ""  # no budget (the default): nothing to parse, budget_plan not imported
        from ollama_openai_bridge import budget_plan  # noqa: PLC0415 -- see budget_accounts

        budget_plan.parse_budget(v)  # BudgetError is a ValueError: named with the variable
        return v.strip()

    @field_validator("usage_admin_key")
    @classmethod
    def _admin_key(cls, v: SecretStr) -> SecretStr:
        if 0 < len(v.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. openssl rand -hex 24)")
        return v

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
        admin = self.usage_admin_key.get_secret_value()
        if not self.token_budget and self.token_budgets_file is None and not admin:
            # Off (load_accounts' first case): budget_plan is imported only when budgets are
            # asked for (issue #18: a worker's memory is mostly its imports).
            return None
        from ollama_openai_bridge import budget_plan  # noqa: PLC0415 -- only when asked for

        try:
            return budget_plan.load_accounts(
                self.token_budget,
                self.token_budgets_file,
                self.inbound_keys(),
                admin,
            )
        except budget_plan.BudgetError as exc:
            raise ConfigError(str(exc)) from None
