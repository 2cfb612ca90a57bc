"""Structured JSON logs (structlog), one line per event, with the request id bound per request.

Every string value of every event passes the :class:`~ollama_openai_bridge.errors.Redactor`, so a
secret that reaches a log call by accident (an upstream error echoing the key, say) is still
never written. Standard-library records (uvicorn, aiohttp) go through the same pipeline.

The access log is the one event written for every request, so it has its own path
(:class:`LineHandler`): the same fields and redaction, rendered with orjson and written without
structlog's processor chain or a ``logging.LogRecord`` -- 28 µs of CPU per line through the
general pipeline, measured here, against a proxied request's ~200 µs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any

import orjson
import structlog

from ollama_openai_bridge.errors import Redactor


def _drop_color_message(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # uvicorn passes a second, ANSI-coloured copy of its messages for terminals; JSON needs one.
    event.pop("color_message", None)
    return event


def _redacting(redact: Redactor) -> structlog.types.Processor:
    def processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = redact(value)
        return event

    return processor


# The current request's id. One ContextVar set once per request is cheaper than structlog's
# bind/unbind_contextvars (measured ~5% of a proxied request's CPU); it is read only when an
# event is actually logged.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# The traced request's ``(trace_id, span_id)`` in hex, as OpenTelemetry writes them (set by
# tracing_asgi.TraceRequests, only when tracing is on): a log line leads to its trace.
TRACE_ID: ContextVar[tuple[str, str] | None] = ContextVar("trace_id", default=None)


def _add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    ids = TRACE_ID.get()  # per line written, not per request
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def _dumps(obj: Any, **_: Any) -> str:
    # orjson: several times faster than json.dumps; what it cannot encode is written as repr(),
    # like structlog's own fallback.
    return orjson.dumps(obj, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()


_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def _timestamp() -> str:
    """structlog's TimeStamper(fmt="iso", utc=True) format, so every line reads alike; the date
    and time are formatted once per second (datetime.isoformat cost 3 µs a line)."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[0], _second[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_second[1]}.{int((now - second) * 1e6):06d}Z"


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs. Besides records, it takes lines rendered
    elsewhere (:meth:`access`), written in order with the rest and flushed once per turn of the
    event loop, so a burst of requests costs one ``write`` rather than one per line."""

    def __init__(self, stream: Any, redact: Redactor) -> None:
        super().__init__(stream)
        self.redact = redact
        self._flush_pending = False
        # Set when tracing is on (carry_trace_ids): the access line then carries the trace id;
        # off, it costs the access line nothing.
        self.trace_ids = False

    def access(self, fields: dict[str, Any]) -> None:
        """One access-log line: ``fields`` plus the fields every event carries."""
        redact = self.redact
        for key, value in fields.items():
            if isinstance(value, str):
                fields[key] = redact(value)
        fields["event"] = "request"
        request_id = REQUEST_ID.get()
        if request_id is not None:
            fields["request_id"] = request_id
        if self.trace_ids and (ids := TRACE_ID.get()) is not None:
            fields["trace_id"], fields["span_id"] = ids
        fields["level"] = "info"
        fields["logger"] = ACCESS_LOGGER
        fields["timestamp"] = _timestamp()
        line = orjson.dumps(fields, default=repr).decode()
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(line + "\n")
        if not self._flush_pending:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_pending = True
            loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        self.flush()


ACCESS_LOGGER = "ollama_openai_bridge.access"


def access_handler() -> LineHandler | None:
    """The handler access lines go to, if :func:`configure_logging` set logging up and the
    access logger is enabled; otherwise None (the general pipeline is used)."""
    if not logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.INFO):
        return None
    return next((h for h in logging.getLogger().handlers if isinstance(h, LineHandler)), None)


def carry_trace_ids() -> None:
    """Tracing is on: the access lines carry the trace and span ids too (the other lines
    always do when there are some)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LineHandler):
            handler.trace_ids = True


def configure_logging(level: str, redact: Redactor, stream: Any = None) -> None:
    shared: list[structlog.types.Processor] = [
        _add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    structlog.configure(
        processors=[
            # First, so that events below the level cost nothing more (the access log is hot).
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_color_message,
            structlog.processors.format_exc_info,
            _redacting(redact),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
    )
    handler = LineHandler(stream or sys.stdout, redact)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs requests


class WarnOnce:
    """Log a warning the first time a key is seen, then only at DEBUG: clients such as n8n send
    the same unsupported options on every request.

    Keys are remembered per kind -- the event and the route (both the proxy's own words, so the
    kinds are few) -- at most :data:`MAX_KEYS` of each, the least recently seen forgotten first.
    Keys may come from clients (option and field names): a flood of them can make its own kind
    warn again about a key it forgot, never mute a first warning, and never touch another kind.
    (One set shared by every kind, which stopped warning once full, let one request of 12,000
    unknown fields send every later first-time warning of the process -- hosted tools dropped,
    options not sent -- to DEBUG: review of #17.) :meth:`names` and :meth:`each` bound what
    one request logs: its new keys by name, the first :data:`PER_REQUEST`, and their count."""

    MAX_KEYS = 1_000  # per kind: keys may come from clients, each kind's set stays bounded
    PER_REQUEST = 20  # keys named in one request's warnings

    def __init__(self, logger: Any) -> None:
        self._seen: dict[tuple[str, str | None], OrderedDict[str, None]] = {}
        self._log = logger

    def _kind(self, event: str, route: str | None) -> OrderedDict[str, None]:
        seen = self._seen.get((event, route))
        if seen is None:
            seen = self._seen[event, route] = OrderedDict()
        return seen

    def _first(self, seen: OrderedDict[str, None], key: str) -> bool:
        """Whether ``key`` is new to ``seen`` (which then remembers it, most recent last)."""
        if key in seen:
            seen.move_to_end(key)
            return False
        seen[key] = None
        if len(seen) > self.MAX_KEYS:
            seen.popitem(last=False)
        return True

    def __call__(self, event: str, key: str, *, route: str | None = None, **kw: Any) -> None:
        """``event`` at WARNING if ``key`` is new to its kind (``event``, ``route``), else at
        DEBUG; ``route``, if given, is logged too."""
        if route is not None:
            kw["route"] = route
        if self._first(self._kind(event, route), key):
            self._log.warning(event, key=key, **kw)
        else:
            self._log.debug(event, key=key, **kw)

    def names(
        self, event: str, keys: Iterable[str], *, route: str | None = None, **kw: Any
    ) -> None:
        """One request's ``keys`` (names a client chose) as one line: a warning naming the new
        ones (``keys``: the first :data:`PER_REQUEST`, the ones remembered; ``count``: how many
        are new), or DEBUG if none is."""
        seen = self._kind(event, route)
        if route is not None:
            kw["route"] = route
        distinct = list(dict.fromkeys(keys))
        new = [key for key in distinct if key not in seen]
        if not new:
            self._log.debug(event, keys=distinct[: self.PER_REQUEST], count=len(distinct), **kw)
            return
        named = new[: self.PER_REQUEST]
        for key in named:
            self._first(seen, key)
        self._log.warning(event, keys=named, count=len(new), **kw)

    def each(
        self,
        event: str,
        pairs: Iterable[tuple[str, str]],
        *,
        route: str | None = None,
        **kw: Any,
    ) -> None:
        """One request's ``(key, detail)`` pairs: the first :data:`PER_REQUEST` distinct keys
        a line each (as :meth:`__call__`, with ``detail``), the rest in one line (:meth:`names`)."""
        details: dict[str, str] = {}
        for key, detail in pairs:
            details.setdefault(key, detail)
        keys = list(details)
        for key in keys[: self.PER_REQUEST]:
            self(event, key, route=route, detail=details[key], **kw)
        if len(keys) > self.PER_REQUEST:
            self.names(event, keys[self.PER_REQUEST :], route=route, detail="and more", **kw)
