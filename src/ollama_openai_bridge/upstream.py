"""The one HTTP client to the backend: one pooled session per upstream, timeouts, retries.

The session is the proxy's own HTTP/1.1 client (:mod:`ollama_openai_bridge.http1`, about half the
CPU of aiohttp's per request and per streamed chunk, issue #18) wherever it applies, else an
aiohttp session (UPSTREAM_HTTP_CLIENT, :func:`client_for`); both answer with an
:class:`UpstreamResponse`, so everything above this module is one path. (httpx was measured
too: ~10x aiohttp's CPU per request under concurrency.) Failures of either are mapped to the
error hierarchy in one place (:func:`map_failure`).

Retries happen only here, before a response is handed to a route, i.e. before any byte has
reached the client -- a stream is never replayed, so no content is ever duplicated. So are a
backend's redirects, the same for both clients (:mod:`.upstream_redirect`; neither client
follows one on its own).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import Awaitable, Mapping
from types import ModuleType
from typing import Any, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

import orjson
import structlog

from ollama_openai_bridge import __version__, egress, http1
from ollama_openai_bridge.balance import Balancer, Pick, Replica
from ollama_openai_bridge.config import Settings
from ollama_openai_bridge.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    malformed,
)
from ollama_openai_bridge.metrics import Metrics
from ollama_openai_bridge.profiles import named
from ollama_openai_bridge.refusals import Refusals
from ollama_openai_bridge.resilience import BreakerState, CircuitBreaker
from ollama_openai_bridge.sse import EventTooLarge
from ollama_openai_bridge.topology import UpstreamSpec
from ollama_openai_bridge.upstream_errors import upstream_status_error
from ollama_openai_bridge.upstream_redirect import REDIRECTS, Redirects, UpstreamRedirect

log = structlog.get_logger("ollama_openai_bridge.upstream")


class Failures:
    """What the clients in use can raise. ``foreign``: everything a backend call can raise,
    which map_failure() turns into an UpstreamError -- the one list, used around the send, the
    body read and the stream read (http1's own are OSError and TimeoutError subclasses, but for
    InvalidResponse). ``retryable``: of those, the failures before any answer that are safe to
    try again (refused or reset connections, stale pooled keep-alive sockets). aiohttp's join
    when the first aiohttp upstream starts (:func:`aiohttp_client`): aiohttp is imported only
    then. An ``except`` clause reads them only when something was raised: nothing per call."""

    foreign: tuple[type[BaseException], ...] = (
        OSError,
        TimeoutError,
        UnicodeDecodeError,
        EventTooLarge,
        http1.InvalidResponse,
    )
    retryable: tuple[type[BaseException], ...] = (http1.ConnectFailed, http1.Disconnected)
    aiohttp: ModuleType | None = None  # upstream_aiohttp, once an upstream uses aiohttp


def aiohttp_client() -> ModuleType:
    """:mod:`ollama_openai_bridge.upstream_aiohttp` (importing aiohttp, once), with aiohttp's
    failures added to :class:`Failures`."""
    if Failures.aiohttp is None:
        from ollama_openai_bridge import upstream_aiohttp  # noqa: PLC0415 -- see the docstring

        Failures.foreign = (*upstream_aiohttp.FAILURES, *Failures.foreign)
        Failures.retryable = (*upstream_aiohttp.RETRYABLE, *Failures.retryable)
        Failures.aiohttp = upstream_aiohttp
    return Failures.aiohttp


RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
KNOWN_PATHS = frozenset({"/chat/completions", "/completions", "/embeddings", "/models"})
BACKOFF_BASE = 0.25
BACKOFF_CAP = 4.0
MAX_RETRY_AFTER = 30.0
_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)")


class Body(Protocol):
    """``resp.content``: aiohttp's StreamReader, or http1's Response itself."""

    async def readany(self) -> bytes:
        """What arrived since the last read (at least a byte; waits), ``b""`` at the end."""
        ...


class Host(Protocol):
    @property
    def host(self) -> str | None: ...


class UpstreamResponse(Protocol):
    """What the proxy reads of a backend's answer, whichever client brought it:
    ``aiohttp.ClientResponse`` and :class:`http1.Response` both are one. ``headers`` are
    case-insensitive; ``content_type`` is the media type, lower-case, without parameters."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content_type(self) -> str: ...
    @property
    def content_length(self) -> int | None: ...
    @property
    def content(self) -> Body: ...
    @property
    def url(self) -> Host: ...
    async def read(self) -> bytes:
        """The whole body (decoded)."""
        ...

    def release(self) -> Any:
        """Done: the connection goes back to the pool if the body was read, else closes."""

    def close(self) -> None:
        """Close the connection now (unless the body had all arrived)."""


class Session(Protocol):
    """The part of ``aiohttp.ClientSession`` that :class:`Upstream` uses, which
    :class:`http1.Client` has too. ``timeout``: the client's own (ClientTimeout, or seconds)."""

    def request(
        self, method: str, url: str, *, data: bytes | None = ..., timeout: Any = ...
    ) -> Awaitable[UpstreamResponse]: ...
    async def close(self) -> None: ...


def client_for(
    choice: str, base_url: str, env: Mapping[str, str] | None = None
) -> tuple[str, str, egress.Proxy | None]:
    """The client for an upstream at ``base_url`` under UPSTREAM_HTTP_CLIENT=``choice``
    (auto, aiohttp or http1): ``("http1" or "aiohttp", why, the proxy or None)``. http1 unless
    told otherwise, the URL is one it does not handle (:func:`http1.unsupported`), or an HTTP
    proxy from ``env`` (the process environment: HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY;
    :func:`egress.proxy_for`) applies to it: the http1 client connects only directly (issue
    #18 keeps aiohttp behind it "for HTTP proxies from the environment"). With ``http1``
    forced, the configuration refused such an upstream at start (config/backends.py). Raises
    :class:`egress.EgressError` for a proxy aiohttp cannot use."""
    proxy = egress.proxy_for(base_url, os.environ if env is None else env)
    if choice == "aiohttp":
        return "aiohttp", "UPSTREAM_HTTP_CLIENT=aiohttp", proxy
    reason = http1.unsupported(base_url)
    if reason is not None:
        return "aiohttp", f"the http1 client does not handle {reason}", proxy
    if proxy is not None:
        return "aiohttp", f"{proxy.variable} applies: the http1 client connects directly", proxy
    return "http1", f"UPSTREAM_HTTP_CLIENT={choice}", None


def _backoff(attempt: int) -> float:
    # Exponential backoff with full jitter (AWS architecture blog): spreads retries of many
    # clients instead of synchronising them.
    # bandit B311: retry jitter, not a secret: predictability costs nothing here
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))  # nosec B311


def _retry_after(resp: UpstreamResponse) -> float | None:
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
        self.breaker.on_change = self._breaker_changed  # the metric and the log follow its state
        self.metrics = metrics
        self.base_url = spec.base_url
        parts = urlsplit(self.base_url)
        self._host = parts.netloc
        # A query in the base URL (Azure's ?api-version=...) goes after each request's path,
        # not before it.
        self._prefix = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self._query = "?" + parts.query if parts.query else ""
        # How this backend wants requests (profiles.py), resolved once: Backends reads it too.
        self.profile = named(spec.profile, spec.base_url)
        layout = self.profile.layout
        # Azure's classic layout names the model in the URL: the deployment is the one model.
        found = _DEPLOYMENT.search(parts.path) if layout == "azure-classic" else None
        self.deployment = found.group(1) if found else None
        # The proxy names itself to the backend rather than as aiohttp (which would also need
        # skip_auto_headers, a slower path through aiohttp's header handling).
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"ollama-openai-bridge/{__version__}",
        }
        if key and layout in ("azure-classic", "azure-v1"):
            # Azure's key header (learn.microsoft.com/azure/ai-foundry/openai/reference):
            # a key sent as Bearer is refused with 401; Bearer is for Entra ID tokens.
            self._headers["api-key"] = key
        elif key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._headers.update(spec.headers)  # the operator's (BACKEND_HEADERS, headers:)
        self._settings = settings
        choice = settings.upstream_http_client
        self.client, self._why, proxy = client_for(choice, spec.base_url)
        # Per origin (scheme://host:port/), the proxy it is called through, None: directly.
        self._proxies: dict[str, egress.Proxy | None] = {egress.origin(spec.base_url): proxy}
        # Replicas (base_urls): one session serves them all (both clients pool per origin);
        # http1 only if it can reach every one of them.
        self.balancer: Balancer | None = None
        if spec.balance is not None:
            self.balancer = Balancer(spec.name, spec.balance, metrics)
            for replica in spec.balance.replicas:
                client, why, proxy = client_for(choice, replica.url)
                self._proxies[egress.origin(replica.url)] = proxy
                if client == "aiohttp" and self.client == "http1":
                    self.client, self._why = client, f"{why} (replica {replica.name})"
        self._session: Session | None = None
        self._timeouts: dict[float, Any] = {}  # per total, the client's timeout: made once
        # Redirects are decided in send (upstream_redirect), not by aiohttp; http1 follows none.
        self._options = {} if self.client == "http1" else {"allow_redirects": False}
        self._redirects = Redirects(self.name)
        # What this backend refused (exchange.adapt learns it; the translation applies it).
        self.refusals = Refusals()

    async def start(self, tracing: Any = None) -> None:
        """Open the session; ``tracing`` (tracing.Tracing, when on): each request it sends is
        traced, its ``traceparent`` sent along (tracing.TracedSession)."""
        s = self._settings
        used = {o: p for o, p in self._proxies.items() if p is not None}
        # Egress through a proxy is worth seeing at INFO: it decides where every call goes.
        (log.info if used else log.debug)(
            "upstream_client",
            upstream=self.name,
            client=self.client,
            reason=self._why,
            proxy=egress.shown(self._proxies) if used else None,
        )
        if self.client == "http1":
            session: Session = http1.Client(
                headers=self._headers,
                limit=s.max_connections,
                connect_timeout=s.connect_timeout,
                # as aiohttp's sock_read: the wait for the first byte and every silence after
                read_timeout=s.stream_idle_timeout,
                verify=not s.disable_ssl_verification,
            )
        else:
            session = cast(Session, aiohttp_client().session(s, self._headers, used))
        if tracing is not None:
            from ollama_openai_bridge.tracing import TracedSession  # noqa: PLC0415 -- when on

            session = cast(Session, TracedSession(session, tracing))
        self._session = session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("upstream session not started")
        return self._session

    def url(self, path: str, replica: Replica | None = None) -> str:
        """The full URL of ``path`` (``/chat/completions``) on this backend (on ``replica`` of
        it when balanced). Azure's classic layout has no model list under a deployment:
        ``/models`` is the resource's own (``/openai/models``), which tells whether the key and
        the resource answer."""
        prefix, query = (self._prefix, self._query) if replica is None else replica.base
        if self.deployment is not None and path == "/models":
            return prefix[: prefix.index("/openai/") + 7] + path + query
        return prefix + path + query

    async def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        total: float | None = None,
        settle: bool = True,
        pick: Pick | None = None,
    ) -> UpstreamResponse:
        """Send one request, retrying connection failures and retryable statuses.

        Returns the response once its headers arrived (any status); the caller reads the body and
        releases it. ``total`` (seconds) bounds all attempts and the body read: each attempt gets
        the client's own total timeout for the time left (cheaper than wrapping the call in
        asyncio.timeout; the first attempt's is made once per value), and a TimeoutError then
        propagates as such.

        The circuit breaker admits the call once (raises
        :class:`~ollama_openai_bridge.errors.BreakerOpen`) and hears its outcome once, whatever
        the retries: a failure raised from here is reported here, a cancellation is no verdict.
        A response returned is reported by its status -- by the caller instead when ``settle``
        is false (a stream: only its first read shows the backend at work), with
        ``breaker.record``/``record_error``. Retries stop once the breaker has opened.

        ``pick`` (a balanced upstream, balance.py): each attempt goes to the replica it takes,
        a retry to another one than the last; up to ``pick.spare`` more retries than
        MAX_RETRIES, without backoff while they move to a replica not yet tried. Each attempt's
        outcome goes to its replica's outlier detection (the returned answer's only when
        ``settle``); the caller's owner releases the replica held.
        """
        attempts = self._settings.max_retries + 1
        url = self.url(path)
        host = self._host
        spare = 0
        if pick is not None:
            spare = pick.spare
            attempts += spare
        kwargs: dict[str, Any] = {"data": body, **self._options}
        breaker, metrics = self.breaker, self.metrics
        loop = asyncio.get_running_loop()
        deadline = 0.0
        if total is not None:
            deadline = loop.time() + total
            timeout = self._timeouts.get(total)
            if timeout is None:
                timeout = self._timeouts[total] = self._total_timeout(total)
            kwargs["timeout"] = timeout
        breaker.before()
        retried = 0  # the status of the answer last retried; 0: it had none
        try:
            for attempt in range(attempts):
                if total is not None and attempt:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        # out of time while retrying: the call ends as its last attempt did (a
                        # 429 that asked us to wait is no sign of a sick backend)
                        if retried:
                            breaker.record(retried)
                        else:
                            breaker.failure(gateway=True)
                        raise TimeoutError
                    kwargs["timeout"] = self._total_timeout(remaining)
                if pick is not None:
                    replica = pick.take(attempt > 0)
                    url, host = self.url(path, replica), replica.host
                started = time.perf_counter()
                try:
                    resp = await self.session.request(method, url, **kwargs)
                    if resp.status in REDIRECTS:
                        resp = await self._redirects.follow(self.session, method, url, resp, kwargs)
                except Failures.retryable as exc:
                    # Refused or reset connections and stale pooled keep-alive sockets: nothing
                    # was answered, so MAX_RETRIES tries again (docs/CONFIGURATION.md), as
                    # openai-python does for its connection errors, POST included. A backend
                    # that read the request and died runs it once per attempt; http1's own
                    # resend adds no run to that (http1.client.resend_reason). A close after
                    # part of the answer had come is not retried: the backend took the
                    # request, and a POST must not run twice (fresh-eyes review of #18).
                    answered = isinstance(exc, http1.Disconnected) and exc.answered
                    if pick is not None:
                        pick.failure()
                    if answered or attempt == attempts - 1 or breaker.state is BreakerState.OPEN:
                        breaker.failure(gateway=True)
                        raise map_failure(exc, host) from None
                    retried = 0
                    delay = 0.0 if attempt < spare else _backoff(attempt - spare)
                except Failures.foreign as exc:
                    if pick is not None:
                        pick.failure()
                    breaker.failure(gateway=True)
                    if total is not None and isinstance(exc, TimeoutError):
                        raise
                    raise map_failure(exc, host) from None
                except UpstreamRedirect as exc:  # answered, not followed: the backend is up
                    status = exc.upstream_status
                    if metrics is not None:
                        metrics.upstream_done(
                            self.name,
                            path if path in KNOWN_PATHS else "other",
                            status,
                            time.perf_counter() - started,
                        )
                    if pick is not None:
                        pick.record(status)
                    breaker.record(status)
                    raise
                else:
                    status = resp.status
                    if metrics is not None:
                        metrics.upstream_done(
                            self.name,
                            path if path in KNOWN_PATHS else "other",
                            status,
                            time.perf_counter() - started,
                        )
                    if (
                        status not in RETRY_STATUSES
                        or attempt == attempts - 1
                        or breaker.state is BreakerState.OPEN
                    ):
                        if settle:
                            if status < 500:
                                breaker.success()
                            else:
                                breaker.record(status)
                            if pick is not None:
                                pick.record(status)
                        return resp
                    wait = _retry_after(resp)
                    if wait is not None and wait > MAX_RETRY_AFTER and attempt >= spare:
                        if settle:
                            breaker.record(status)
                            if pick is not None:
                                pick.record(status)
                        return resp  # the backend asks for longer than a client will wait
                    resp.release()
                    if pick is not None:
                        pick.record(status)
                    retried = status
                    if attempt < spare:  # another replica next: no need to wait for this one
                        delay = 0.0
                    else:
                        delay = _backoff(attempt - spare) if wait is None else wait
                if total is not None:
                    delay = min(delay, max(0.0, deadline - loop.time()))
                log.warning(
                    "upstream_retry",
                    upstream=self.name,
                    path=path,
                    attempt=attempt + 1,
                    delay_s=round(delay, 3),
                    **({} if pick is None or pick.replica is None else {"from": pick.replica.name}),
                )
                if metrics is not None:
                    metrics.retried(self.name, path if path in KNOWN_PATHS else "other")
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            breaker.abandon()  # neither a success nor a failure: the breaker must not wait
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _total_timeout(self, seconds: float) -> Any:
        if self.client == "http1":
            return seconds
        return aiohttp_client().total_timeout(seconds, self._settings.connect_timeout)

    def _breaker_changed(self, state: BreakerState, reason: str) -> None:
        breaker = self.breaker
        calls, failures = breaker.counts()
        (log.info if state is BreakerState.CLOSED else log.warning)(
            "circuit_breaker",
            upstream=self.name,
            state=state.name.lower(),
            reason=reason,
            window_calls=calls,
            window_failures=failures,
            window_s=breaker.window,
            cooldown_s=breaker.cooldown,
        )
        if self.metrics is not None:
            self.metrics.breaker_state(self.name, int(state))

    async def read(self, resp: UpstreamResponse) -> bytes:
        """The whole body of ``resp`` (released afterwards), failures mapped; an answer larger
        than RESPONSE_MAX_SIZE once decompressed (an 815 KB gzip body can be 800 MB) is an
        :class:`UpstreamProtocolError`, read no further."""
        limit = self._settings.response_max_size
        try:
            length = resp.content_length
            if length is not None and length <= limit and "Content-Encoding" not in resp.headers:
                return await resp.read()  # the usual case: a plain body of a stated length
            chunks: list[bytes] = []
            size = 0
            content = resp.content
            while chunk := await content.readany():
                size += len(chunk)
                if size > limit:
                    raise UpstreamProtocolError(
                        f"upstream answer larger than {limit} bytes (RESPONSE_MAX_SIZE)"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
        except Failures.foreign as exc:
            raise map_failure(exc, self._host, reading=True) from None
        finally:
            resp.release()  # a no-op once read() reached the end (aiohttp released it then)

    async def json(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        client_model: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """A small non-streaming call (the model list, readiness): the decoded JSON body.

        Raises the mapped :class:`UpstreamError` for a failure, an error status
        (:func:`upstream_status_error`) or a body that is not JSON."""
        body = None if payload is None else orjson.dumps(payload)
        total = timeout or self.request_timeout
        pick = None if self.balancer is None else self.balancer.call(body)
        try:
            resp = await self.send(method, path, body, total=total, pick=pick)
            data = await self.read(resp)
        except TimeoutError:
            raise UpstreamTimeout(f"upstream did not answer within {total:g} s") from None
        finally:
            if pick is not None:
                pick.release()
        return decode(resp.status, data, client_model=client_model, endpoint=path)


def decode(status: int, body: bytes, *, client_model: str | None, endpoint: str) -> Any:
    """A whole answer's decoded JSON; an error status raises :func:`upstream_status_error`'s
    error, a body that is not JSON :func:`~ollama_openai_bridge.errors.malformed`."""
    if status >= 400:
        raise upstream_status_error(status, body, client_model=client_model, endpoint=endpoint)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise malformed(f"a body that is not JSON for {endpoint}", body) from None


def map_failure(exc: BaseException, host: str, *, reading: bool = False) -> UpstreamError:
    """The one mapping from a foreign failure (aiohttp, http1, the OS, a timeout, undecodable
    bytes) to the most specific :class:`UpstreamError`, as httpx's ``map_httpcore_exceptions``
    does. ``reading``: the failure came while reading an answer whose headers had arrived."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError is one
        if reading:
            return UpstreamTimeout("upstream stream stalled: no data within the timeout")
        return UpstreamTimeout(f"upstream {host} timed out")
    if isinstance(exc, UnicodeDecodeError):
        return malformed("bytes that are not UTF-8", exc.object[max(0, exc.start - 40) :])
    if isinstance(exc, EventTooLarge | http1.InvalidResponse):
        return UpstreamProtocolError(f"upstream sent {exc}")
    if Failures.aiohttp is not None:  # aiohttp's own kinds, told apart as http1's are below
        mapped: UpstreamError | None = Failures.aiohttp.map_failure(exc, host, reading=reading)
        if mapped is not None:
            return mapped
    if isinstance(exc, http1.ConnectFailed):
        reason = exc.os_error.strerror or str(exc.os_error) if exc.os_error else str(exc)
        return UpstreamUnavailable(f"cannot connect to upstream {host}: {reason}")
    if reading and isinstance(exc, ConnectionResetError):
        return UpstreamUnavailable("upstream stream interrupted: connection reset")
    if reading and isinstance(exc, http1.Disconnected):
        return UpstreamUnavailable("upstream stream interrupted: connection closed early")
    if isinstance(exc, http1.Disconnected):
        return UpstreamUnavailable(f"upstream {host} closed the connection")
    if isinstance(exc, ConnectionError):
        return UpstreamUnavailable(f"upstream {host} reset the connection")
    return UpstreamUnavailable(f"upstream {host} request failed: {exc.__class__.__name__}")
