"""tracing.py's switch and its checks at start: the standard OTEL_* variables decide, off by
default, OTEL_SDK_DISABLED wins; what cannot work stops the start with what to do."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import structlog.testing
from opentelemetry import trace

from ollama_openai_bridge import tracing
from ollama_openai_bridge.config import ConfigError, load_settings
from ollama_openai_bridge.tracing_asgi import trace_context

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


PARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("headers", "carrier", "dropped"),
    [
        ([], {}, None),
        ([(b"traceparent", PARENT)], {"traceparent": PARENT.decode()}, None),
        # W3C Trace Context: a repeated traceparent is invalid; the request starts a trace.
        ([(b"traceparent", PARENT), (b"traceparent", PARENT)], {}, "several traceparent headers"),
        ([(b"traceparent", b"00-" + b"a" * 600)], {}, "traceparent too long"),
        (
            [(b"traceparent", PARENT), (b"tracestate", b"a=1, b@c=x y"), (b"tracestate", b"d=2")],
            {"traceparent": PARENT.decode(), "tracestate": "a=1, b@c=x y,d=2"},
            None,
        ),
        (
            [(b"traceparent", PARENT), (b"tracestate", b",".join(b"k%d=v" % i for i in range(33)))],
            {"traceparent": PARENT.decode()},
            "invalid tracestate",
        ),
        (
            [(b"traceparent", PARENT), (b"tracestate", b"k=" + b"v" * 9000)],
            {"traceparent": PARENT.decode()},
            "invalid tracestate",
        ),
        (
            [(b"traceparent", PARENT), (b"tracestate", b"a=1,a=2")],
            {"traceparent": PARENT.decode()},
            "invalid tracestate",
        ),
        (
            [(b"traceparent", PARENT), (b"tracestate", b"Upper=1")],
            {"traceparent": PARENT.decode()},
            "invalid tracestate",
        ),
        ([(b"tracestate", b"a=1")], {}, None),  # no traceparent: nothing to continue
    ],
)
def test_trace_context_drops_what_the_propagator_would_warn_about(
    headers: list[tuple[bytes, bytes]], carrier: dict[str, str], dropped: str | None
) -> None:
    assert trace_context(headers) == (carrier, dropped)


def test_a_hostile_tracestate_makes_no_opentelemetry_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = b",".join(b"k%d=v" % i for i in range(40))
    carrier, _ = trace_context([(b"traceparent", PARENT), (b"tracestate", state)])
    caplog.set_level("DEBUG", logger="opentelemetry")
    context = tracing._Modules().propagator().extract(carrier)
    assert f"{trace.get_current_span(context).get_span_context().trace_id:032x}" == (
        PARENT[3:35].decode()
    )
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]


class _Status:
    def __init__(self, code: str, description: str | None) -> None:
        self.code, self.description = code, description


class _Span:
    def __init__(self) -> None:
        self.attributes: dict[str, object] = {}
        self.status: _Status | None = None

    def set_attribute(self, key: str, value: object) -> None:
        self.attributes[key] = value

    def set_status(self, status: _Status) -> None:
        self.status = status


def test_an_error_is_described_by_its_status_or_class_only() -> None:
    """Issue #20's review, L3: the server span's description was the backend's message,
    which can quote the prompt; Tracing.error takes no message at all now."""
    otel = SimpleNamespace(
        trace=SimpleNamespace(Status=_Status, StatusCode=SimpleNamespace(ERROR="ERROR"))
    )
    t = object.__new__(tracing.Tracing)
    t._otel = otel
    span = _Span()
    t.error(span, "502")
    assert span.attributes == {"error.type": "502"}
    assert span.status is not None
    assert (span.status.code, span.status.description) == ("ERROR", "HTTP 502")
    t.error(span, "UpstreamTimeout")
    assert span.status.description == "UpstreamTimeout"
    with pytest.raises(TypeError):
        t.error(span, "500", "a backend's message")  # type: ignore[call-arg]


def test_shutdown_is_bounded_when_the_collector_hangs() -> None:
    """Issue #20's review, L2: the SDK's shutdown blocked 12-18 s with a collector down or
    hung; Tracing.shutdown gives up after its deadline, with one warning."""
    release = threading.Event()
    calls: list[str] = []

    class Hung:
        def shutdown(self) -> None:
            calls.append("shutdown")
            release.wait(30)

    t = object.__new__(tracing.Tracing)
    t.provider = Hung()
    began = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        finished = asyncio.run(asyncio.wait_for(t.shutdown(0.2), 5))
    took = time.monotonic() - began
    release.set()
    assert finished is False
    assert calls == ["shutdown"]
    assert 0.2 <= took < 2
    assert [x["event"] for x in logs] == ["tracing_flush_incomplete"]
    assert logs[0]["log_level"] == "warning"

    class Quick:
        def shutdown(self) -> None:
            calls.append("quick")

    t.provider = Quick()
    with structlog.testing.capture_logs() as logs:
        assert asyncio.run(t.shutdown(5)) is True
    assert logs == []
    assert tracing.FLUSH_DEADLINE_S == 5.0
