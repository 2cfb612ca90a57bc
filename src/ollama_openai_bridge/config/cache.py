"""Settings of the response cache (response_cache.py, issue #20): off by default; when on, an
exact match on the backend request serves its answer again, from memory or from Redis."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ollama_openai_bridge.config.parsing import ByteSize


class CacheSettings(BaseModel):
    """RESPONSE_CACHE_*: a part of :class:`~ollama_openai_bridge.config.Settings`, which reads
    them from the environment."""

    model_config = ConfigDict(defer_build=True)  # validated only within Settings (settings.py)

    response_cache: Literal["off", "memory", "redis"] = Field(
        "off",
        description="Serve an answer again for the same backend request: off, memory (each "
        "process its own) or redis (shared by replicas: RESPONSE_CACHE_REDIS_URI, else "
        "RATE_LIMIT_STORAGE_URI). Only deterministic requests (temperature 0, or a seed; "
        "embeddings always) unless RESPONSE_CACHE_NONDETERMINISTIC.",
    )
    response_cache_redis_uri: str = Field(
        "",
        pattern=r"^$|^rediss?://",
        description="The Redis of RESPONSE_CACHE=redis. Empty = RATE_LIMIT_STORAGE_URI, which "
        "must then be redis://.",
    )
    response_cache_ttl: float = Field(
        3600, gt=0, le=30 * 86400, description="Seconds an answer is served from the cache."
    )
    response_cache_max_entries: int = Field(
        1000, ge=1, description="Answers kept in each process's memory (memory) at most."
    )
    response_cache_max_bytes: ByteSize = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Bytes of answers kept in each process's memory (memory) at most; the "
        "least recently used go first.",
    )
    response_cache_max_entry_bytes: ByteSize = Field(
        1024 * 1024,
        ge=1024,
        description="An answer larger than this many bytes (a stream: its events as received) "
        "is not kept, in memory or in Redis; a stream stops being recorded past it.",
    )
    response_cache_nondeterministic: bool = Field(
        False,
        description="Also cache requests that are not deterministic (no temperature 0, no "
        "seed): every client then gets the first answer for a request until it expires.",
    )
    response_cache_across_keys: bool = Field(
        False,
        description="Share answers between inbound keys (PROXY_API_KEYS). Off: each key has "
        "its own entries, so no key learns what another asked.",
    )

    @model_validator(mode="after")
    def _cache_redis(self) -> CacheSettings:
        if self.response_cache == "redis" and not self.cache_uri().startswith("redis"):
            raise ValueError(
                "RESPONSE_CACHE=redis needs RESPONSE_CACHE_REDIS_URI=redis://... (or a Redis "
                "RATE_LIMIT_STORAGE_URI)"
            )
        if self.response_cache_max_entry_bytes > self.response_cache_max_bytes:
            raise ValueError(
                "RESPONSE_CACHE_MAX_ENTRY_BYTES is larger than RESPONSE_CACHE_MAX_BYTES: no "
                "answer that large could be kept"
            )
        return self

    def cache_uri(self) -> str:
        """Where answers live: ``memory://``, or the Redis URI (RESPONSE_CACHE_REDIS_URI, else a
        Redis RATE_LIMIT_STORAGE_URI). Empty when the cache is off."""
        if self.response_cache == "off":
            return ""
        if self.response_cache == "memory":
            return "memory://"
        if self.response_cache_redis_uri:
            return self.response_cache_redis_uri
        limits_uri: str = getattr(self, "rate_limit_storage_uri", "")
        return limits_uri if limits_uri.startswith(("redis://", "rediss://")) else ""
