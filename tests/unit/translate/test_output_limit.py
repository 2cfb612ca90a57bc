"""An output-token request above the model's limit is lowered to it in the plan (issue #17):
every translated route's own field (``/api/chat`` and ``/api/generate`` ``num_predict``,
``/v1/messages`` ``max_tokens``, ``/v1/responses`` ``max_output_tokens``), through the real
schema and translator, shaped for the backend as the route does it. Golden rows, one rule each."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ollama_openai_bridge.model_map import published_output
from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.profiles import PROFILES
from ollama_openai_bridge.schemas import (
    CHAT,
    GENERATE,
    MESSAGES,
    RESPONSES,
    MessagesRequest,
    ResponsesRequest,
    parse,
)
from ollama_openai_bridge.translate import anthropic, responses
from ollama_openai_bridge.translate.chat import (
    EMBEDDINGS_PATH,
    UpstreamRequest,
    chat_request,
    completion_request,
    for_backend,
    generate_request,
)


def messages_body(body: dict[str, Any]) -> MessagesRequest:
    """A Messages request as the route reads it."""
    req: MessagesRequest = parse(MESSAGES, orjson.dumps(body))
    return req


def responses_body(body: dict[str, Any]) -> ResponsesRequest:
    """A Responses request as the route reads it."""
    req: ResponsesRequest = parse(RESPONSES, orjson.dumps(body))
    return req


HI = [{"role": "user", "content": "hi"}]
LISTED = "the backend's model list"


def target(
    model: str = "m", profile: str = "openai-reference", limit: int | None = 16384
) -> Target:
    known = (limit, LISTED) if limit is not None else None
    return Target.of(model, PROFILES[profile], max_output=known)


def policy(profile: str = "openai-reference", **fields: Any) -> Policy:
    p = PROFILES[profile]
    return Policy(profile=p, passthrough=dict(p.options), **fields)


def ollama_chat(n: int, t: Target, pol: Policy) -> UpstreamRequest:
    req = CHAT.validate_python(
        {"model": "m", "messages": HI, "stream": False, "options": {"num_predict": n}}
    )
    return chat_request(req, t, pol)


def ollama_generate(n: int, t: Target, pol: Policy) -> UpstreamRequest:
    req = GENERATE.validate_python(
        {"model": "m", "prompt": "hi", "stream": False, "options": {"num_predict": n}}
    )
    return generate_request(req, t, pol)


def ollama_fim(n: int, t: Target, pol: Policy) -> UpstreamRequest:
    req = GENERATE.validate_python(
        {
            "model": "m",
            "prompt": "def f(",
            "suffix": "):",
            "stream": False,
            "options": {"num_predict": n},
        }
    )
    return completion_request(req, t, pol)


def claude_code(n: int, t: Target, pol: Policy) -> UpstreamRequest:
    body = {"model": "m", "max_tokens": n, "messages": HI, "stream": True}
    conv = anthropic.read_request(messages_body(body))
    return anthropic.messages_request(conv, t, pol)


def codex(n: int, t: Target, pol: Policy) -> UpstreamRequest:
    body = {"model": "m", "input": "hi", "max_output_tokens": n}
    return responses.chat_request(responses.read_request(responses_body(body)), t, pol)


ROUTES = {
    "/api/chat": ollama_chat,
    "/api/generate": ollama_generate,
    "/api/generate suffix": ollama_fim,
    "/v1/messages": claude_code,
    "/v1/responses": codex,
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_translated_route_lowers_what_is_above_the_models_limit(route: str) -> None:
    up = ROUTES[route](32000, target(), policy())
    assert up.payload["max_tokens"] == 16384
    assert f"max_tokens 32000 lowered to 16384: output limit from {LISTED}" in up.adapted
    assert up.notes == [] or all("max_tokens" not in n for n in up.notes)
    assert up.warnings == []  # nothing the model could have written is lost


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_what_is_within_the_limit_is_sent_as_asked(route: str) -> None:
    for n in (1, 16384):
        up = ROUTES[route](n, target(), policy())
        assert up.payload["max_tokens"] == n
        assert not any("lowered" in a for a in up.adapted)


@pytest.mark.parametrize(
    ("known", "fallback", "sent", "source"),
    [
        # the model's own limit (MODEL_MAPPING_FILE, else the backend's list) wins ...
        (16384, 8192, 16384, LISTED),
        # ... over the operator's MAX_OUTPUT_TOKENS, which applies to models of no known limit
        (None, 8192, 8192, "MAX_OUTPUT_TOKENS"),
        (None, None, 32000, None),
    ],
)
def test_the_models_limit_then_max_output_tokens(
    known: int | None, fallback: int | None, sent: int, source: str | None
) -> None:
    up = ollama_chat(32000, target(limit=known), policy(max_output_tokens=fallback))
    assert up.payload["max_tokens"] == sent
    lowered = [a for a in up.adapted if "lowered" in a]
    assert lowered == (
        [f"max_tokens 32000 lowered to {sent}: output limit from {source}"] if source else []
    )


@pytest.mark.parametrize(
    ("profile", "model", "field"),
    [
        # renamed after lowering: OpenAI takes max_completion_tokens only
        ("openai", "gpt-4o", "max_completion_tokens"),
        ("groq", "llama-3.3-70b-versatile", "max_tokens"),
        ("deepseek", "deepseek-chat", "max_tokens"),
    ],
)
def test_the_lowered_value_is_what_the_backend_profile_renames(
    profile: str, model: str, field: str
) -> None:
    up = claude_code(32000, target(model, profile, 8192), policy(profile))
    assert up.payload[field] == 8192
    other = ({"max_tokens", "max_completion_tokens"} - {field}).pop()
    assert other not in up.payload


def test_an_option_forwarded_under_another_name_is_lowered_too() -> None:
    # PASSTHROUGH_OPTIONS num_predict=max_new_tokens: the backend's own name for it
    pol = Policy(passthrough={"num_predict": "max_new_tokens"}, max_output_tokens=4096)
    up = ollama_chat(32000, target(limit=None), pol)
    assert up.payload["max_new_tokens"] == 4096
    assert "max_tokens" not in up.payload


def test_anthropics_thinking_budget_is_sized_under_the_lowered_limit() -> None:
    # Anthropic: budget_tokens must stay below max_tokens (translate/shape.py): the budget of
    # think "high" is sized against what is sent, not what Claude Code asked for.
    body = {
        "model": "claude-sonnet-4",
        "max_tokens": 32000,
        "messages": HI,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
    }
    conv = anthropic.read_request(messages_body(body))
    t = Target.of(
        "claude-sonnet-4", PROFILES["anthropic"], thinking=True, max_output=(8192, LISTED)
    )
    up = anthropic.messages_request(conv, t, policy("anthropic"))
    assert up.payload["max_tokens"] == 8192
    assert up.payload["thinking"]["budget_tokens"] < 8192


def test_embeddings_are_not_touched() -> None:
    up = UpstreamRequest(payload={"model": "e", "input": ["a"], "max_tokens": 99})
    for_backend(up, target(limit=1), policy(max_output_tokens=1), EMBEDDINGS_PATH)
    assert up.payload["max_tokens"] == 99


@pytest.mark.parametrize(
    ("entry", "limit"),
    [
        ({"id": "m", "top_provider": {"max_completion_tokens": 16384}}, 16384),  # OpenRouter
        ({"id": "m", "top_provider": {"max_completion_tokens": None}}, None),  # none set
        ({"id": "m", "context_window": 131072, "max_completion_tokens": 32768}, 32768),  # Groq
        ({"id": "m", "max_input_tokens": 200000, "max_tokens": 64000}, 64000),  # Anthropic
        ({"id": "m", "max_tokens": 128000}, None),  # a bare max_tokens may be the context
        ({"id": "m", "max_output_tokens": 8192}, 8192),
        ({"id": "m", "max_completion_tokens": "8192"}, None),  # not a number
        ({"id": "m", "max_completion_tokens": True}, None),
        ({"id": "gpt-4o", "object": "model", "owned_by": "system"}, None),  # OpenAI: ids only
        (None, None),
    ],
)
def test_the_output_limit_backends_publish(entry: dict[str, Any] | None, limit: int | None) -> None:
    assert published_output(entry) == limit
