"""balance.py: each strategy as a pure function (table-driven: given in-flight counts, weights
or a key -> the choice), outlier detection against a fake clock, and the in-flight hold of a
:class:`Pick`, exactly once, through the request's owner in exchange.execute."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest

from ollama_openai_bridge.balance import (
    Balancer,
    affinity_key,
    least_outstanding,
    rendezvous,
    smooth_weighted,
)
from ollama_openai_bridge.balance_config import (
    AFFINITY,
    LEAST_OUTSTANDING,
    WEIGHTED_ROUND_ROBIN,
    BalanceSpec,
    OutlierSpec,
    ReplicaSpec,
)
from ollama_openai_bridge.errors import UpstreamTimeout, UpstreamUnavailable
from ollama_openai_bridge.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(
    n: int = 3,
    strategy: str = LEAST_OUTSTANDING,
    weights: tuple[int, ...] | None = None,
    outlier: OutlierSpec | None = None,
) -> BalanceSpec:
    ws = weights or (1,) * n
    replicas = tuple(ReplicaSpec(f"http://r{i}:8000/v1", ws[i], f"r{i}") for i in range(n))
    return BalanceSpec(replicas, strategy, outlier or OutlierSpec())


# --- least outstanding ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_flight", "weights", "eligible", "start", "chosen"),
    [
        ([3, 1, 2], [1, 1, 1], [0, 1, 2], 0, 1),  # loads 4, 2, 3: the fewest outstanding
        ([3, 1, 2], [1, 1, 1], [0, 2], 0, 2),  # only among the eligible
        ([0, 0, 0], [1, 1, 1], [0, 1, 2], 0, 0),  # ties: the first from the rotation's start
        ([0, 0, 0], [1, 1, 1], [0, 1, 2], 1, 1),
        ([0, 0, 0], [1, 1, 1], [0, 1, 2], 5, 2),  # the start taken modulo the eligible
        ([2, 1, 0], [3, 1, 1], [0, 1, 2], 0, 0),  # 3/3 ties 1/1: the first in rotation
        ([2, 1, 0], [3, 1, 1], [0, 1, 2], 2, 2),
        ([2, 1, 1], [3, 1, 1], [0, 1, 2], 1, 0),  # 3/3 = 1 beats 2/1: weight counts
        ([5, 1], [4, 1], [0, 1], 0, 0),  # 6/4 = 1.5 < 2/1
        ([7, 1], [4, 1], [0, 1], 1, 1),  # 8/4 = 2 ties 2/1: the rotation decides
        ([8, 1], [4, 1], [0, 1], 0, 1),  # 9/4 > 2/1
        ([7], [1], [0], 3, 0),  # one eligible: that one, whatever its load
    ],
)
def test_least_outstanding(
    in_flight: list[int], weights: list[int], eligible: list[int], start: int, chosen: int
) -> None:
    assert least_outstanding(in_flight, weights, eligible, start) == chosen


def test_least_outstanding_spreads_idle_calls() -> None:
    balancer = Balancer("up", spec(3))
    picks = [balancer.call(None) for _ in range(3)]
    names = [p.take(False).name for p in picks]
    assert sorted(names) == ["r0", "r1", "r2"]  # each held one: the next goes to the idle one
    picks[1].release()
    assert balancer.call(None).take(False).name == names[1]


# --- weighted round robin ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "eligible", "sequence"),
    [
        ([5, 1, 1], [0, 1, 2], [0, 0, 1, 0, 2, 0, 0]),  # nginx's a a b a c a a
        ([1, 1, 1], [0, 1, 2], [0, 1, 2, 0, 1, 2]),
        ([2, 1], [0, 1], [0, 1, 0, 0, 1, 0]),
        ([5, 1, 1], [1, 2], [1, 2, 1, 2]),  # the heavy one ejected: the others alternate
    ],
)
def test_smooth_weighted(weights: list[int], eligible: list[int], sequence: list[int]) -> None:
    current = [0] * len(weights)
    assert [smooth_weighted(current, weights, eligible) for _ in sequence] == sequence


def test_weighted_round_robin_shares() -> None:
    balancer = Balancer("up", spec(3, WEIGHTED_ROUND_ROBIN, (3, 2, 1)))
    counts = Counter(balancer.choose(None).name for _ in range(600))
    assert counts == {"r0": 300, "r1": 200, "r2": 100}


# --- affinity ---------------------------------------------------------------------------------


def body(system: str | None, *users: str, model: str = "m") -> bytes:
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    for i, u in enumerate(users):
        if i:
            messages.append({"role": "assistant", "content": f"answer {i}"})
        messages.append({"role": "user", "content": u})
    return orjson.dumps({"model": model, "messages": messages, "stream": True})


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (body("sys", "hi"), body("sys", "hi", "and then?"), True),  # the conversation goes on
        (body("sys", "hi"), body("sys", "hello"), False),  # another first message
        (body("sys", "hi"), body("other", "hi"), False),  # another system prompt
        (body("sys", "hi"), body("sys", "hi", model="n"), False),  # another model
        (body(None, "hi"), body(None, "hi", "more"), True),
        (
            orjson.dumps({"model": "e", "input": ["a", "b"]}),
            orjson.dumps({"model": "e", "input": ["a", "b"]}),
            True,
        ),
        (
            orjson.dumps({"model": "c", "prompt": "x"}),
            orjson.dumps({"model": "c", "prompt": "y"}),
            False,
        ),
    ],
)
def test_affinity_key(a: bytes, b: bytes, same: bool) -> None:
    ka, kb = affinity_key(a), affinity_key(b)
    assert ka is not None
    assert len(ka) == 16
    assert (ka == kb) is same


@pytest.mark.parametrize("raw", [None, b"", b"not json", b"[1, 2]"])
def test_affinity_key_without_a_conversation(raw: bytes | None) -> None:
    assert affinity_key(raw) is None


IDS = [b"http://r0", b"http://r1", b"http://r2"]


def test_rendezvous_is_stable_and_weighted() -> None:
    keys = [affinity_key(body("s", f"user {i}")) for i in range(3000)]
    assert all(k is not None for k in keys)
    first = [rendezvous(k, IDS, [1, 1, 1], [0, 1, 2]) for k in keys if k]
    assert first == [rendezvous(k, IDS, [1, 1, 1], [0, 1, 2]) for k in keys if k]  # stable
    shares = Counter(first)
    assert all(850 <= shares[i] <= 1150 for i in range(3)), shares  # ~1000 each
    weighted = Counter(rendezvous(k, IDS, [2, 1, 1], [0, 1, 2]) for k in keys if k)
    assert 1350 <= weighted[0] <= 1650, weighted  # ~1500: half the keys for weight 2 of 4


def test_rendezvous_moves_only_the_keys_of_a_replica_removed() -> None:
    keys = [k for i in range(2000) if (k := affinity_key(body("s", f"u{i}"))) is not None]
    before = [rendezvous(k, IDS, [1, 1, 1], [0, 1, 2]) for k in keys]
    after = [rendezvous(k, IDS, [1, 1, 1], [0, 2]) for k in keys]  # r1 ejected
    for b, a in zip(before, after, strict=True):
        if b != 1:
            assert a == b  # nobody else's conversations move
        else:
            assert a in (0, 2)
    assert {a for b, a in zip(before, after, strict=True) if b == 1} == {0, 2}


def test_affinity_balancer_follows_the_conversation_and_its_fallback() -> None:
    clock = Clock()
    balancer = Balancer("up", spec(3, AFFINITY, outlier=OutlierSpec(1, 10, 60, 100)), clock=clock)
    convo = body("be brief", "what is 2+2?")
    home = balancer.call(convo).take(False)
    for later in (body("be brief", "what is 2+2?", "and 3+3?"), convo):
        assert balancer.call(later).take(False) is home
    balancer.failure(home)  # ejected (one failure suffices here)
    moved = balancer.call(convo).take(False)
    assert moved is not home
    clock.now += 10
    assert balancer.call(convo).take(False) is home  # back: its conversations come back too


def test_affinity_without_a_key_balances_by_load() -> None:
    balancer = Balancer("up", spec(2, AFFINITY))
    a, b = balancer.call(b"not json"), balancer.call(None)
    assert {a.take(False).name, b.take(False).name} == {"r0", "r1"}


# --- outlier detection ------------------------------------------------------------------------


def test_ejection_after_consecutive_failures_and_return_on_probation() -> None:
    clock = Clock()
    balancer = Balancer("up", spec(3, outlier=OutlierSpec(3, 30.0, 300.0, 50)), clock=clock)
    r0 = balancer.replicas[0]
    balancer.failure(r0)
    balancer.failure(r0)
    balancer.success(r0)  # a success in between: the run starts over
    balancer.failure(r0)
    balancer.failure(r0)
    assert r0.ejected_until == 0.0
    balancer.failure(r0)
    assert r0.ejected_until == 1030.0  # 30 s x 1st ejection
    assert all(balancer.choose(None) is not r0 for _ in range(20))
    assert balancer.snapshot()[0]["state"] == "ejected"
    assert balancer.snapshot()[0]["ejected_for_s"] == 30.0
    clock.now = 1029.9
    assert all(balancer.choose(None) is not r0 for _ in range(5))
    clock.now = 1030.0
    assert r0 in {balancer.choose(None) for _ in range(6)}  # returned
    assert balancer.snapshot()[0]["state"] == "healthy"
    balancer.failure(r0)  # on probation: one failure ejects it again, for twice as long
    assert r0.ejected_until == 1030.0 + 60.0
    assert r0.ejections == 2


def test_ejection_time_is_capped_and_decays_while_healthy() -> None:
    clock = Clock()
    balancer = Balancer("up", spec(2, outlier=OutlierSpec(1, 100.0, 250.0, 50)), clock=clock)
    r0 = balancer.replicas[0]
    lengths = []
    for _ in range(4):
        balancer.failure(r0)
        lengths.append(r0.ejected_until - clock.now)
        clock.now = r0.ejected_until
        balancer.choose(None)  # returns it
    assert lengths == [100.0, 200.0, 250.0, 250.0]  # base x ejections, capped
    assert r0.ejections == 4
    clock.now += 350.0  # healthy for three base times: the multiplier drops by three
    balancer.failure(r0)
    assert r0.ejections == 2
    assert r0.ejected_until - clock.now == 200.0


def test_max_ejection_percent() -> None:
    clock = Clock()
    balancer = Balancer("up", spec(4, outlier=OutlierSpec(1, 30.0, 300.0, 50)), clock=clock)
    for r in balancer.replicas:
        balancer.failure(r)
    ejected = [r.name for r in balancer.replicas if r.ejected_until > clock.now]
    assert ejected == ["r0", "r1"]  # 50 % of 4
    one = Balancer("up", spec(3, outlier=OutlierSpec(1, 30.0, 300.0, 0)), clock=clock)
    for r in one.replicas:
        one.failure(r)
    assert sum(r.ejected_until > clock.now for r in one.replicas) == 1  # always one may go


def test_no_ejection_when_disabled() -> None:
    balancer = Balancer("up", spec(2, outlier=OutlierSpec(0, 30.0, 300.0, 100)))
    for _ in range(50):
        balancer.failure(balancer.replicas[0])
    assert balancer.replicas[0].ejected_until == 0.0


def test_every_replica_but_the_one_to_avoid_ejected() -> None:
    clock = Clock()
    balancer = Balancer("up", spec(2, outlier=OutlierSpec(1, 30.0, 300.0, 50)), clock=clock)
    r0, r1 = balancer.replicas
    balancer.failure(r1)
    assert balancer.choose(None, avoid=r0) is r1  # a suspect replica rather than none


@pytest.mark.parametrize(
    ("outcome", "fails"),
    [
        (lambda p: p.record(500), True),
        (lambda p: p.record(502), True),
        (lambda p: p.record(503), True),
        (lambda p: p.record(501), False),  # the request's problem (RFC 9110)
        (lambda p: p.record(429), False),  # an answer: busy, not broken
        (lambda p: p.record(404), False),
        (lambda p: p.record(200), False),
        (lambda p: p.record_error(UpstreamTimeout("x")), True),
        (lambda p: p.record_error(UpstreamUnavailable("x")), True),
        (lambda p: p.record_error(TimeoutError()), True),
    ],
)
def test_what_counts_as_a_failure(outcome: Any, fails: bool) -> None:
    balancer = Balancer("up", spec(2, outlier=OutlierSpec(2, 30.0, 300.0, 50)))
    pick = balancer.call(None)
    r = pick.take(False)
    balancer.failure(r)
    outcome(pick)
    assert (r.ejected_until > 0) is fails
    assert r.consecutive == (2 if fails else 0)


def test_a_cancellation_is_no_verdict() -> None:
    balancer = Balancer("up", spec(2, outlier=OutlierSpec(2, 30.0, 300.0, 50)))
    pick = balancer.call(None)
    r = pick.take(False)
    balancer.failure(r)
    pick.record_error(RuntimeError("cancelled"))
    assert r.consecutive == 1


# --- the hold ---------------------------------------------------------------------------------


def test_pick_holds_one_replica_and_releases_it_once() -> None:
    balancer = Balancer("up", spec(3))
    pick = balancer.call(None)
    first = pick.take(False)
    assert [r.in_flight for r in balancer.replicas].count(1) == 1
    second = pick.take(True)  # a retry: moves to another replica
    assert second is not first
    assert first.in_flight == 0
    assert second.in_flight == 1
    pick.release()
    pick.release()  # the owner's, after an early release: nothing more
    assert [r.in_flight for r in balancer.replicas] == [0, 0, 0]
    pick.failure()  # released: outcomes go nowhere
    assert all(r.consecutive == 0 for r in balancer.replicas)


def test_metrics_per_replica() -> None:
    metrics = Metrics()
    clock = Clock()
    balancer = Balancer("gpu", spec(2, outlier=OutlierSpec(1, 30, 300, 50)), metrics, clock)
    pick = balancer.call(None)
    r = pick.take(False)
    pick.record(503)
    text = metrics.exposition().decode()
    assert (
        f'ollama_proxy_replica_requests_in_flight{{replica="{r.name}",upstream="gpu"}} 1.0' in text
    )
    assert f'ollama_proxy_replica_ejected{{replica="{r.name}",upstream="gpu"}} 1.0' in text
    assert (
        f'ollama_proxy_replica_requests_total{{outcome="failure",replica="{r.name}",upstream="gpu"}} 1.0'
        in text
    )
    assert f'ollama_proxy_replica_ejections_total{{replica="{r.name}",upstream="gpu"}} 1.0' in text
    other = "r1" if r.name == "r0" else "r0"
    assert f'ollama_proxy_replica_ejected{{replica="{other}",upstream="gpu"}} 0.0' in text
    pick.release()
    text = metrics.exposition().decode()
    assert (
        f'ollama_proxy_replica_requests_in_flight{{replica="{r.name}",upstream="gpu"}} 0.0' in text
    )


def test_an_ejection_ends_on_time_without_a_call() -> None:
    """On a quiet upstream no call comes to choose again: the return is timed, so the ejected
    gauge (and an alert on it) goes back to 0 when the ejection ends (issue #20's review, L6)."""
    metrics = Metrics()
    balancer = Balancer("up", spec(2, outlier=OutlierSpec(1, 0.05, 1.0, 50)), metrics)
    r0 = balancer.replicas[0]

    def ejected() -> float | None:
        return metrics.registry.get_sample_value(
            "ollama_proxy_replica_ejected", {"upstream": "up", "replica": "r0"}
        )

    async def scenario() -> None:  # the timer needs a running loop, as in the app
        balancer.failure(r0)
        assert ejected() == 1
        assert balancer.snapshot()[0]["state"] == "ejected"
        await asyncio.sleep(0.2)

    asyncio.run(scenario())
    assert ejected() == 0
    assert balancer.snapshot()[0]["state"] == "healthy"
    assert r0.ejected_until == 0.0
