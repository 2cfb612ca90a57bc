"""Routing decisions without a network: which upstream and model id, in which order."""

from __future__ import annotations

import pytest

from ollama_openai_bridge.backends import Backends
from ollama_openai_bridge.errors import (
    BreakerOpen,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ollama_openai_bridge.exchange import may_fall_back
from ollama_openai_bridge.model_map import ModelMap, ModelMeta
from ollama_openai_bridge.policy import Policy
from ollama_openai_bridge.topology import Topology, UpstreamSpec
from tests.servers import settings_for

TOPOLOGY = Topology(
    (
        UpstreamSpec("openai", "http://a/v1", models=("gpt-*",)),
        UpstreamSpec("local", "http://b/v1", extra_params=("top_k",)),
        UpstreamSpec("spare", "http://c/v1"),
    ),
    aliases={"llama3": ("local", "meta-llama/Llama-3.1-8B")},
    fallbacks={"gpt-4o": ("spare", "openai"), "llama3": ("local", "spare")},
    from_file=True,
)


def backends(model_map: ModelMap | None = None) -> Backends:
    return Backends(TOPOLOGY, settings_for("http://x/v1"), model_map or ModelMap(), Policy())


def plan(b: Backends, name: str) -> list[tuple[str, str]]:
    return [(r.upstream.name, r.model) for r in b.routes(name)]


def test_before_any_list_globs_decide() -> None:
    b = backends()
    assert plan(b, "gpt-4o-mini") == [("openai", "gpt-4o-mini")]
    assert plan(b, "qwen3:8b") == [("local", "qwen3:8b")]  # first without globs
    assert plan(b, "qwen3:latest") == [("local", "qwen3")]  # the default tag dropped


def test_the_upstream_that_lists_the_model_wins() -> None:
    b = backends()
    b.catalogs["spare"]._entries = {"qwen3:8b": {"id": "qwen3:8b"}}
    b.catalogs["spare"]._ids = frozenset({"qwen3:8b"})
    b.catalogs["spare"]._body = {"data": []}
    b.catalogs["spare"].version += 1
    assert plan(b, "qwen3:8b") == [("spare", "qwen3:8b")]
    assert b.known_ids == frozenset({"qwen3:8b", "llama3"})


def test_alias_explicit_and_fallback_chains() -> None:
    b = backends()
    assert plan(b, "llama3") == [
        ("local", "meta-llama/Llama-3.1-8B"),
        ("spare", "meta-llama/Llama-3.1-8B"),
    ]
    assert plan(b, "llama3:latest")[0] == ("local", "meta-llama/Llama-3.1-8B")
    assert plan(b, "spare:gpt-4o") == [("spare", "gpt-4o")]  # explicit: no chain
    # a chain is the order, whatever the globs say
    assert plan(b, "gpt-4o") == [("spare", "gpt-4o"), ("openai", "gpt-4o")]
    # a model-map alias resolves before routing
    mapped = backends(ModelMap({"fast": ModelMeta("gpt-4o")}))
    assert plan(mapped, "fast") == [("spare", "gpt-4o"), ("openai", "gpt-4o")]


def test_extra_params_extend_the_policy_of_their_upstream_only() -> None:
    b = backends()
    assert b.routes("qwen3:8b")[0].policy.passthrough == {"top_k": "top_k"}
    assert b.routes("gpt-4o")[0].policy.passthrough == {}


def test_single_upstream_routes_everything_to_it() -> None:
    single = Backends(
        Topology((UpstreamSpec("default", "http://x/v1"),)),
        settings_for("http://x/v1"),
        ModelMap(),
        Policy(),
    )
    assert [(r.upstream.name, r.model) for r in single.routes("default:thing")] == [
        ("default", "default:thing")  # no explicit addressing without UPSTREAMS_FILE
    ]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (UpstreamUnavailable("refused"), True),
        (UpstreamTimeout("slow"), True),
        (BreakerOpen("open"), True),
        (UpstreamStatusError("boom", 500, 502), True),
        (UpstreamStatusError("busy", 429, 429), True),
        (UpstreamStatusError("bad", 400, 400), False),
        (UpstreamStatusError("no model", 404, 404), False),
        (UpstreamProtocolError("garbage"), False),
    ],
)
def test_which_failures_fall_back(error: Exception, expected: bool) -> None:
    assert may_fall_back(error) is expected
