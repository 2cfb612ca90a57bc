"""tracing_env.py: every OTEL_* the SDK reads for traces is checked at start, with one line
naming it (issue #20's review, L1): before, OTEL_BSP_MAX_QUEUE_SIZE=-5 was a traceback, and a
bad sampler, header entry or compression only an SDK warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ollama_openai_bridge import tracing, tracing_env

ON = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"OTEL_TRACES_SAMPLER": "bogus"}, "OTEL_TRACES_SAMPLER=bogus: one of always_on"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio"}, "needs OTEL_TRACES_SAMPLER_ARG"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "abc"},
            "OTEL_TRACES_SAMPLER_ARG=abc",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
            "OTEL_TRACES_SAMPLER_ARG=1.5",
        ),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "-5"}, "OTEL_BSP_MAX_QUEUE_SIZE=-5: must be above 0"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "soon"}, "OTEL_BSP_SCHEDULE_DELAY=soon: a whole number"),
        ({"OTEL_BSP_EXPORT_TIMEOUT": "0"}, "OTEL_BSP_EXPORT_TIMEOUT=0"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512 is above"),
        ({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "-1"}, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=-1"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "brotli"}, "OTEL_EXPORTER_OTLP_COMPRESSION=brotli"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "zstd"},
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION=zstd",
        ),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "abc"}, "OTEL_EXPORTER_OTLP_TIMEOUT=abc: seconds"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "10000"}, "not milliseconds"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "-1"}, "OTEL_EXPORTER_OTLP_TIMEOUT=-1"),
        ({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent.pem"}, "no readable file there"),
        ({"OTEL_EXPORTER_OTLP_CLIENT_KEY": "/nonexistent.key"}, "OTEL_EXPORTER_OTLP_CLIENT_KEY="),
        ({"OTEL_RESOURCE_ATTRIBUTES": "a=1,oops"}, "OTEL_RESOURCE_ATTRIBUTES: entry 2 of 2"),
        ({"OTEL_PROPAGATORS": "b3"}, "OTEL_PROPAGATORS=b3: trace context is propagated"),
        (
            {"OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": "nope"},
            "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER=nope: no installed package",
        ),
    ],
)
def test_a_value_the_sdk_would_refuse_or_ignore_is_named(env: dict[str, str], said: str) -> None:
    problem = tracing.check({**ON, **env})
    assert problem is not None
    assert said in problem
    assert "\n" not in problem
    # Off, none of them matters: the SDK never reads them.
    assert tracing.check(env) is None


def test_header_entries_are_checked_without_quoting_them() -> None:
    env = {**ON, "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer test-key-1,garbage-secret"}
    problem = tracing.check(env)
    assert problem == (
        "OTEL_EXPORTER_OTLP_HEADERS: entry 2 of 2 is not name=value (comma-separated pairs, "
        "URL-encoded, e.g. Authorization=Bearer%20...)"
    )
    assert "test-key-1" not in problem
    assert "garbage" not in problem


def test_a_client_key_needs_its_certificate(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("not a real key")
    problem = tracing.check({**ON, "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(key)})
    assert problem is not None
    assert "without OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" in problem
    both = {
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(key),
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(key),
    }
    assert tracing.check({**ON, **both}) is None


def test_what_works_passes(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed at start")
    env = {
        **ON,
        "OTEL_TRACES_SAMPLER": "ParentBased_TraceIdRatio",  # the SDK lowers it
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_BSP_SCHEDULE_DELAY": "1000",
        "OTEL_BSP_MAX_QUEUE_SIZE": "4096",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096",
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "unset",
        "OTEL_ATTRIBUTE_COUNT_LIMIT": "0",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5",
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20test-key-1, x-tenant = a b,",
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": str(ca),
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod,team=ml",
        "OTEL_PROPAGATORS": "tracecontext,baggage",
    }
    assert tracing.check(env) is None
    assert tracing_env.problem({}) is None


def test_the_command_stops_with_one_line_and_exit_2() -> None:
    """The review's case: a traceback and rc 1 before; now the one line and rc 2."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": ":".join(sys.path),
        "OPENAI_API_BASE_URL": "http://127.0.0.1:9/v1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_BSP_MAX_QUEUE_SIZE": "-5",
    }
    done = subprocess.run(
        [sys.executable, "-m", "ollama_openai_bridge"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "OTEL_BSP_MAX_QUEUE_SIZE=-5: must be above 0 (default 2048)" in done.stderr
