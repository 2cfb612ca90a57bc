"""Token budgets per inbound key (issue #20): admitted, counted, enforced, reported.

- **Admitted** before the backend is called (:meth:`TokenBudgets.wrap`, around
  ``Backends.execute``: every POST that reaches a backend or the response cache, on any route):
  a key that used its budget of a window gets 429 with ``Retry-After`` until the window ends,
  and the backend never sees the request. Otherwise the request's prompt estimate
  (translate/estimate.py, characters / 4) is charged at once, atomically, to the same counters
  (:class:`Ticket`): N requests sent at once see each other's estimates, so no more are
  admitted than the budget's room holds estimates. A key may still overshoot: by what its
  admitted requests in flight use beyond their estimates (their completions, mostly).
- **Counted** when the request is over (:class:`BudgetGuard`, which holds every request until
  its response has ended, however it ends): the backend's ``prompt_tokens`` and
  ``completion_tokens`` replace the estimate -- one correction of ``actual - estimate`` to the
  windows it was admitted in. What the backend did not report (a stream the client left before
  its last line, a backend that never reports usage) is estimated: the prompt estimate, and
  the characters of text, reasoning and tool calls the answer produced / 4 (DEBUG log
  ``token_usage_estimated``). A request that got no answer (an error) is given its estimate
  back. Counts are kept in four fixed UTC windows (minute, hour, day, month;
  budget_plan.window), whatever the key's limits, so that ``/v1/usage`` can report them all.
- **Where**: in this process's memory, or in Redis (TOKEN_BUDGET_STORAGE_URI, by default the
  rate limits' Redis), so that replicas agree. One hash per key and window,
  ``ollama-openai-proxy:tokens:<caller hash>:<unit>:<window number>`` with fields ``p`` and
  ``c``, raised by HINCRBY in MULTI/EXEC transactions (atomic: two replicas admitting at once
  both see both) and expiring with its window (EXPIREAT: the same instant on every replica).
  The admission waits for Redis (one transaction); the corrections run on their own, batched.
- **Redis failing** never fails a request (fail open, as RATE_LIMIT does): the failure is
  logged, Redis is left alone for :data:`REDIS_REST` seconds, requests are admitted unchecked
  meanwhile, and the tokens counted meanwhile are kept here and added when Redis answers again
  -- retried every :data:`RETRY_EVERY` s once the rest is over (:meth:`TokenBudgets.start`), so
  a replica that gets no more requests still hands them over. Not those of a write whose answer
  timed out: Redis may have applied it, and counting it twice would refuse a key what it did not
  use.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from ollama_openai_bridge.access import SCOPE_KEY, AccessRecord
from ollama_openai_bridge.budget_plan import (
    QUOTA_UNITS,
    UNITS,
    Account,
    Limit,
    Ticket,
    Window,
    bounds,
)
from ollama_openai_bridge.errors import BudgetExhausted, ProxyError
from ollama_openai_bridge.translate.estimate import prompt_tokens, tokens

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ollama_openai_bridge.exchange import EventStream, Plan, Reply
    from ollama_openai_bridge.metrics import Metrics
    from ollama_openai_bridge.owner import Owner

    Execute = Callable[[Plan, Owner, AccessRecord], Awaitable[Reply | EventStream]]

log = structlog.get_logger("ollama_openai_bridge.budgets")

# The project's first name: replicas of the old and the new release share counters during a
# rolling upgrade (the rename to ollama-openai-bridge changed no stored key).
PREFIX = "ollama-openai-proxy:tokens:"
REDIS_TIMEOUT = 0.25  # seconds per Redis operation (a check waits at most twice this)
REDIS_REST = 10.0  # seconds Redis is not asked after it failed
RETRY_EVERY = 1.0  # seconds between tries to hand over held counts, once the rest is over
MAX_UNSENT = 10_000  # counts waiting for Redis at most (keys x windows: a few hundred at most)


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
        self._retrier: asyncio.Task[None] | None = None  # start()
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

    def wrap(self, execute: Execute) -> Execute:
        """``execute`` (``Backends.execute``, with the response cache in front if it is on)
        behind the admission: the first POST of a request of a key with a budget is admitted
        (:meth:`admit`, with the prompt estimate of the plan's body) or refused with
        :class:`BudgetExhausted` -- rendered in the route's dialect -- before the backend or
        the cache sees it. The ticket goes in the access record for :class:`BudgetGuard`."""
        accounts = self.accounts

        async def admitted(plan: Plan, owner: Owner, rec: AccessRecord) -> Reply | EventStream:
            # One admission per request: generate's second try on chat is the same request.
            if plan.method == "POST" and rec.ticket is None and rec.caller in accounts:
                rec.ticket = await self.admit(rec.caller, estimate(plan))
            return await execute(plan, owner, rec)

        return admitted

    async def admit(self, caller: str, estimate: int) -> Ticket | None:
        """Admit a request of ``caller`` (``AccessRecord.caller``) and charge ``estimate``
        prompt tokens to its windows at once: a :class:`Ticket` to :meth:`settle` when the
        request is over; None for a caller without a budget. Raises :class:`BudgetExhausted`
        when a window's count (the requests in flight's estimates included) is already at or
        over its limit. Redis failing admits, unchecked and reserving nothing (logged)."""
        account = self.accounts.get(caller)
        if account is None:
            return None
        now = self._clock()
        windows = tuple((unit, *self._window(unit, now)) for unit in UNITS)
        if not account.limits:  # counted, never refused: nothing to reserve
            return Ticket(account, windows, estimate, 0)
        used = await self._reserve(account, windows, estimate)
        if used is None:
            return Ticket(account, windows, estimate, 0)
        refused = self._refusal(account, used, now)
        if refused is not None:
            self._charge(account, windows, -estimate, 0)  # the reservation given back
            raise refused
        return Ticket(account, windows, estimate, estimate)

    async def check(self, caller: str) -> BudgetExhausted | None:
        """The 429 for ``caller`` if it has used its budget of a window, else None: an
        admission that charges nothing. Never raises."""
        try:
            await self.admit(caller, 0)
        except BudgetExhausted as refused:
            return refused
        return None

    def _refusal(
        self, account: Account, used: dict[str, int], now: float
    ) -> BudgetExhausted | None:
        """The refusal when a limited window's count ``used`` (by unit) is at or over it."""
        spent: tuple[Limit, int, float] | None = None
        for limit in account.limits:
            total = used[limit.unit]
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

    async def _reserve(
        self, account: Account, windows: tuple[Window, ...], estimate: int
    ) -> dict[str, int] | None:
        """Add ``estimate`` prompt tokens to each window's count; the counts (prompt +
        completion) by unit *before* that, or None when Redis cannot say (logged). In one
        MULTI/EXEC on Redis (HINCRBY, which answers the new count): of N admissions at once,
        each sees the estimates of those before it, on every replica."""
        if self._redis is None:  # one event loop: nothing runs between the read and the add
            used = {}
            for unit, n, _ in windows:
                kept = self._memory.get((account.counter, unit))
                if kept is None or kept[0] != n:
                    kept = self._memory[(account.counter, unit)] = [n, 0, 0]
                used[unit] = kept[1] + kept[2]
                kept[1] += estimate
            return used
        if time.monotonic() < self._resting_until:
            return None
        try:
            pipe = self._redis.pipeline(transaction=True)
            for unit, n, end in windows:
                name = f"{PREFIX}{account.counter}:{unit}:{n}"
                pipe.hincrby(name, "p", estimate)
                pipe.hget(name, "c")
                pipe.expireat(name, int(end) + 60)
            values = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT * 2)
            _expect(len(values) == 3 * len(windows), f"{len(values)} answers to {len(windows)}")
            used = {
                unit: _int(values[3 * i]) - estimate + _int(values[3 * i + 1])
                for i, (unit, _, _) in enumerate(windows)
            }
        except Exception as exc:  # Redis down, slow or odd: unchecked, loudly
            # A timeout may come after Redis applied the reservation: then the request's
            # estimate stays counted (settled as if nothing was reserved) -- an overcount of
            # one prompt estimate, rather than a correction that could make a count negative.
            self._failed("check", exc)
            return None
        for unit, n, _ in windows:
            for waiting in (self._unsent, self._sending):  # this replica's, not yet in Redis
                kept = waiting.get((account.counter, unit, n))
                if kept is not None:
                    # Only what raises the count: a batch being written may already be in
                    # what Redis just answered (another connection), and a correction down
                    # counted twice would admit past the budget; counted twice up, it only
                    # refuses early, until the write lands.
                    used[unit] += max(kept[0], 0) + max(kept[1], 0)
        self._send()  # Redis answers: what waited for it goes now
        return used

    # --- counting -------------------------------------------------------------------------------

    def settle(self, ticket: Ticket) -> None:
        """Count a request that is over against its key's budget, in the windows it was
        admitted in: what the backend reported, else the estimates (the prompt's, and the
        answer's characters / 4; logged at DEBUG); nothing for a request that got no answer.
        One correction of the reserved estimate. Returns at once: a Redis write runs on its
        own. Never raises (it runs as the request's last step)."""
        try:
            account = ticket.account
            p = c = 0
            if ticket.answered_at_all:
                p = ticket.estimate if ticket.prompt is None else max(ticket.prompt, 0)
                c = tokens(ticket.chars) if ticket.completion is None else max(ticket.completion, 0)
                missing = [
                    kind
                    for kind, n in (("prompt", ticket.prompt), ("completion", ticket.completion))
                    if n is None
                ]
                if missing:
                    log.debug(
                        "token_usage_estimated",
                        key=account.label,
                        prompt_tokens=p,
                        completion_tokens=c,
                        estimated=missing,
                        detail="the backend reported no usage (a stream left or cut before its "
                        "last chunk, or a backend that does not report it): counted as "
                        "characters / 4",
                    )
            if self._metrics is not None and (p or c):
                self._metrics.key_tokens(account.label, p, c)
            self._charge(account, ticket.windows, p - ticket.reserved, c)
        except Exception as exc:  # a bug here must not cost the answer
            log.warning("token_budget_count_failed", error=repr(exc))

    def spend(self, caller: str, prompt: int | None, completion: int | None) -> None:
        """Count tokens against ``caller``'s budget, in every current window, without an
        admission (what :meth:`settle` does for an admitted request). Never raises."""
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
            self._charge(account, tuple((unit, *self._window(unit, now)) for unit in UNITS), p, c)
        except Exception as exc:  # a bug here must not cost the answer
            log.warning("token_budget_count_failed", error=repr(exc))

    def _charge(self, account: Account, windows: tuple[Window, ...], p: int, c: int) -> None:
        """Add ``p`` and ``c`` (``p`` may be negative: an estimate corrected) to ``windows``;
        a window that is over is left alone (nothing reads it any more)."""
        if not p and not c:
            return
        for unit, n, end in windows:
            if self._redis is None:
                kept = self._memory.get((account.counter, unit))
                if kept is None or kept[0] < n:
                    self._memory[(account.counter, unit)] = [n, max(p, 0), c]
                elif kept[0] == n:
                    kept[1] += p
                    kept[2] += c
            else:
                self._add(self._unsent, (account.counter, unit, n), p, c, end)
        if self._redis is not None:
            self._send()

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
        self._send()  # Redis answers: what waited for it goes now
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

    def start(self) -> None:
        """With Redis: retry, every :data:`RETRY_EVERY` s once a rest is over, to write the
        counts held while Redis failed -- without it they would wait for this replica's next
        request, and the other replicas would under-count meanwhile. Call it in the app's
        lifespan (a running event loop); :meth:`close` stops it."""
        if self._redis is not None and self._retrier is None:
            self._retrier = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        while True:
            await asyncio.sleep(max(self._resting_until - time.monotonic(), 0.0) + RETRY_EVERY)
            self._send()  # nothing when nothing waits, or Redis still rests

    async def close(self) -> None:
        """Write what is still waiting (bounded by the timeout), then close the Redis pool."""
        if self._retrier is not None:
            self._retrier.cancel()
            await asyncio.gather(self._retrier, return_exceptions=True)
            self._retrier = None
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


def estimate(plan: Plan) -> int:
    """The prompt estimate of ``plan``'s first body (translate/estimate.prompt_tokens; 1 for
    a body that is not JSON: the backend will refuse it)."""
    body = plan.attempts[0].body if plan.attempts else None
    if not body:
        return 1
    try:
        return prompt_tokens(orjson.loads(body))
    except orjson.JSONDecodeError:
        return 1


class BudgetGuard:
    """The ASGI layer (inside the key check, security.GuardMiddleware, which names the caller)
    that settles each admitted request (:meth:`TokenBudgets.settle`) once its response is over
    -- a stream's too: StreamBody closes the stream's owner, which counts its tokens
    (routes.stream_reply), before it returns -- however it ended: finished, failed, the client
    gone, cancelled. Installed only with budgets (app.py)."""

    def __init__(self, app: ASGIApp, budgets: TokenBudgets) -> None:
        self.app = app
        self.budgets = budgets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            rec: AccessRecord | None = scope.get(SCOPE_KEY)
            if rec is not None and rec.ticket is not None:
                ticket, rec.ticket = rec.ticket, None  # settled once
                self.budgets.settle(ticket)
