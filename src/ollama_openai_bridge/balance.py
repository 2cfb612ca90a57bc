"""Load balancing across the replicas of one upstream (``base_urls`` in ``UPSTREAMS_FILE``), and
outlier detection: replicas that keep failing are ejected for a while, then tried again.

The strategies are pure functions over plain lists (table-tested in tests/unit/test_balance.py):

* :func:`least_outstanding` -- Envoy's LEAST_REQUEST with an exact minimum rather than the power
  of two choices: the replica with the fewest requests outstanding per unit of weight. A config
  holds a handful of replicas, so looking at all of them costs less than drawing two at random,
  and never picks the busier of two when an idle third exists. Ties rotate, so idle replicas
  share the load (and warm their caches) instead of the first taking every request.
* :func:`smooth_weighted` -- weighted round robin, nginx's "smooth" variant: weights 5:1:1 give
  a a b a c a a rather than a burst of five.
* :func:`rendezvous` -- affinity: highest-random-weight (rendezvous) hashing of the conversation
  prefix (:func:`affinity_key`), weighted, so the same conversation returns to the replica that
  holds its prompt in cache (vLLM's automatic prefix caching, llama.cpp's ``cache_prompt``); when
  that replica is ejected the next in its ranking takes it, and only its conversations move.
  The hash is BLAKE2b, not Python's ``hash`` (salted per process): every worker and every pod
  sends one conversation to the same replica.

One call holds one replica through a :class:`Pick`, taken by the request's owner
(:class:`~ollama_openai_bridge.owner.Owner`) so that the outstanding count is given back exactly
once when the answer has been read, or when a streamed answer ends, however it ends.

Outlier detection is Envoy's consecutive-failure kind (``consecutive_5xx``/
``consecutive_gateway_failure``): a failure is no answer (refused, reset, timed out, including a
stream's first read) or a 5xx other than 501/505 (the request's own problem, RFC 9110); a 4xx is
an answer. ``consecutive_failures`` in a row eject the replica for ``base_ejection_time`` x its
number of ejections (at most ``max_ejection_time``; the count decays by one per
``base_ejection_time`` it then stays healthy); no more than ``max_ejection_percent`` % of the
replicas at once (at least one). When its time is up it takes calls again, on probation: its
first failure ejects it again, for longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import structlog

from ollama_openai_bridge.balance_config import (
    AFFINITY,
    LEAST_OUTSTANDING,
    WEIGHTED_ROUND_ROBIN,
    BalanceSpec,
    ReplicaSpec,
)
from ollama_openai_bridge.errors import UpstreamTimeout, UpstreamUnavailable
from ollama_openai_bridge.resilience import REQUEST_SPECIFIC_5XX

if TYPE_CHECKING:
    from ollama_openai_bridge.metrics import Metrics

log = structlog.get_logger("ollama_openai_bridge.balance")

_SPAN = float(2**64)

# --- the strategies (pure) -------------------------------------------------------------------


def least_outstanding(
    in_flight: Sequence[int], weights: Sequence[int], eligible: Sequence[int], start: int
) -> int:
    """The index of the eligible replica with the fewest outstanding requests per unit of
    weight, ``(in_flight + 1) / weight`` (Envoy's least request with its default
    ``active_request_bias`` of 1); among equals, the first at or after position ``start`` of
    ``eligible`` (taken modulo its length), so that successive calls rotate over ties.
    ``eligible``: indexes into ``in_flight``/``weights``, at least one."""
    n = len(eligible)
    best = eligible[start % n]
    best_load, best_weight = in_flight[best] + 1, weights[best]
    for k in range(1, n):
        i = eligible[(start + k) % n]
        load, weight = in_flight[i] + 1, weights[i]
        if load * best_weight < best_load * weight:  # load/weight < best_load/best_weight
            best, best_load, best_weight = i, load, weight
    return best


def smooth_weighted(current: list[int], weights: Sequence[int], eligible: Sequence[int]) -> int:
    """Smooth weighted round robin (nginx, ngx_http_upstream_get_peer): each eligible replica's
    ``current`` grows by its weight, the largest is chosen and lowered by the eligible weights'
    sum. Over ``sum(weights)`` calls each replica is chosen ``weight`` times, evenly spread.
    Mutates ``current``; returns the index chosen."""
    total = 0
    best = eligible[0]
    for i in eligible:
        current[i] += weights[i]
        total += weights[i]
        if current[i] > current[best]:
            best = i
    current[best] -= total
    return best


def rendezvous(
    key: bytes, ids: Sequence[bytes], weights: Sequence[int], eligible: Sequence[int]
) -> int:
    """Weighted rendezvous (highest random weight) hashing: the eligible replica whose score
    ``-weight / ln(u)`` is highest, ``u`` in (0, 1) from BLAKE2b of ``key`` and the replica's
    ``ids`` entry. Each replica wins a share of keys proportional to its weight; removing one
    moves only its own keys (each to its next-ranked replica)."""
    best, top = eligible[0], -math.inf
    for i in eligible:
        h = int.from_bytes(blake2b(key + ids[i], digest_size=8).digest(), "big")
        score = -weights[i] / math.log((h + 0.5) / _SPAN)
        if score > top:
            best, top = i, score
    return best


def affinity_key(body: bytes | None) -> bytes | None:
    """What makes two requests "the same conversation" for affinity: the model, the first
    system (or developer) message and the first user message of an OpenAI chat body -- the
    prefix a backend's prompt cache holds -- or the ``prompt``/``input`` of a completion or
    embedding. A 16-byte digest, or None when the body is not a JSON object (the call is then
    balanced by least outstanding)."""
    if not body:
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    messages = payload.get("messages")
    parts: list[Any] = [payload.get("model")]
    if isinstance(messages, list):
        system = user = None
        for m in messages:
            if not isinstance(m, dict):
                continue
            role = m.get("role")
            if system is None and role in ("system", "developer"):
                system = m.get("content")
            elif user is None and role == "user":
                user = m.get("content")
                break  # the system prompt comes before the first user message
        parts += [system, user]
    else:
        parts.append(payload.get("prompt", payload.get("input")))
    return blake2b(orjson.dumps(parts), digest_size=16).digest()


# --- the state -------------------------------------------------------------------------------


class Replica:
    """One base URL of a balanced upstream and what the balancer knows of it."""

    __slots__ = (
        "base",
        "consecutive",
        "ejected_until",
        "ejections",
        "host",
        "ident",
        "in_flight",
        "name",
        "returned_at",
        "url",
        "weight",
    )

    def __init__(self, spec: ReplicaSpec) -> None:
        self.url = spec.url
        self.name = spec.name
        self.weight = spec.weight
        self.ident = spec.url.encode()  # the rendezvous id: stable across restarts and workers
        parts = urlsplit(spec.url)
        self.host = parts.netloc  # for error messages, as Upstream's
        # (prefix, query), as Upstream's: a query in the base URL goes after each request's path
        self.base = (
            urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", "")),
            "?" + parts.query if parts.query else "",
        )
        self.in_flight = 0  # calls holding it (a stream until it ends)
        self.consecutive = 0  # failures in a row
        self.ejected_until = 0.0  # clock time; 0: not ejected
        self.ejections = 0  # the multiplier of the ejection time
        self.returned_at = 0.0  # when its last ejection ended


class Balancer:
    """The replicas of the upstream ``upstream`` (``spec``), the choice of one per call
    (:meth:`call` gives a :class:`Pick`), and their outlier detection. ``clock``: seconds,
    monotonic (a fake one in tests). ``metrics``: per-replica series, labelled by the
    configured names only."""

    def __init__(
        self,
        upstream: str,
        spec: BalanceSpec,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.strategy = spec.strategy
        self.outlier = spec.outlier
        self.replicas = tuple(Replica(r) for r in spec.replicas)
        self.metrics = metrics
        self._clock = clock
        self._weights = [r.weight for r in self.replicas]
        self._ids = [r.ident for r in self.replicas]
        self._current = [0] * len(self.replicas)  # smooth weighted round robin's state
        self._turn = 0  # least outstanding's rotation over ties
        percent = spec.outlier.max_ejection_percent
        self.max_ejected = max(1, len(self.replicas) * percent // 100)
        self.spare = len(self.replicas) - 1  # other replicas a failed attempt may move to
        log.info(
            "balancer",
            upstream=upstream,
            strategy=self.strategy,
            replicas={r.name: r.weight for r in self.replicas},  # names and weights, no URLs
            consecutive_failures=spec.outlier.consecutive_failures,
            base_ejection_time_s=spec.outlier.base_ejection_time,
            max_ejected=self.max_ejected,
        )
        if metrics is not None:
            for r in self.replicas:
                metrics.replica_in_flight(upstream, r.name, 0)
                metrics.replica_ejected(upstream, r.name, False)

    def call(self, body: bytes | None) -> Pick:
        """A new call's hold on a replica (none yet: :meth:`Pick.take` chooses). ``body``: the
        request sent, read only by the affinity strategy."""
        return Pick(self, body if self.strategy == AFFINITY else None)

    def choose(self, key: bytes | None, avoid: Replica | None = None) -> Replica:
        """The replica for a call (``key``: its :func:`affinity_key`), among those not ejected,
        other than ``avoid`` (the one a retry comes from) while another can be had."""
        now = self._clock()
        eligible = []
        for i, r in enumerate(self.replicas):
            if r.ejected_until:
                if now < r.ejected_until:
                    continue
                self._return(r, now)
            if r is not avoid:
                eligible.append(i)
        if not eligible:  # every other one ejected: better a suspect replica than none
            eligible = [i for i, r in enumerate(self.replicas) if r is not avoid] or [0]
        if self.strategy == WEIGHTED_ROUND_ROBIN:
            i = smooth_weighted(self._current, self._weights, eligible)
        elif self.strategy == AFFINITY and key is not None:
            i = rendezvous(key, self._ids, self._weights, eligible)
        else:  # LEAST_OUTSTANDING, or affinity without a key
            self._turn += 1
            in_flight = [r.in_flight for r in self.replicas]
            i = least_outstanding(in_flight, self._weights, eligible, self._turn)
        return self.replicas[i]

    # --- outlier detection --------------------------------------------------------------------

    def success(self, r: Replica) -> None:
        """A call answered by ``r`` (any status but a sick 5xx)."""
        r.consecutive = 0
        if self.metrics is not None:
            self.metrics.replica_outcome(self.upstream, r.name, "success")

    def failure(self, r: Replica) -> None:
        """A call to ``r`` got no answer, or a sick 5xx: ejected after enough in a row."""
        r.consecutive += 1
        if self.metrics is not None:
            self.metrics.replica_outcome(self.upstream, r.name, "failure")
        threshold = self.outlier.consecutive_failures
        if not threshold or r.consecutive < threshold:
            return
        now = self._clock()
        if r.ejected_until > now:
            return  # calls sent before it was ejected, failing now
        ejected = sum(1 for o in self.replicas if o.ejected_until > now)
        if ejected >= self.max_ejected:
            log.warning(
                "replica_not_ejected",
                upstream=self.upstream,
                replica=r.name,
                consecutive_failures=r.consecutive,
                reason=f"{ejected} of {len(self.replicas)} already ejected "
                f"(max_ejection_percent {self.outlier.max_ejection_percent})",
            )
            return
        base = self.outlier.base_ejection_time
        if r.returned_at:  # healthy since its last return: the multiplier decays (Envoy)
            r.ejections = max(0, r.ejections - int((now - r.returned_at) // base))
        r.ejections += 1
        seconds = min(base * r.ejections, self.outlier.max_ejection_time)
        r.ejected_until = now + seconds
        log.warning(
            "replica_ejected",
            upstream=self.upstream,
            replica=r.name,
            consecutive_failures=r.consecutive,
            ejections=r.ejections,
            for_s=seconds,
        )
        if self.metrics is not None:
            self.metrics.replica_ejected(self.upstream, r.name, True)
        # Back when the time is up even if no call comes to choose again: else the ejected
        # gauge (and an alert on it) stays at 1 on a quiet upstream (issue #20's review, L6).
        with contextlib.suppress(RuntimeError):  # no running loop: a test's fake clock
            until = r.ejected_until
            asyncio.get_running_loop().call_later(seconds, self._expire, r, until)

    def _expire(self, r: Replica, until: float) -> None:
        """The timer of the ejection that lasts until ``until``: returns ``r`` unless a call
        already did (or a later ejection replaced this one)."""
        if r.ejected_until == until:
            self._return(r, self._clock())

    def _return(self, r: Replica, now: float) -> None:
        # Back in service on probation: one more failure ejects it again (Envoy has no half-open
        # state of its own; this is the circuit breaker's, per replica).
        r.ejected_until = 0.0
        r.returned_at = now
        r.consecutive = max(0, self.outlier.consecutive_failures - 1)
        log.info("replica_returned", upstream=self.upstream, replica=r.name)
        if self.metrics is not None:
            self.metrics.replica_ejected(self.upstream, r.name, False)

    def snapshot(self) -> list[dict[str, Any]]:
        """Each replica's state for ``/ready``: name, weight, in_flight, state (healthy or
        ejected), and when ejected, until when (UTC, ISO 8601) and for how many seconds more."""
        now, wall = self._clock(), time.time()
        out = []
        for r in self.replicas:
            entry: dict[str, Any] = {
                "replica": r.name,
                "weight": r.weight,
                "in_flight": r.in_flight,
                "consecutive_failures": r.consecutive,
                "ejections": r.ejections,
            }
            if r.ejected_until > now:
                left = r.ejected_until - now
                until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall + left))
                entry.update(state="ejected", ejected_until=until, ejected_for_s=round(left, 1))
            else:
                entry["state"] = "healthy"
            out.append(entry)
        return out


class Pick:
    """One call's hold on a replica: :meth:`take` chooses one (and moves off the previous one on
    a retry), :meth:`release` gives it back; outcomes go to the replica held. Owned by the
    request's owner (exchange.execute registers :meth:`release`), which releases it once --
    release is idempotent, so an earlier release (a fallback to the next upstream) is safe."""

    __slots__ = ("_balancer", "_body", "_key", "replica")

    def __init__(self, balancer: Balancer, body: bytes | None) -> None:
        self._balancer = balancer
        self._body = body
        self._key: bytes | None = None
        self.replica: Replica | None = None

    @property
    def spare(self) -> int:
        """Retries a call may make on other replicas beyond MAX_RETRIES."""
        return self._balancer.spare

    def take(self, retry: bool) -> Replica:
        """Hold a replica for the next attempt: on a ``retry``, another than the last."""
        balancer = self._balancer
        previous = self.replica
        if previous is not None:
            self._drop(previous)
        if self._body is not None and self._key is None:
            self._key = affinity_key(self._body)
            self._body = None
        r = balancer.choose(self._key, previous if retry else None)
        r.in_flight += 1
        self.replica = r
        if balancer.metrics is not None:
            balancer.metrics.replica_in_flight(balancer.upstream, r.name, 1)
        return r

    def release(self) -> None:
        """Give the replica back (once; later calls do nothing)."""
        r = self.replica
        if r is not None:
            self.replica = None
            self._drop(r)

    def _drop(self, r: Replica) -> None:
        r.in_flight -= 1
        balancer = self._balancer
        if balancer.metrics is not None:
            balancer.metrics.replica_in_flight(balancer.upstream, r.name, -1)

    def success(self) -> None:
        """The replica held answered."""
        if self.replica is not None:
            self._balancer.success(self.replica)

    def failure(self) -> None:
        """The replica held got no answer, or answered a sick 5xx."""
        if self.replica is not None:
            self._balancer.failure(self.replica)

    def record(self, status: int) -> None:
        """The replica held answered ``status``: a 5xx but 501/505 is a failure."""
        if status >= 500 and status not in REQUEST_SPECIFIC_5XX:
            self.failure()
        else:
            self.success()

    def record_error(self, exc: BaseException) -> None:
        """An answer that began but broke off with ``exc``: nothing more in time, or the
        connection lost, is a failure; anything else (a cancellation) no verdict."""
        if isinstance(exc, UpstreamUnavailable | UpstreamTimeout | TimeoutError):
            self.failure()


# For typing in the modules that hook in: a strategy name is one of these.
__all__ = [
    "AFFINITY",
    "LEAST_OUTSTANDING",
    "WEIGHTED_ROUND_ROBIN",
    "Balancer",
    "Pick",
    "Replica",
    "affinity_key",
    "least_outstanding",
    "rendezvous",
    "smooth_weighted",
]
