"""The outermost pure ASGI middleware (no BaseHTTPMiddleware: it buffers and adds a task).

Per request: the request id (``X-Request-ID`` accepted if sane, else generated, always returned),
bound to every log line; security headers; and, when the response *ends* (for a stream, its last
byte, not its headers), one access log line and the request metrics. Handlers add what only they
know (model, token counts, an error) to the request's
:class:`~ollama_openai_bridge.access.AccessRecord`.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Collection

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ollama_openai_bridge.access import SCOPE_KEY, AccessRecord
from ollama_openai_bridge.errors import ECHO_CHARS, echo
from ollama_openai_bridge.logs import ACCESS_LOGGER, REQUEST_ID, access_handler
from ollama_openai_bridge.metrics import Metrics
from ollama_openai_bridge.render import Renderer, dialect_of

log = structlog.get_logger(ACCESS_LOGGER)
_access = logging.getLogger(ACCESS_LOGGER)

_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class _Head:
    """The ``send`` a request's app is given: the request id and the security headers added to
    the response's head, its status kept for the access line. An object with one bound method
    rather than a closure over three cells and a header list: 0.4 KB less per open stream
    (tracemalloc, issue #18)."""

    __slots__ = ("_id", "_send", "status")

    def __init__(self, send: Send, request_id: bytes) -> None:
        self._send = send
        self._id = request_id
        self.status = 0  # the response's, once its head went out

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [
                *message.get("headers", ()),
                (b"x-request-id", self._id),
                *SECURITY_HEADERS,
            ]
        await self._send(message)


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        renderer: Renderer,
        metrics: Metrics | None = None,
        endpoints: Collection[str] = (),
    ) -> None:
        self.app = app
        self.renderer = renderer
        self.metrics = metrics
        self.endpoints = frozenset(endpoints)
        # Logging is configured before the app is built; access lines take the fast path when
        # it was configured by configure_logging (logs.LineHandler).
        handler = access_handler()
        self.access = None if handler is None else handler.access
        self._id_prefix = os.urandom(12).hex()
        self._ids = itertools.count()

    def _endpoint(self, path: str) -> str:
        if path in self.endpoints:
            return path
        if path.startswith("/v1/models/"):
            return "/v1/models/{model}"
        return "other"  # unknown paths must not grow the label set

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                # Logged with every line: a key pasted there must not reach the log.
                if _VALID_ID.match(candidate) and self.renderer.redact(candidate) == candidate:
                    request_id = candidate
                break
        if not request_id:
            # A random per-process prefix and a counter: unique across processes and restarts
            # like a uuid4, without a getrandom() syscall per request.
            request_id = f"{self._id_prefix}{next(self._ids):08x}"
        start = time.perf_counter()
        rec = scope[SCOPE_KEY] = AccessRecord()
        head = _Head(send, request_id.encode())
        send_wrapper = head.send
        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            # Last line of defence: a bug below must still give an error body in the caller's
            # dialect, never a bare 500 (streams render their own errors, streams.py).
            error = self.renderer.unexpected(exc)
            if head.status:
                raise  # the response began; the server closes the connection
            response = self.renderer.response(error, dialect_of(scope["path"]), rec)
            await response(scope, receive, send_wrapper)
        finally:
            status = head.status
            seconds = time.perf_counter() - start
            path = scope["path"]
            if len(path) > ECHO_CHARS:  # a client's 60 KB path is not a 60 KB log line
                path = echo(path)
            details = rec.fields()
            if self.access is not None:
                self.access(
                    {
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        **details,
                    }
                )
            elif _access.isEnabledFor(logging.INFO):  # skip building the event when filtered
                log.info(
                    "request",
                    method=scope["method"],
                    path=path,
                    status=status,
                    duration_ms=round(seconds * 1000, 3),
                    **details,
                )
            if self.metrics is not None:
                # A stream that ended in an error line went out as 200, a request whose client
                # left went out as nothing; count their error (499: the client's).
                counted = rec.error_status if rec.error_status and status in (0, 200) else status
                self.metrics.request_done(self._endpoint(path), rec.model_label, counted, seconds)
            REQUEST_ID.reset(token)
