"""What the break-it review of issue #17 found on /v1/messages and /v1/responses, each kept
fixed: hostile bodies are 400s, one id per call, answers without choices are errors, a call cut
by the token limit is not a call, and the models answered are in /api/ps."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer

M = "gpt-4o-mini"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/messages",
            {
                "model": M,
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "mid_conv_system", "content": 5}]}
                ],
            },
        ),
        (
            "/v1/responses",
            {"model": M, "input": [{"type": "message", "role": [1], "content": "x"}]},
        ),
        ("/v1/responses", {"model": M, "input": [{"type": [1]}]}),
        (
            "/v1/responses",
            {
                "model": M,
                "input": [{"role": "user", "content": "x"}, {"type": "reasoning", "summary": 5}],
            },
        ),
        ("/v1/responses", {"model": M, "input": "x", "text": {"format": "json"}}),
        (
            "/v1/responses",
            {"model": M, "input": "x", "tools": [{"type": "namespace", "name": "n", "tools": 5}]},
        ),
        (
            "/v1/responses",
            {
                "model": M,
                "input": "x",
                "tools": [{"type": "custom", "name": "c", "description": 5}],
            },
        ),
    ],
)
def test_hostile_bodies_are_400s_in_the_routes_dialect(
    proxy: ProxyServer, upstream: FakeUpstream, path: str, body: dict[str, Any]
) -> None:
    answer = httpx.post(proxy.url + path, json=body, timeout=10)
    assert answer.status_code == 400, answer.text
    err = answer.json()
    if path == "/v1/messages":
        assert err["type"] == "error"
        assert err["error"]["type"] == "invalid_request_error"
    else:
        assert "wrong type" in err["error"]["message"]
    assert upstream.journal == []  # refused before any backend call


def test_a_huge_integer_the_response_repeats_is_no_500(proxy: ProxyServer) -> None:
    body = {"model": M, "input": "x", "metadata": {"a": 10**30}}
    assert httpx.post(proxy.url + "/v1/responses", json=body, timeout=10).status_code == 200


def _one_id_for_two_calls() -> Script:
    # DeepSeek and GLM give parallel calls one id (HKUDS/nanobot#3943)
    calls = [
        {
            "index": i,
            "id": "call_1",
            "type": "function",
            "function": {"name": "f", "arguments": f'{{"a": {i}}}'},
        }
        for i in (0, 1)
    ]
    return Script(
        chunks=[{"tool_calls": [c]} for c in calls],
        finish_reason="tool_calls",
        message={"role": "assistant", "content": None, "tool_calls": calls},
    )


@pytest.mark.parametrize("stream", [True, False])
def test_each_call_has_its_own_id(proxy: ProxyServer, upstream: FakeUpstream, stream: bool) -> None:
    with anthropic.Anthropic(base_url=proxy.url, api_key="x") as client:
        upstream.script(_one_id_for_two_calls())
        msg_args: dict[str, Any] = {
            "model": M,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "go"}],
        }
        if stream:
            with client.messages.stream(**msg_args) as s:
                blocks = s.get_final_message().content
        else:
            blocks = client.messages.create(**msg_args).content
    ids = [b.id for b in blocks if b.type == "tool_use"]
    assert len(ids) == len(set(ids)) == 2
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="x") as oai:
        upstream.script(_one_id_for_two_calls())
        output: list[Any] = []
        if stream:
            with oai.responses.stream(model=M, input="go") as s:
                output.extend(s.get_final_response().output)
        else:
            output.extend(oai.responses.create(model=M, input="go").output)
    call_ids = [o.call_id for o in output if o.type == "function_call"]
    assert len(call_ids) == len(set(call_ids)) == 2


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
def test_a_json_answer_without_choices_instead_of_a_stream_is_an_error(
    proxy: ProxyServer, upstream: FakeUpstream, path: str
) -> None:
    upstream.script(Script(raw_body=b'{"choices": []}', content_type="application/json"))
    body: dict[str, Any] = {"model": M, "stream": True}
    if path == "/v1/messages":
        body |= {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    else:
        body["input"] = "x"
    answer = httpx.post(proxy.url + path, json=body, timeout=10)
    assert answer.status_code == 502
    assert "not a completion" in answer.text


def test_a_200_that_is_only_an_error_keeps_its_status_on_messages(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    upstream.script(Script(json_body={"error": {"message": "rate limited", "code": 429}}))
    with (
        anthropic.Anthropic(base_url=proxy.url, api_key="x", max_retries=0) as client,
        pytest.raises(anthropic.RateLimitError, match="rate limited"),
    ):
        client.messages.create(model=M, max_tokens=5, messages=[{"role": "user", "content": "x"}])


def test_a_call_cut_by_the_token_limit_is_max_tokens_not_tool_use(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    cut = {
        "index": 0,
        "id": "c",
        "type": "function",
        "function": {"name": "write", "arguments": '{"content": "partial'},
    }
    upstream.script(Script(chunks=[{"tool_calls": [cut]}], finish_reason="length"))
    with anthropic.Anthropic(base_url=proxy.url, api_key="x") as client:
        msg = client.messages.create(
            model=M, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert msg.stop_reason == "max_tokens"


@pytest.mark.parametrize("stream", [True, False])
def test_models_answered_on_messages_are_in_ps(
    proxy: ProxyServer, upstream: FakeUpstream, stream: bool
) -> None:
    httpx.post(proxy.url + "/api/generate", json={"model": M, "keep_alive": 0}, timeout=10)
    body = {
        "model": M,
        "max_tokens": 5,
        "stream": stream,
        "messages": [{"role": "user", "content": "x"}],
    }
    assert httpx.post(proxy.url + "/v1/messages", json=body, timeout=10).status_code == 200
    names = [m["name"] for m in httpx.get(proxy.url + "/api/ps", timeout=10).json()["models"]]
    assert M in names


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"model": M, "messages": [{"role": "user", "content": "x"}]}),
        (
            "/v1/messages",
            {"model": M, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        ),
        ("/v1/responses", {"model": M, "input": "x"}),
    ],
)
def test_the_backends_retry_after_reaches_the_client(
    proxy: ProxyServer, upstream: FakeUpstream, path: str, body: dict[str, Any]
) -> None:
    """The anthropic and openai SDKs (and Claude Code, Codex) wait as long as Retry-After says."""
    limited = Script(
        status=429,
        error={"error": {"message": "slow down", "type": "rate_limit_error"}},
        headers={"Retry-After": "7"},
    )
    upstream.faults.append((lambda p, _: p.endswith("/chat/completions"), limited))
    answer = httpx.post(proxy.url + path, json={**body, "stream": False}, timeout=30)
    assert answer.status_code == 429
    assert answer.headers.get("retry-after") == "7"


def test_a_retry_after_that_is_not_one_is_not_relayed(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    limited = Script(status=429, headers={"Retry-After": "soon; <script>"})
    upstream.faults.append((lambda p, _: p.endswith("/chat/completions"), limited))
    body = {"model": M, "messages": [{"role": "user", "content": "x"}], "stream": False}
    answer = httpx.post(proxy.url + "/api/chat", json=body, timeout=30)
    assert answer.status_code == 429
    assert "retry-after" not in answer.headers


@pytest.mark.parametrize(
    ("status", "kind"), [(429, "rate_limit_error"), (400, "invalid_request_error")]
)
def test_responses_errors_name_their_type_by_status(
    proxy: ProxyServer, upstream: FakeUpstream, status: int, kind: str
) -> None:
    failing = Script(status=status, error={"error": {"message": "no", "type": "x"}})
    upstream.faults.append((lambda p, _: p.endswith("/chat/completions"), failing))
    answer = httpx.post(proxy.url + "/v1/responses", json={"model": M, "input": "x"}, timeout=30)
    assert answer.status_code == status
    assert answer.json()["error"]["type"] == kind
