"""The one HTTP client to the backend: one pooled aiohttp session, timeouts, retries.

aiohttp, not httpx: measured here, httpx cost ~10x the CPU per request under concurrency.
Failures are mapped to the error hierarchy in one place (:func:`_map_exception`).

Retries happen only here, before a response is handed to a route, i.e. before any byte has
reached the client -- a stream is never replayed, so no content is ever duplicated.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog

from ollama_openai_proxy import __version__
from ollama_openai_proxy.config import Settings
from ollama_openai_proxy.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ollama_openai_proxy.metrics import Metrics
from ollama_openai_proxy.resilience import BreakerState, CircuitBreaker
from ollama_openai_proxy.topology import UpstreamSpec
from ollama_openai_proxy.translate.upstream_errors import upstream_status_error

log = structlog.get_logger("ollama_openai_proxy.upstream")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
KNOWN_PATHS = frozenset({"/chat/completions", "/completions", "/embeddings", "/models"})
BACKOFF_BASE = 0.25
BACKOFF_CAP = 4.0
MAX_RETRY_AFTER = 30.0


def _backoff(attempt: int) -> float:
    # Exponential backoff with full jitter (AWS architecture blog): spreads retries of many
    # clients instead of synchronising them.
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from API servers; fall back to our backoff


class Upstream:
    def __init__(
        self,
        settings: Settings,
        spec: UpstreamSpec,
        breaker: CircuitBreaker | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        key = spec.api_key
        self.name = spec.name
        self.extra_params = spec.extra_params
        self.request_timeout = spec.timeout or settings.request_timeout
        self.breaker = breaker or CircuitBreaker(0, 1.0)
        self.metrics = metrics
        self.base_url = spec.base_url
        self._host = urlsplit(self.base_url).netloc
        # The proxy names itself to the backend rather than as aiohttp (which would also need
        # skip_auto_headers, a slower path through aiohttp's header handling).
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"ollama-openai-proxy/{__version__}",
        }
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        s = self._settings
        connector = aiohttp.TCPConnector(
            limit=s.max_connections,
            limit_per_host=0,
            ttl_dns_cache=300,
            ssl=not s.disable_ssl_verification,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # sock_read bounds the wait for the first byte and every silence inside a stream.
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=s.connect_timeout, sock_read=s.stream_idle_timeout
            ),
            headers=self._headers,
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("upstream session not started")
        return self._session

    def url(self, path: str) -> str:
        return self.base_url + path

    async def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request, retrying connection failures and retryable statuses.

        Returns the response once its headers arrived (any status); the caller reads the body and
        releases it. ``deadline`` (event-loop time) bounds all attempts and the body read: each
        attempt gets aiohttp's own total timeout for the time left (cheaper than wrapping the
        call in asyncio.timeout), and a TimeoutError then propagates as such.
        """
        attempts = self._settings.max_retries + 1
        url = self.url(path)
        kwargs: dict[str, Any] = {"data": body, "headers": headers}
        breaker, metrics = self.breaker, self.metrics
        loop = asyncio.get_running_loop()
        for attempt in range(attempts):
            last = attempt == attempts - 1
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                kwargs["timeout"] = aiohttp.ClientTimeout(
                    total=remaining, sock_connect=self._settings.connect_timeout
                )
            breaker.before()
            started = time.perf_counter()
            try:
                resp = await self.session.request(method, url, **kwargs)
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
                # Refused connections and stale pooled keep-alive sockets: safe to try again.
                self._failed()
                if last:
                    raise _map_exception(exc, self._host) from None
                delay = _backoff(attempt)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._failed()
                if deadline is not None and isinstance(exc, TimeoutError):
                    raise
                raise _map_exception(exc, self._host) from None
            else:
                if metrics is not None:
                    metrics.upstream_done(
                        self.name,
                        path if path in KNOWN_PATHS else "other",
                        resp.status,
                        time.perf_counter() - started,
                    )
                if resp.status >= 500:
                    self._failed()
                elif breaker.state is not BreakerState.CLOSED or breaker.failures:
                    breaker.success()
                    self._breaker_metric()
                if resp.status not in RETRY_STATUSES or last:
                    return resp
                wait = _retry_after(resp)
                if wait is not None and wait > MAX_RETRY_AFTER:
                    return resp  # the backend asks for longer than a client will wait
                resp.release()
                delay = _backoff(attempt) if wait is None else wait
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - loop.time()))
            log.warning(
                "upstream_retry",
                upstream=self.name,
                path=path,
                attempt=attempt + 1,
                delay_s=round(delay, 3),
            )
            if metrics is not None:
                metrics.retried(self.name, path if path in KNOWN_PATHS else "other")
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failed(self) -> None:
        self.breaker.failure()
        self._breaker_metric()

    def _breaker_metric(self) -> None:
        if self.metrics is not None:
            self.metrics.breaker_state(self.name, int(self.breaker.state))

    async def json(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        client_model: str | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """A non-streaming call: the decoded JSON body, or the mapped error."""
        body = None if payload is None else orjson.dumps(payload)
        total = timeout or self.request_timeout
        deadline = asyncio.get_running_loop().time() + total
        try:
            resp = await self.send(method, path, body, headers=headers, deadline=deadline)
            async with resp:
                data = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout(f"upstream did not answer within {total:g} s") from None
        except aiohttp.ClientError as exc:
            raise _map_exception(exc, self._host) from None
        if resp.status >= 400:
            raise upstream_status_error(resp.status, data, client_model=client_model, endpoint=path)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"upstream answered {path} with a body that is not JSON: {data[:200]!r}"
            ) from None

    async def open_stream(
        self,
        path: str,
        payload: Any,
        *,
        client_model: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """Start a streaming call; an error status becomes the mapped error (nothing sent yet)."""
        resp = await self.send("POST", path, orjson.dumps(payload), headers=headers)
        if resp.status >= 400:
            try:
                data = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _map_exception(exc, self._host) from None
            finally:
                resp.release()
            raise upstream_status_error(resp.status, data, client_model=client_model, endpoint=path)
        return resp


def _map_exception(exc: BaseException, host: str) -> UpstreamError:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"upstream {host} timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error) if exc.os_error else str(exc)
        return UpstreamUnavailable(f"cannot connect to upstream {host}: {reason}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamUnavailable(f"upstream {host} closed the connection")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamUnavailable(f"upstream stream interrupted: {exc}")
    return UpstreamUnavailable(f"upstream {host} request failed: {exc.__class__.__name__}: {exc}")


def stream_exception(exc: BaseException, host: str) -> UpstreamError:
    """Errors while reading an open stream (used by routes)."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout("upstream stream stalled: no data within the timeout")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return UpstreamUnavailable("upstream stream interrupted: connection closed early")
    return _map_exception(exc, host)
