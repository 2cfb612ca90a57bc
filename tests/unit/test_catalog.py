"""The cached model list (an injected clock and a scripted stand-in for the upstream client) and
the recently used models of ``/api/ps``."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import pytest
from structlog.testing import capture_logs

from ollama_openai_bridge import catalog as catalog_module
from ollama_openai_bridge.catalog import RETRY_FAILED_LIST, Catalog, RecentModels
from ollama_openai_bridge.errors import UpstreamTimeout, UpstreamUnavailable
from ollama_openai_bridge.profiles import PROFILES
from ollama_openai_bridge.upstream import Upstream

T = TypeVar("T")

TTL = 60.0
FIRST = {"object": "list", "data": [{"id": "llama3", "object": "model"}, {"id": "qwen"}]}
SECOND = {"object": "list", "data": [{"id": "mistral"}]}


class Clock:
    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedUpstream:
    """Answers ``json("GET", "/models")`` with the next scripted outcome (a body, or an exception
    to raise); the last one repeats. ``gate``, when set, holds every fetch until it opens."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None

    async def json(self, method: str, path: str) -> Any:
        self.calls.append((method, path))
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def make(*outcomes: Any, ttl: float = TTL) -> tuple[Catalog, ScriptedUpstream, Clock]:
    upstream, clock = ScriptedUpstream(*outcomes), Clock()
    return Catalog(cast(Upstream, upstream), ttl, clock=clock), upstream, clock


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# --- Catalog --------------------------------------------------------------------------------


def test_nothing_known_before_the_first_listing() -> None:
    catalog, upstream, _ = make(FIRST)
    assert catalog.known_ids is None
    assert list(catalog.ids_in_order()) == []
    assert catalog.entry("llama3") is None
    assert catalog.version == 0
    assert upstream.calls == []  # nothing fetched on construction


def test_a_listing_is_what_the_backend_published() -> None:
    catalog, upstream, _ = make(FIRST)
    assert run(catalog.models()) is FIRST
    assert upstream.calls == [("GET", "/models")]
    assert catalog.known_ids == frozenset({"llama3", "qwen"})
    assert list(catalog.ids_in_order()) == ["llama3", "qwen"]
    assert catalog.entry("llama3") == {"id": "llama3", "object": "model"}
    assert catalog.entry("missing") is None
    assert catalog.version == 1


def test_entries_without_a_string_id_are_listed_but_not_known() -> None:
    body = {"data": [{"id": "ok"}, {"id": 7}, "text", {"name": "no id"}, None]}
    catalog, _, _ = make(body)
    assert run(catalog.models()) is body
    assert catalog.known_ids == frozenset({"ok"})


def test_output_limits_are_read_once_per_listing() -> None:
    body = {
        "data": [
            {"id": "llama-3.3-70b-versatile", "max_completion_tokens": 32768},  # Groq
            {"id": "openai/gpt-4o", "top_provider": {"max_completion_tokens": 16384}},  # OpenRouter
            {"id": "gpt-4o"},  # OpenAI: ids only
        ]
    }
    catalog, _, _ = make(body, SECOND)
    run(catalog.models())
    assert catalog.output_limit("llama-3.3-70b-versatile") == 32768
    assert catalog.output_limit("openai/gpt-4o") == 16384
    assert catalog.output_limit("gpt-4o") is None
    assert catalog.output_limit("missing") is None


class LiteLLMUpstream(ScriptedUpstream):
    """LiteLLM's proxy: ids on /models, each deployment's model_info on /model/info."""

    profile = PROFILES["litellm"]

    def __init__(self, info: Any) -> None:
        super().__init__(FIRST)
        self.info = info

    async def json(self, method: str, path: str) -> Any:
        if path != "/model/info":
            return await super().json(method, path)
        self.calls.append((method, path))
        if isinstance(self.info, BaseException):
            raise self.info
        return self.info


def test_litellms_model_info_gives_the_output_limits() -> None:
    # Two deployments of one model name: the smaller limit holds, since either may answer.
    # model_info's max_tokens is "legacy" (the input limit when no output limit is known):
    # not read.
    info = {
        "data": [
            {"model_name": "llama3", "model_info": {"max_output_tokens": 8192}},
            {"model_name": "llama3", "model_info": {"max_output_tokens": 4096}},
            {"model_name": "qwen", "model_info": {"max_tokens": 32768, "max_output_tokens": None}},
            {"model_name": "other", "model_info": "x"},
            "junk",
        ]
    }
    upstream = LiteLLMUpstream(info)
    catalog = Catalog(cast(Upstream, upstream), TTL, clock=Clock())
    assert run(catalog.models()) is FIRST  # the listing itself is as the backend gave it
    assert upstream.calls == [("GET", "/models"), ("GET", "/model/info")]
    assert catalog.output_limit("llama3") == 4096
    assert catalog.output_limit("qwen") is None
    assert catalog.entry("llama3") == {"id": "llama3", "object": "model"}


def test_litellm_without_model_info_still_lists() -> None:
    upstream = LiteLLMUpstream(UpstreamUnavailable("nope"))
    catalog = Catalog(cast(Upstream, upstream), TTL, clock=Clock())
    with capture_logs() as logs:
        assert run(catalog.models()) is FIRST
    assert catalog.known_ids == frozenset({"llama3", "qwen"})
    assert catalog.output_limit("llama3") is None
    assert [e["event"] for e in logs] == ["litellm_model_info_unavailable"]


def test_cached_within_ttl_and_refreshed_after() -> None:
    catalog, upstream, clock = make(FIRST, SECOND)

    async def scenario() -> None:
        assert await catalog.models() is FIRST
        clock.advance(TTL - 0.001)
        assert await catalog.models() is FIRST
        assert len(upstream.calls) == 1
        clock.advance(0.001)  # expiry is exclusive: at ttl exactly, it is stale
        assert await catalog.models() is SECOND
        assert len(upstream.calls) == 2
        assert catalog.known_ids == frozenset({"mistral"})
        assert catalog.version == 2
        assert await catalog.models() is SECOND  # and the new list is cached in turn
        assert len(upstream.calls) == 2

    run(scenario())


def test_concurrent_callers_share_one_fetch() -> None:
    catalog, upstream, clock = make(FIRST, SECOND)

    async def scenario() -> None:
        upstream.gate = asyncio.Event()
        callers = [asyncio.create_task(catalog.models()) for _ in range(5)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(upstream.calls) == 1
        upstream.gate.set()
        results = await asyncio.gather(*callers)
        assert all(r is FIRST for r in results)
        assert catalog.version == 1
        # the shared fetch is over: the next expiry starts a new one
        clock.advance(TTL)
        results = await asyncio.gather(*(catalog.models() for _ in range(3)))
        assert all(r is SECOND for r in results)
        assert len(upstream.calls) == 2
        assert catalog.version == 2

    run(scenario())


def test_concurrent_callers_share_one_failure() -> None:
    error = UpstreamUnavailable("down")
    catalog, upstream, _ = make(error)

    async def scenario() -> None:
        upstream.gate = asyncio.Event()
        callers = [asyncio.create_task(catalog.models()) for _ in range(4)]
        for _ in range(5):
            await asyncio.sleep(0)
        upstream.gate.set()
        results = await asyncio.gather(*callers, return_exceptions=True)
        assert all(r is error for r in results)
        assert len(upstream.calls) == 1

    run(scenario())


@pytest.mark.parametrize(("ttl", "retry"), [(TTL, RETRY_FAILED_LIST), (2.0, 2.0)])
def test_a_failed_refresh_serves_the_older_list(ttl: float, retry: float) -> None:
    catalog, upstream, clock = make(FIRST, UpstreamTimeout("slow"), SECOND, ttl=ttl)

    async def scenario() -> None:
        assert await catalog.models() is FIRST
        clock.advance(ttl)
        with capture_logs() as logs:
            assert await catalog.models() is FIRST  # the refresh failed: the older list
        assert logs == [
            {
                "event": "models_refresh_failed_serving_cached",
                "error": "slow",
                "log_level": "warning",
            }
        ]
        assert len(upstream.calls) == 2
        assert catalog.version == 1
        assert catalog.known_ids == frozenset({"llama3", "qwen"})
        # retried after min(ttl, RETRY_FAILED_LIST), not on every call
        clock.advance(retry - 0.001)
        assert await catalog.models() is FIRST
        assert len(upstream.calls) == 2
        clock.advance(0.001)
        assert await catalog.models() is SECOND
        assert len(upstream.calls) == 3
        assert catalog.version == 2

    run(scenario())


def test_a_failed_first_listing_raises_and_is_remembered() -> None:
    error = UpstreamUnavailable("cannot connect")
    catalog, upstream, clock = make(error, FIRST)

    async def scenario() -> None:
        with pytest.raises(UpstreamUnavailable) as info:
            await catalog.models()
        assert info.value is error
        assert catalog.known_ids is None
        assert catalog.version == 0
        # within the window: the same failure, without asking the backend again
        clock.advance(RETRY_FAILED_LIST - 0.001)
        with pytest.raises(UpstreamUnavailable) as info:
            await catalog.models()
        assert info.value is error
        assert len(upstream.calls) == 1
        # after it: a new fetch
        clock.advance(0.001)
        assert await catalog.models() is FIRST
        assert len(upstream.calls) == 2
        assert catalog.version == 1

    run(scenario())


def test_a_failed_first_listing_is_retried_after_the_window_when_it_fails_again() -> None:
    catalog, upstream, clock = make(UpstreamTimeout("1"), UpstreamTimeout("2"), FIRST)

    async def scenario() -> None:
        with pytest.raises(UpstreamTimeout, match="1"):
            await catalog.models()
        clock.advance(RETRY_FAILED_LIST)
        with pytest.raises(UpstreamTimeout, match="2"):
            await catalog.models()
        clock.advance(RETRY_FAILED_LIST - 0.001)
        with pytest.raises(UpstreamTimeout, match="2"):  # a fresh window for the new failure
            await catalog.models()
        assert len(upstream.calls) == 2
        clock.advance(0.001)
        assert await catalog.models() is FIRST

    run(scenario())


def test_a_short_ttl_shortens_the_failure_window() -> None:
    catalog, upstream, clock = make(UpstreamTimeout("x"), FIRST, ttl=1.0)

    async def scenario() -> None:
        with pytest.raises(UpstreamTimeout):
            await catalog.models()
        clock.advance(0.999)
        with pytest.raises(UpstreamTimeout):
            await catalog.models()
        clock.advance(0.001)
        assert await catalog.models() is FIRST
        assert len(upstream.calls) == 2

    run(scenario())


def test_the_failure_window_is_the_module_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module, "RETRY_FAILED_LIST", 0.5)
    catalog, upstream, clock = make(UpstreamTimeout("x"), FIRST)

    async def scenario() -> None:
        with pytest.raises(UpstreamTimeout):
            await catalog.models()
        clock.advance(0.5)
        assert await catalog.models() is FIRST
        assert len(upstream.calls) == 2

    run(scenario())


def test_version_bumps_per_successful_listing_only() -> None:
    catalog, _, clock = make(FIRST, UpstreamUnavailable("x"), FIRST, SECOND)

    async def scenario() -> list[int]:
        versions = []
        for _ in range(4):
            await catalog.models()
            versions.append(catalog.version)
            clock.advance(TTL)
        return versions

    # an unchanged list is still a new listing
    assert run(scenario()) == [1, 1, 2, 3]


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "models",
        {},
        {"object": "list"},
        {"data": None},
        {"data": {"id": "a"}},
    ],
)
def test_a_body_without_a_data_list_is_an_empty_list(body: Any) -> None:
    catalog, _, _ = make(body)
    assert run(catalog.models()) == {"object": "list", "data": []}
    assert catalog.known_ids == frozenset()  # known to be empty, not unknown
    assert catalog.version == 1


def test_a_fetch_whose_callers_all_left_is_not_reused_after_expiry() -> None:
    catalog, upstream, clock = make(FIRST, SECOND)

    async def scenario() -> None:
        upstream.gate = asyncio.Event()
        caller = asyncio.create_task(catalog.models())
        await asyncio.sleep(0)
        caller.cancel()  # e.g. the client disconnected
        await asyncio.sleep(0)
        upstream.gate.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert catalog.version == 1  # the shielded fetch completed and was stored
        clock.advance(TTL)
        assert await catalog.models() is SECOND
        assert len(upstream.calls) == 2

    run(scenario())


# --- RecentModels ---------------------------------------------------------------------------

S = 1_000_000_000  # nanoseconds per second


class NsClock:
    def __init__(self, now: int = 1_700_000_000 * S) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_recent_models_start_empty() -> None:
    assert RecentModels(clock=NsClock()).active() == []


def test_touch_records_an_expiry_keep_alive_from_now() -> None:
    clock = NsClock()
    recent = RecentModels(clock=clock)
    recent.touch("llama3", 300)
    recent.touch("qwen", 0.5)
    assert recent.active() == [("llama3", clock.now + 300 * S), ("qwen", clock.now + S // 2)]


def test_keep_alive_zero_removes_the_model() -> None:
    recent = RecentModels(clock=NsClock())
    recent.touch("llama3", 300)
    recent.touch("llama3", 0)
    assert recent.active() == []
    recent.touch("never-seen", 0)  # nothing to remove: no error, nothing added
    assert recent.active() == []


def test_negative_keep_alive_means_far_future() -> None:
    clock = NsClock()
    recent = RecentModels(clock=clock)
    recent.touch("forever", -1)
    recent.touch("also", -300)
    expiries = dict(recent.active())
    ten_years = 10 * 365 * 86400 * S
    assert expiries == {"forever": clock.now + ten_years, "also": clock.now + ten_years}
    clock.now += 9 * 365 * 86400 * S
    assert [name for name, _ in recent.active()] == ["forever", "also"]


def test_expired_models_drop_out_at_their_expiry() -> None:
    clock = NsClock()
    recent = RecentModels(clock=clock)
    recent.touch("short", 10)
    recent.touch("long", 20)
    clock.now += 10 * S - 1
    assert [n for n, _ in recent.active()] == ["long", "short"]
    clock.now += 1  # at the expiry itself it is gone
    assert [n for n, _ in recent.active()] == ["long"]
    clock.now += 10 * S
    assert recent.active() == []


def test_longest_lived_first_and_a_touch_moves_a_model() -> None:
    clock = NsClock()
    recent = RecentModels(clock=clock)
    recent.touch("a", 100)
    recent.touch("b", 300)
    recent.touch("c", 200)
    assert [n for n, _ in recent.active()] == ["b", "c", "a"]
    clock.now += 50 * S
    recent.touch("a", 400)  # used again: its expiry moves
    assert recent.active() == [
        ("a", clock.now + 400 * S),
        ("b", clock.now + 250 * S),
        ("c", clock.now + 150 * S),
    ]
    recent.touch("b", 0)
    assert [n for n, _ in recent.active()] == ["a", "c"]


def test_a_failed_first_listing_is_remembered_even_with_no_cache() -> None:
    # MODELS_CACHE_TTL=0 caches lists for no time, but requests that resolve names must still
    # not each wait for a backend whose /v1/models is down; the same error is raised each time
    # without its traceback growing.
    catalog, upstream, clock = make(UpstreamUnavailable("down"), ttl=0)
    errors = []
    for _ in range(50):
        with pytest.raises(UpstreamUnavailable) as info:
            run(catalog.models())
        errors.append(info.value)
    assert len(upstream.calls) == 1
    depth = 0
    tb = errors[-1].__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    assert depth < 10
    clock.advance(RETRY_FAILED_LIST)
    with pytest.raises(UpstreamUnavailable):
        run(catalog.models())
    assert len(upstream.calls) == 2


def test_recent_models_are_bounded_and_expiries_clamped() -> None:
    clock = NsClock()
    recent = RecentModels(clock=clock, max_entries=3)
    for i, keep in enumerate((50, 10, 30)):
        recent.touch(f"m{i}", keep)
    recent.touch("new", 20)  # over the bound: the one expiring first (m1) is forgotten
    assert [n for n, _ in recent.active()] == ["m0", "m2", "new"]
    recent.touch("huge", 1e300)  # no OverflowError, and a date any client can parse
    expires = dict(recent.active())["huge"]
    assert expires - clock.now == 10 * 365 * 86400 * S


@pytest.mark.parametrize(
    ("body", "ids"),
    [
        ({"object": "list", "data": [{"id": "a"}]}, ["a"]),
        ([{"id": "a"}, {"id": "b"}], ["a", "b"]),  # a bare array
        ({"models": [{"name": "qwen3:8b", "model": "qwen3:8b"}]}, ["qwen3:8b"]),
        ({"unexpected": True}, []),
    ],
)
def test_model_lists_in_the_shapes_backends_answer(body: Any, ids: list[str]) -> None:
    from ollama_openai_bridge.catalog import _model_list

    assert [m.get("id") for m in _model_list(body)["data"]] == ids
