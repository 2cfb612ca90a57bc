"""tracing.py's switch and its checks at start: the standard OTEL_* variables decide, off by
default, OTEL_SDK_DISABLED wins; what cannot work stops the start with what to do."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ollama_openai_bridge import tracing
from ollama_openai_bridge.config import ConfigError, load_settings

ENDPOINT = "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),  # off by default, whatever the SDK's own default exporter
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),  # the SDK's default endpoint, localhost:4318
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ],
)
def test_wanted(env: dict[str, str], on: bool) -> None:
    assert tracing.wanted(env) is on
    assert tracing.check(env) is None


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin: traces are exported"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: only http/protobuf",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
            "OTEL_EXPORTER_OTLP_ENDPOINT=collector:4318: an http:// or https:// URL",
        ),
    ],
)
def test_what_cannot_work_is_named(env: dict[str, str], said: str) -> None:
    problem = tracing.check(env)
    assert problem is not None
    assert said in problem


def test_a_protocol_is_not_checked_while_tracing_is_off() -> None:
    # Variables meant for another signal (metrics, logs over gRPC) do not stop the start.
    assert tracing.check({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is None


def test_without_the_extra_the_start_says_which_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "_importable", lambda module: "exporter" not in module)
    problem = tracing.check({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT})
    assert problem is not None
    assert 'pip install "ollama-openai-bridge[otel]"' in problem
    assert "opentelemetry.exporter.otlp.proto.http" in problem
    # Off, the packages are not needed.
    assert (
        tracing.check({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"})
        is None
    )


def test_importable_tells_a_missing_parent_package() -> None:
    assert tracing._importable("opentelemetry.sdk.trace")
    assert not tracing._importable("no_such_package_here.trace")


def test_load_settings_refuses_a_bad_tracing_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER=jaeger"):
        load_settings(_env_file=None)


def test_off_the_opentelemetry_packages_are_never_imported() -> None:
    """Free when off: the app built and a request served, without importing OpenTelemetry."""
    code = """
import sys
from starlette.testclient import TestClient
from ollama_openai_bridge.app import create_app
from ollama_openai_bridge.config import Settings
settings = Settings(_env_file=None, openai_api_base_url="http://127.0.0.1:9/v1", max_retries=0)
app = create_app(settings)
assert app.state.ctx.tracing is None and app.state.ctx.backends.tracing is None
assert type(app.front).__name__ == "RequestContextMiddleware", type(app.front)
with TestClient(app) as client:
    assert client.get("/api/version").status_code == 200
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
print("RESULT ok")
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "RESULT ok"
