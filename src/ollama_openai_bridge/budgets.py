"""Token budgets per inbound key (issue #20): counted, enforced, reported.

- **Counted** after the answer (``Context.count``, once per request, streamed or not, on every
  route that calls a model; a stream counts when it ends, however it ends): the backend's
  ``prompt_tokens`` and ``completion_tokens``, per key, in four fixed UTC windows (minute, hour,
  day, month; budget_plan.window), whatever the key's limits, so that ``/v1/usage`` can report
  them all.
- **Enforced** before the backend is called (:class:`BudgetGuard`): a key that used its budget
  of a window gets 429 with ``Retry-After`` until the window ends, and the backend never sees
  the request. A request already in flight is not stopped: a key may overshoot by what its
  requests in flight use.
- **Where**: in this process's memory, or in Redis (TOKEN_BUDGET_STORAGE_URI, by default the
  rate limits' Redis), so that replicas agree. One hash per key and window,
  ``ollama-openai-bridge:tokens:<caller hash>:<unit>:<window number>`` with fields ``p`` and
  ``c``, raised by HINCRBY in a MULTI/EXEC transaction (atomic: two replicas counting at once
  both count) and expiring with its window (EXPIREAT: the same instant on every replica).
  Writes run on their own, batched: the answer never waits for Redis.
- **Redis failing** never fails a request (fail open, as RATE_LIMIT does): the failure is
  logged, Redis is left alone for :data:`REDIS_REST` seconds, checks pass meanwhile, and the
  tokens counted meanwhile are kept here and added when Redis answers again. Not those of a
  write whose answer timed out: Redis may have applied it, and counting it twice would refuse
  a key what it did not use.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from ollama_openai_bridge.access import record
from ollama_openai_bridge.budget_plan import QUOTA_UNITS, UNITS, Account, Limit, bounds
from ollama_openai_bridge.errors import BudgetExhausted, ProxyError
from ollama_openai_bridge.render import Renderer, dialect_of

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ollama_openai_bridge.metrics import Metrics

log = structlog.get_logger("ollama_openai_bridge.budgets")

# The project's first name: replicas of the old and the new release share counters during a
# rolling upgrade (the rename to ollama-openai-bridge changed no stored key).
PREFIX = "ollama-openai-proxy:tokens:"
REDIS_TIMEOUT = 0.25  # seconds per Redis operation (a check waits at most twice this)
REDIS_REST = 10.0  # seconds Redis is not asked after it failed
MAX_UNSENT = 10_000  # counts waiting for Redis at most (keys x windows: a few hundred at most)
# The routes that call a model: POST only. Listing models, showing one, reading one's usage stay
# open to a key whose budget is spent.
SPENDING = frozenset(
    {
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/messages",
    }
)

Tally = list[int]  # [prompt tokens, completion tokens]


class StorageUnavailable(ProxyError):
    """The usage endpoint cannot read Redis (requests themselves never fail for it)."""

    status = 503


class TokenBudgets:
    """``await check(caller)`` before the backend call; ``spend(caller, prompt, completion)``
    after it; ``await usage(callers)`` for ``/v1/usage``. ``accounts``: by caller
    (budget_plan.load_accounts); ``uri``: ``memory://`` or ``redis://``."""

    def __init__(
        self,
        accounts: dict[str, Account],
        uri: str = "memory://",
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = accounts
        self._metrics = metrics
        self._clock = clock
        # (counter, unit) -> [window number, prompt, completion]: the counts (memory storage)
        self._memory: dict[tuple[str, str], list[int]] = {}
        # (counter, unit, window number) -> [prompt, completion, window end]: counts not yet in
        # Redis; _sending: the batch being written
        self._unsent: dict[tuple[str, str, int], list[Any]] = {}
        self._sending: dict[tuple[str, str, int], list[Any]] = {}
        self._writer: asyncio.Task[None] | None = None
        self._windows: dict[str, tuple[int, float, float]] = {}  # unit -> the current one
        self._resting_until = 0.0  # monotonic time until which Redis is not asked
        self._redis: Redis | None = None
        self._timeouts: tuple[type[BaseException], ...] = (TimeoutError,)
        if uri.startswith(("redis://", "rediss://")):
            from redis.asyncio import Redis  # noqa: PLC0415 -- only deployments that use it
            from redis.asyncio.retry import Retry  # noqa: PLC0415
            from redis.backoff import NoBackoff  # noqa: PLC0415
            from redis.exceptions import TimeoutError as RedisTimeout  # noqa: PLC0415

            # No retries inside redis-py (by default 3, with a backoff of up to seconds): a
            # failure must come back within the timeout, as itself -- a refused connection
            # applied nothing and its counts are kept; and a transaction sent again after its
            # answer was lost would count twice. The rest period is the retry.
            self._redis = Redis.from_url(
                uri,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )
            self._timeouts = (TimeoutError, RedisTimeout)

    @property
    def shared(self) -> bool:
        """Whether the counts live in Redis, shared by every replica."""
        return self._redis is not None

    # --- enforcing ------------------------------------------------------------------------------

    async def check(self, caller: str) -> BudgetExhausted | None:
        """The 429 for ``caller`` (``AccessRecord.caller``) if it has used its budget of a
        window, else None (also for a caller without budget, and when Redis fails). Never
        raises."""
        account = self.accounts.get(caller)
        if account is None or not account.limits:
            return None
        now = self._clock()
        used = await self._read(account, [limit.unit for limit in account.limits], now)
        if used is None:
            return None
        spent: tuple[Limit, int, float] | None = None
        for limit, (prompt, completion) in zip(account.limits, used, strict=True):
            total = prompt + completion
            if total >= limit.tokens:
                end = self._window(limit.unit, now)[1]
                if spent is None or end > spent[2]:  # the one that frees last decides
                    spent = (limit, total, end)
        if spent is None:
            return None
        limit, total, end = spent
        if self._metrics is not None:
            self._metrics.budget_refused(account.label, limit.unit)
        retry = max(1, math.ceil(end - now))
        return BudgetExhausted(
            f"token budget of key '{account.label}' used up: {total} of {limit.tokens} tokens "
            f"this {limit.unit} (UTC); retry in {retry} s",
            retry,
            quota=limit.unit in QUOTA_UNITS,
        )

    # --- counting -------------------------------------------------------------------------------

    def spend(self, caller: str, prompt: int | None, completion: int | None) -> None:
        """Count a request's tokens against ``caller``'s budget, in every window. Returns at
        once: a Redis write runs on its own. Never raises (it runs as a stream's cleanup)."""
        account = self.accounts.get(caller)
        if account is None:
            return
        p, c = max(prompt or 0, 0), max(completion or 0, 0)
        if not p and not c:
            return
        try:
            if self._metrics is not None:
                self._metrics.key_tokens(account.label, p, c)
            now = self._clock()
            for unit in UNITS:
                n, end = self._window(unit, now)
                if self._redis is None:
                    kept = self._memory.get((account.counter, unit))
                    if kept is None or kept[0] != n:
                        self._memory[(account.counter, unit)] = [n, p, c]
                    else:
                        kept[1] += p
                        kept[2] += c
                else:
                    self._add(self._unsent, (account.counter, unit, n), p, c, end)
            if self._redis is not None:
                self._send()
        except Exception as exc:  # a bug here must not cost the answer
            log.warning("token_budget_count_failed", error=repr(exc))

    def _window(self, unit: str, now: float) -> tuple[int, float]:
        """budget_plan.window, computed once per window (a month's takes a datetime)."""
        known = self._windows.get(unit)
        if known is None or not known[1] <= now < known[2]:
            known = self._windows[unit] = bounds(unit, now)
        return known[0], known[2]

    @staticmethod
    def _add(
        into: dict[tuple[str, str, int], list[Any]],
        key: tuple[str, str, int],
        p: int,
        c: int,
        end: float,
    ) -> None:
        kept = into.get(key)
        if kept is None:
            if len(into) >= MAX_UNSENT:  # Redis gone for long: the oldest counts go
                del into[next(iter(into))]
            into[key] = [p, c, end]
        else:
            kept[0] += p
            kept[1] += c

    def _send(self) -> None:
        if self._writer is not None or not self._unsent or time.monotonic() < self._resting_until:
            return
        self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        # One writer at a time: what is counted while it writes goes in its next batch.
        assert self._redis is not None
        try:
            while self._unsent and time.monotonic() >= self._resting_until:
                batch, self._unsent = self._unsent, {}
                self._sending = batch
                now = self._clock()
                pipe = self._redis.pipeline(transaction=True)
                for (counter, unit, n), (p, c, end) in batch.items():
                    if end <= now:
                        continue  # its window is over: nothing reads it any more
                    name = f"{PREFIX}{counter}:{unit}:{n}"
                    if p:
                        pipe.hincrby(name, "p", p)
                    if c:
                        pipe.hincrby(name, "c", c)
                    pipe.expireat(name, int(end) + 60)
                try:
                    await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT * 2)
                except Exception as exc:
                    self._failed("count", exc)
                    # A timeout may come after Redis applied the batch: not counted twice. Any
                    # other failure applied nothing (MULTI/EXEC): kept for the next write.
                    if not isinstance(exc, self._timeouts):
                        for entry, (p, c, end) in batch.items():
                            self._add(self._unsent, entry, p, c, end)
                finally:
                    self._sending = {}
        finally:
            self._writer = None

    def _failed(self, operation: str, exc: BaseException) -> None:
        # Left alone for a while: a hung Redis would otherwise cost each request its timeout.
        now = time.monotonic()
        if now >= self._resting_until:
            log.warning(
                "token_budget_storage_unavailable",
                operation=operation,
                error=repr(exc),
                retry_in_s=REDIS_REST,
                detail="requests pass unchecked meanwhile (fail open)",
            )
        self._resting_until = now + REDIS_REST

    # --- reading --------------------------------------------------------------------------------

    async def _read(
        self, account: Account, units: list[str], now: float
    ) -> list[tuple[int, int]] | None:
        """(prompt, completion) used in the current window of each of ``units``; None when
        Redis cannot say (logged)."""
        windows = [self._window(unit, now)[0] for unit in units]
        if self._redis is None:
            out = []
            for unit, n in zip(units, windows, strict=True):
                kept = self._memory.get((account.counter, unit))
                out.append((kept[1], kept[2]) if kept is not None and kept[0] == n else (0, 0))
            return out
        if time.monotonic() < self._resting_until:
            return None
        try:
            pipe = self._redis.pipeline(transaction=False)
            for unit, n in zip(units, windows, strict=True):
                pipe.hmget(f"{PREFIX}{account.counter}:{unit}:{n}", ["p", "c"])
            values = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT * 2)
            read = [[_int(v[0]), _int(v[1])] for v in values]
            _expect(len(read) == len(units), f"{len(read)} answers to {len(units)} reads")
        except Exception as exc:  # Redis down, slow or odd: unchecked, loudly
            self._failed("check", exc)
            return None
        for (unit, n), counts in zip(zip(units, windows, strict=True), read, strict=True):
            for waiting in (self._unsent, self._sending):  # this replica's, not yet in Redis
                kept = waiting.get((account.counter, unit, n))
                if kept is not None:
                    counts[0] += kept[0]
                    counts[1] += kept[1]
        return [(p, c) for p, c in read]

    def find(self, wanted: str | None) -> list[str]:
        """The callers whose key id (or a longer prefix of its hash) or name is ``wanted``;
        every caller for None."""
        if wanted is None:
            return list(self.accounts)
        low = wanted.lower()
        return [
            caller
            for caller, a in self.accounts.items()
            if a.name == wanted or (len(low) >= 8 and a.counter.startswith(low))
        ]

    async def usage(self, callers: Iterable[str]) -> list[dict[str, Any]]:
        """``/v1/usage``'s entries for ``callers``: key id, name, and per window its limit (or
        None), prompt, completion and total tokens, what remains (or None), and when it resets
        (``resets_at``, ISO 8601 UTC; ``reset_in_s``). Raises :class:`StorageUnavailable` when
        Redis cannot be read."""
        now = self._clock()
        units = list(UNITS)
        out = []
        for caller in callers:
            account = self.accounts[caller]
            used = await self._read(account, units, now)
            if used is None:
                raise StorageUnavailable(
                    "the token counts' storage (Redis, TOKEN_BUDGET_STORAGE_URI) does not answer; "
                    f"try again in {REDIS_REST:g} s"
                )
            limits = {limit.unit: limit.tokens for limit in account.limits}
            windows = {}
            for unit, (p, c) in zip(units, used, strict=True):
                end = self._window(unit, now)[1]
                limit = limits.get(unit)
                windows[unit] = {
                    "limit": limit,
                    "prompt_tokens": p,
                    "completion_tokens": c,
                    "total_tokens": p + c,
                    "remaining": None if limit is None else max(limit - p - c, 0),
                    "resets_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)),
                    "reset_in_s": max(0, math.ceil(end - now)),
                }
            out.append({"key_id": account.key_id, "name": account.name, "windows": windows})
        return out

    async def close(self) -> None:
        """Write what is still waiting (bounded by the timeout), then close the Redis pool."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._redis is not None:
            if self._unsent and time.monotonic() >= self._resting_until:
                self._send()
                if self._writer is not None:
                    await asyncio.gather(self._writer, return_exceptions=True)
            if self._unsent:
                log.warning("token_counts_not_stored", entries=len(self._unsent))
            await self._redis.aclose()


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise TypeError(what)


def _int(value: Any) -> int:
    """A count as Redis answers it (bytes, or None for nothing counted)."""
    if value is None:
        return 0
    n = int(value)
    if n < 0:
        raise ValueError(f"a negative count: {n}")
    return n


class BudgetGuard:
    """The ASGI layer (inside the key check, security.GuardMiddleware, which names the caller)
    that refuses a request of a key whose budget is used up, before anything reaches the
    backend: 429 with Retry-After in the route's dialect (render.py). Only POSTs to the routes
    that call a model (:data:`SPENDING`) are checked; installed only with budgets (app.py)."""

    def __init__(self, app: ASGIApp, budgets: TokenBudgets, renderer: Renderer) -> None:
        self.app = app
        self.budgets = budgets
        self.renderer = renderer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in SPENDING:
            refused = await self.budgets.check(record(scope).caller)
            if refused is not None:
                response = self.renderer.response(refused, dialect_of(scope["path"]), record(scope))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
