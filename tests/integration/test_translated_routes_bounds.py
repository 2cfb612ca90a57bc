"""What the second break-it review of issue #17 found on /v1/messages and /v1/responses, each
kept fixed over the real app: a client's field names cannot flood the log nor mute later
warnings, one assistant turn's calls are held to REQUEST_MAX_TOOLS on both routes, the input
token estimate is the same streamed or not, an empty model and a tool_use input that is not an
object are Anthropic's 400s."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from ollama_openai_bridge.translate.anthropic import estimate_tokens
from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

M = "gpt-4o-mini"
Q = [{"role": "user", "content": "What is in the README?"}]


def test_a_flood_of_client_chosen_names_is_a_few_lines_and_mutes_nothing(
    upstream: FakeUpstream,
) -> None:
    """12,000 unknown fields on /v1/messages were 10,001 warnings, and filled the process's one
    set of warned keys: a hosted tool dropped on /v1/responses afterwards went to DEBUG."""
    fields = {f"field_{i}": 1 for i in range(12_000)}
    with ProxyServer(settings_for(upstream.url)) as p, capture_logs() as logs:
        messages = {"model": M, "max_tokens": 5, "messages": Q}
        tools = [{"type": f"bash_{i}", "name": "b"} for i in range(1_000)]
        for body in ({**messages, **fields}, {**messages, "tools": tools}):
            assert httpx.post(p.url + "/v1/messages", json=body, timeout=30).status_code == 200
        for _ in range(3):  # new names each time: not one of them warned before
            fields = {f"r{len(logs)}_{i}": 1 for i in range(12_000)}
            body = {"model": M, "input": "x", **fields}
            assert httpx.post(p.url + "/v1/responses", json=body, timeout=30).status_code == 200
        hosted = {"model": M, "input": "x", "tools": [{"type": "web_search"}]}
        assert httpx.post(p.url + "/v1/responses", json=hosted, timeout=30).status_code == 200
    warned = [e for e in logs if e["log_level"] == "warning"]
    unknown = [e for e in warned if e["event"] == "request_field_unknown"]
    assert [(e["route"], e["count"], len(e["keys"])) for e in unknown] == [
        ("/v1/messages", 12_000, 20),
        *[("/v1/responses", 12_000, 20)] * 3,
    ]
    assert unknown[0]["keys"][:2] == ["field_0", "field_1"]
    tool_types = [e for e in warned if e["event"] == "request_field_ignored"]
    assert len(tool_types) == 21  # 20 by name, then one line for the other 980
    assert tool_types[-1]["count"] == 980
    # the first hosted tool dropped is still a warning, whatever came before
    assert [e["key"] for e in warned if e["event"] == "backend_adaptation"] == [
        "responses hosted tool web_search"
    ]
    assert len(warned) == 4 + 21 + 1


def _calls(n: int) -> list[dict[str, Any]]:
    return [
        {"type": "function_call", "call_id": f"c{i}", "name": "f", "arguments": "{}"}
        for i in range(n)
    ]


def test_one_turns_calls_are_held_to_request_max_tools_on_responses(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    """The /v1/messages route checked its translation; /v1/responses sent 49,000 calls of one
    assistant message upstream."""
    n = proxy.settings.request_max_tools + 1
    items = [{"role": "user", "content": "q"}, *_calls(n)]
    items += [{"type": "function_call_output", "call_id": f"c{i}", "output": "r"} for i in range(n)]
    body = {"model": M, "input": items, "tools": [{"type": "function", "name": "f"}]}
    answer = httpx.post(proxy.url + "/v1/responses", content=orjson.dumps(body), timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == {
        "message": "too many items in 'function calls of the assistant turn from input[1]': "
        f"{n} (at most {n - 1}, REQUEST_MAX_TOOLS)",
        "type": "invalid_request_error",
        "param": "input[1]",
        "code": "array_above_max_length",
    }
    assert upstream.journal == []
    items = [{"role": "user", "content": "q"}, *_calls(n - 1)]  # at the limit: served
    body = {"model": M, "input": items, "tools": [{"type": "function", "name": "f"}]}
    assert httpx.post(proxy.url + "/v1/responses", json=body, timeout=30).status_code == 200


def _sse_usage(text: str) -> dict[str, Any]:
    """The usage of a Messages stream's ``message_delta`` event."""
    for line in text.splitlines():
        if line.startswith("data: ") and '"message_delta"' in line:
            usage: dict[str, Any] = orjson.loads(line[6:])["usage"]
            return usage
    raise AssertionError(f"no message_delta in {text[:300]}")


@pytest.mark.parametrize("stream", [False, True])
def test_input_tokens_are_estimated_alike_streamed_or_not(
    proxy: ProxyServer, upstream: FakeUpstream, stream: bool
) -> None:
    """A backend that reports no usage: the non-streamed answer said 0 input tokens."""
    upstream.script(Script(usage=None))
    body = {"model": M, "max_tokens": 50, "messages": Q, "stream": stream}
    answer = httpx.post(proxy.url + "/v1/messages", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    usage = _sse_usage(answer.text) if stream else answer.json()["usage"]
    assert usage["input_tokens"] == estimate_tokens(body) > 0
    counted = httpx.post(proxy.url + "/v1/messages/count_tokens", json=body, timeout=30)
    assert counted.json() == {"input_tokens": usage["input_tokens"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"model": "", "max_tokens": 5, "messages": Q},
            "model: a model name is required (it is empty)",
        ),
        (
            {
                "model": M,
                "max_tokens": 5,
                "messages": [
                    *Q,
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": "x"}],
                    },
                ],
            },
            "messages.1.content.0.input must be an object",
        ),
    ],
    ids=["empty model", "tool_use input not an object"],
)
def test_what_anthropic_refuses_is_a_400_in_its_shape(
    proxy: ProxyServer, upstream: FakeUpstream, body: dict[str, Any], message: str
) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        answer = httpx.post(proxy.url + path, json=body, timeout=10)
        assert answer.status_code == 400, answer.text
        assert answer.json() == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": message},
        }
    assert upstream.journal == []  # never sent
