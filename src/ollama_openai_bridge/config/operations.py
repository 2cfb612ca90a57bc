"""Settings of how the proxy runs and is watched: the log level, Prometheus metrics, the API
documentation and version endpoints, worker processes, and memory (its allocator, its release
when idle, and a worker's replacement when it stays grown)."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator


class OperationsSettings(BaseModel):
    """Logs, metrics, documentation endpoints, workers, memory: a part of
    :class:`~ollama_openai_bridge.config.Settings`, which reads them from the environment."""

    model_config = ConfigDict(defer_build=True)  # validated only within Settings (settings.py)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Log level."
    )
    debug: bool = Field(False, description="Shortcut for LOG_LEVEL=DEBUG.")
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

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _recycling_needs_idle(self) -> Self:
        if self.memory_recycle_above_mb and not self.memory_release_after_idle:
            raise ValueError(
                "MEMORY_RECYCLE_ABOVE_MB needs MEMORY_RELEASE_AFTER_IDLE > 0: a worker is only "
                "replaced after that idle period"
            )
        return self
