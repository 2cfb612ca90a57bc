"""Replays what real clients put on the wire (captured in the contract's client_wire fixtures)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import contract
from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer


@pytest.fixture(autouse=True)
def _llama(upstream: FakeUpstream) -> None:
    upstream.models.append("llama3.2")  # the model the captured clients ask for


WIRE = [
    "client_wire_langchain_python_tool_history.json",
    "client_wire_langchainjs_tool_history.json",
]


def lines(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/x-ndjson"
    return [json.loads(x) for x in resp.text.split("\n")[:-1]]


@pytest.mark.parametrize("name", WIRE)
def test_langchain_tool_histories_reach_the_backend_valid(
    proxy: ProxyServer, upstream: FakeUpstream, name: str
) -> None:
    fx = contract(name)
    upstream.script(
        Script(
            chunks=[
                {"reasoning_content": "thinking..."},
                {"content": "It is "},
                {"content": "24C."},
            ]
        )
    )
    out = lines(httpx.post(proxy.url + "/api/chat", json=fx["request"], headers=fx["headers"]))
    # expected_response_requirements of the fixture
    assert all(set(line["message"]) >= {"role", "content"} for line in out)
    assert all(line["message"].get("thinking") != "" for line in out)
    assert [("eval_count" in line) for line in out] == [False] * (len(out) - 1) + [True]
    assert "".join(line["message"]["content"] for line in out) == "It is 24C."
    sent = upstream.last()["body"]
    tool_msgs = [m for m in sent["messages"] if m["role"] == "tool"]
    calls = [tc for m in sent["messages"] for tc in m.get("tool_calls") or ()]
    assert [m["tool_call_id"] for m in tool_msgs] == [c["id"] for c in calls]
    assert all(isinstance(c["function"]["arguments"], str) for c in calls)
    assert "options" not in sent
    assert "keep_alive" not in sent


def test_langchainjs_image_only_user_turn(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    fx = contract("client_wire_langchainjs_tool_history.json")
    httpx.post(proxy.url + "/api/chat", json=fx["request"])
    image_turn = upstream.last()["body"]["messages"][2]
    assert image_turn["role"] == "user"
    assert [p["type"] for p in image_turn["content"]] == ["image_url"]


def test_langchainjs_tool_call_line(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    fx = contract("client_wire_langchainjs_tool_history.json")
    frags = [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"ci'},
                }
            ]
        },
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]},
    ]
    upstream.script(Script(chunks=frags, finish_reason="tool_calls"))
    out = lines(httpx.post(proxy.url + "/api/chat", json=fx["request"]))
    with_calls = [line for line in out if line["message"].get("tool_calls")]
    # Ollama's layout, one call per line (ollama/ollama#7836): @langchain/ollama's invoke()
    # keeps calls with different ids apart (contract §5.4.6); the interleaved second call waits
    # for the first, so the order is the backend's.
    assert [len(line["message"]["tool_calls"]) for line in with_calls] == [1, 1]
    calls = [line["message"]["tool_calls"][0] for line in with_calls]
    assert [(c["id"], c["function"]["index"], c["function"]["arguments"]) for c in calls] == [
        ("c1", 0, {"city": "Paris"}),
        ("c2", 1, {"city": "Oslo"}),
    ]
    assert out[-1]["done"] is True
    assert out[-1]["done_reason"] == "stop"


def test_n8n_vendor_node_tool_followup(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    fx = contract("client_wire_n8n_vendor_tool_followup.json")
    call = {
        "id": "call_k3j9x0qa",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'},
    }
    upstream.script(
        Script(
            message={"role": "assistant", "content": None, "tool_calls": [call]},
            finish_reason="tool_calls",
            usage={"prompt_tokens": 169, "completion_tokens": 18},
        )
    )
    first = httpx.post(proxy.url + "/api/chat", json=fx["first_request"], headers=fx["headers"])
    assert first.headers["content-type"] == "application/json; charset=utf-8"
    body = first.json()
    expected = fx["first_response"]
    assert body["message"] == expected["message"]
    assert (body["done"], body["done_reason"], body["prompt_eval_count"], body["eval_count"]) == (
        True,
        "stop",
        169,
        18,
    )
    sent = upstream.last()["body"]
    assert sent["stop"] == ["###"]
    assert "keep_alive" not in sent
    # n8n appends response.message verbatim plus {"role": "tool", "tool_name": ...}
    second = httpx.post(proxy.url + "/api/chat", json=fx["second_request"], headers=fx["headers"])
    assert second.status_code == 200, second.text
    assert second.json()["message"]["content"] == "Hello!"
    history = upstream.last()["body"]["messages"]
    assert history[2]["tool_calls"][0]["id"] == "call_k3j9x0qa"
    assert history[3] == {
        "role": "tool",
        "tool_call_id": "call_k3j9x0qa",
        "content": '{"temp":24,"sky":"clear"}',
    }
