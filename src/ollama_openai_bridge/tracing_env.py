"""The OTEL_* variables the OpenTelemetry SDK reads for this proxy's traces, checked at start
(issue #20's review, L1).

tracing.start() hands the SDK's own constructors (TracerProvider, BatchSpanProcessor,
OTLPSpanExporter, Resource.create) the process environment, and the SDK reads these variables
itself. Left to it, a bad value either raises from deep inside it (``OTEL_BSP_MAX_QUEUE_SIZE=-5``:
a traceback, rc 1) or logs a warning and falls back (an unknown sampler, a header entry it cannot
parse, ``brotli``), or is taken as it is until the first export (a CA file that does not
exist). :func:`problem` therefore checks every one of them as the SDK 1.45 reads it
(``opentelemetry/sdk/trace/export/__init__.py``, ``sdk/trace/sampling.py``,
``exporter/otlp/proto/http/_common``, ``sdk/trace/__init__.py`` SpanLimits) and says in one line
what is wrong; config.load_settings makes that a ConfigError (exit 2).

Pure: no OpenTelemetry import (the checks run before the packages are known to be there).
Header values are credentials: a message names the entry's position, never its text.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping

# OTEL_TRACES_SAMPLER: the SDK's built-in samplers (sampling.py _KNOWN_SAMPLERS); it lowers the
# value first. An unknown name there is a warning and parentbased_always_on.
SAMPLERS = (
    "always_on",
    "always_off",
    "parentbased_always_on",
    "parentbased_always_off",
    "traceidratio",
    "parentbased_traceidratio",
)
RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
COMPRESSIONS = ("none", "gzip", "deflate")  # exporter.otlp.common.http.Compression.from_str
# The batch processor's integers (all > 0; the batch no larger than the queue), and its
# defaults, as sdk/trace/export reads them.
BSP = {
    "OTEL_BSP_SCHEDULE_DELAY": 5000,
    "OTEL_BSP_MAX_QUEUE_SIZE": 2048,
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 512,
    "OTEL_BSP_EXPORT_TIMEOUT": 30000,
}
# SpanLimits: a non-negative integer or "unset"; anything else raises ValueError in the SDK.
LIMITS = (
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
)
# The exporter reads the TRACES_ variable first, then the general one (exporter _common).
FILES = ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY")
# The Python exporter reads OTEL_EXPORTER_OTLP_TIMEOUT in seconds (float(), then requests'
# timeout), where the specification says milliseconds: a value above this is most likely meant
# as milliseconds, and would make each export to a hung collector wait that many seconds.
MAX_TIMEOUT_S = 300.0
# Propagation is W3C trace context, always (tracing.Tracing): OTEL_PROPAGATORS is not read, so
# a value asking for another format is refused rather than ignored. "baggage" is in the SDK's
# default value, so it is accepted (the proxy neither reads nor forwards the baggage header).
PROPAGATORS = ("tracecontext", "baggage")
# OTEL_EXPORTER_OTLP_HEADERS: one name=value entry as the SDK parses it (util/re.py, its
# "liberal" form: the specification's URL-encoded values, or plain ones with spaces, as other
# SDKs take them); an entry it cannot parse is dropped with a warning that quotes it.
_HEADER = re.compile(
    r"[ \t]*[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+[ \t]*="
    r"[ \t]*[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*[ \t]*"
)
_COMMA = re.compile(r"[ \t]*,[ \t]*")
_RESOURCE_KEY = re.compile(r"[^\s=,]+")


def problem(environ: Mapping[str, str]) -> str | None:
    """The first OTEL_* variable (of those the SDK reads for traces) whose value cannot work,
    as one line naming it and what to set; None if all can. Only meaningful while traces are
    on (tracing.check calls it then)."""
    checks: tuple[Callable[[Mapping[str, str]], str | None], ...] = (
        _sampler,
        _batch,
        _limits,
        _exporter,
        _resource,
        _propagators,
    )
    for check in checks:
        found = check(environ)
        if found is not None:
            return found
    return None


def _get(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def _sampler(environ: Mapping[str, str]) -> str | None:
    sampler = _get(environ, "OTEL_TRACES_SAMPLER").lower()
    if sampler and sampler not in SAMPLERS:
        return f"OTEL_TRACES_SAMPLER={sampler}: one of {', '.join(SAMPLERS)}"
    arg = _get(environ, "OTEL_TRACES_SAMPLER_ARG")
    if sampler in RATIO_SAMPLERS:
        if not arg:
            return (
                f"OTEL_TRACES_SAMPLER={sampler} needs OTEL_TRACES_SAMPLER_ARG, the share of "
                "traces kept (0.0 to 1.0)"
            )
        try:
            ratio = float(arg)
        except ValueError:
            ratio = math.nan
        if not 0.0 <= ratio <= 1.0:
            return f"OTEL_TRACES_SAMPLER_ARG={arg}: a share of traces kept, from 0.0 to 1.0"
    return None


def _integer(environ: Mapping[str, str], name: str) -> int | str | None:
    """The variable as an int, None when unset, or the problem's text."""
    raw = _get(environ, name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return f"{name}={raw}: a whole number is needed"


def _batch(environ: Mapping[str, str]) -> str | None:
    values: dict[str, int] = {}
    for name, default in BSP.items():
        value = _integer(environ, name)
        if isinstance(value, str):
            return value
        if value is not None and value <= 0:
            return f"{name}={value}: must be above 0 (default {default})"
        values[name] = default if value is None else value
    batch, queue = values["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"], values["OTEL_BSP_MAX_QUEUE_SIZE"]
    if batch > queue:
        return (
            f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE={batch} is above OTEL_BSP_MAX_QUEUE_SIZE={queue}: "
            "a batch is taken from the queue, so it cannot be larger"
        )
    return None


def _limits(environ: Mapping[str, str]) -> str | None:
    for name in LIMITS:
        raw = _get(environ, name).lower()
        if raw and raw != "unset" and not (raw.isascii() and raw.isdigit()):
            return f"{name}={raw}: a whole number, 0 or more (or unset)"
    return None


def _either(environ: Mapping[str, str], suffix: str) -> tuple[str, str]:
    """(name, value) of OTEL_EXPORTER_OTLP_TRACES_<suffix>, else of the general variable, as
    the exporter picks them (empty value: neither is set)."""
    for name in (f"OTEL_EXPORTER_OTLP_TRACES_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"):
        value = _get(environ, name)
        if value:
            return name, value
    return f"OTEL_EXPORTER_OTLP_{suffix}", ""


def _exporter(environ: Mapping[str, str]) -> str | None:
    name, value = _either(environ, "COMPRESSION")
    if value and value.lower() not in COMPRESSIONS:
        return f"{name}={value}: one of {', '.join(COMPRESSIONS)}"
    name, value = _either(environ, "TIMEOUT")
    if value:
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not 0 < seconds <= MAX_TIMEOUT_S:
            return (
                f"{name}={value}: seconds each export may take, above 0 and at most "
                f"{MAX_TIMEOUT_S:g} (the Python SDK reads seconds, not milliseconds; default 10)"
            )
    name, value = _either(environ, "HEADERS")
    if value:
        entries = _COMMA.split(value)
        for i, entry in enumerate(entries, 1):
            if entry and not _HEADER.fullmatch(entry):
                # Never the entry's text: it may be (part of) a credential.
                return (
                    f"{name}: entry {i} of {len(entries)} is not name=value (comma-separated "
                    "pairs, URL-encoded, e.g. Authorization=Bearer%20...)"
                )
    for suffix in FILES:
        name, path = _either(environ, suffix)
        if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            return f"{name}={path}: no readable file there"
    key_name, key = _either(environ, "CLIENT_KEY")
    if key and not _either(environ, "CLIENT_CERTIFICATE")[1]:
        # The exporter sends a client key only with its certificate (requests' cert=).
        return f"{key_name} is set without OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: set both"
    for name in (
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
        "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",
    ):
        provider = _get(environ, name)
        if provider and not _credential_provider(provider):
            return (
                f"{name}={provider}: no installed package provides it (entry point group "
                "opentelemetry_otlp_credential_provider)"
            )
    return None


def _credential_provider(name: str) -> bool:
    from importlib.metadata import entry_points  # noqa: PLC0415 -- only when one is set

    return bool(entry_points(group="opentelemetry_otlp_credential_provider", name=name))


def _resource(environ: Mapping[str, str]) -> str | None:
    # Resource.create's OTELResourceDetector warns and drops an entry that is not key=value.
    raw = _get(environ, "OTEL_RESOURCE_ATTRIBUTES")
    entries = raw.split(",") if raw else []
    for i, entry in enumerate(entries, 1):
        key, equals, _ = entry.partition("=")
        if not equals or not _RESOURCE_KEY.fullmatch(key.strip()):
            return (
                f"OTEL_RESOURCE_ATTRIBUTES: entry {i} of {len(entries)} is not key=value "
                "(comma-separated, e.g. deployment.environment.name=prod)"
            )
    return None


def _propagators(environ: Mapping[str, str]) -> str | None:
    raw = _get(environ, "OTEL_PROPAGATORS")
    for name in raw.split(",") if raw else ():
        if name.strip().lower() not in PROPAGATORS:
            return (
                f"OTEL_PROPAGATORS={raw}: trace context is propagated as W3C traceparent only "
                "(tracecontext; baggage is accepted and not forwarded)"
            )
    return None
