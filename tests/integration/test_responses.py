"""The real ``openai`` SDK's Responses client against the real proxy (``/v1/responses``, issue
#17), over the strict fake backend: text and function calls, streamed and not, a tool round
trip, errors in OpenAI's shape before a stream and as its last events during one, and the
requests OpenAI's Codex CLI sent (tests/fixtures/agents/codex_*.json)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import ResponseFunctionToolCall

from tests.conftest import agent_request
from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer, settings_for

MODEL = "qwen3:8b"
CALL: Any = {
    "id": "call_42",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


CLIENT = "openai-python (PyPI) on /v1/responses"


def calls(*made: dict[str, Any]) -> Script:
    """The backend calls these tools: streamed as two fragments each, or whole."""
    chunks: list[Any] = []
    for i, call in enumerate(made):
        args = call["function"]["arguments"]
        half = len(args) // 2
        chunks.append(
            {
                "tool_calls": [
                    {**call, "index": i, "function": {**call["function"], "arguments": args[:half]}}
                ]
            }
        )
        chunks.append({"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]})
    return Script(
        chunks=chunks,
        message={"role": "assistant", "content": None, "tool_calls": list(made)},
        finish_reason="tool_calls",
    )


@pytest.fixture
def oai(proxy: ProxyServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="anything", max_retries=0) as c:
        yield c


def chats(upstream: FakeUpstream) -> list[dict[str, Any]]:
    return [e["body"] for e in upstream.journal if e["path"] == "/v1/chat/completions"]


@pytest.mark.compat(CLIENT, "chat")
def test_create_answers_a_response(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    r = oai.responses.create(
        model=MODEL, instructions="Be brief.", input="Say hello", max_output_tokens=50
    )
    assert r.object == "response"
    assert r.id.startswith("resp_")
    assert r.status == "completed"
    assert r.model == MODEL
    assert r.output_text == "Hello!"
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens) == (7, 2)
    assert upstream.last()["body"] == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        "stream": False,
        "max_tokens": 50,
    }


@pytest.mark.compat(CLIENT, "chat stream")
def test_create_stream_sends_the_events_in_order(
    oai: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.script(Script(chunks=[{"content": "Bon"}, {"content": "jour"}], split_at=7))
    events = list(oai.responses.create(model=MODEL, input="Say hello", stream=True))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == "Bonjour"
    assert final.usage is not None
    assert final.usage.total_tokens == 9
    assert upstream.last()["body"]["stream_options"] == {"include_usage": True}


def test_stream_helper_gives_the_function_call(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.script(calls(CALL))
    with oai.responses.stream(model=MODEL, input="Weather in Paris?", tools=[WEATHER]) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert deltas == ['{"city":"Paris"}']  # each call whole, as soon as it is complete
    [call] = final.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert (call.call_id, call.name, call.arguments) == (
        "call_42",
        "get_weather",
        '{"city":"Paris"}',
    )
    assert upstream.last()["body"]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER["parameters"],
            },
        }
    ]


@pytest.mark.compat(CLIENT, "tools")
def test_a_tool_round_trip(oai: openai.OpenAI, upstream: FakeUpstream) -> None:
    """function_call out, then the client's function_call_output back with the history: the
    backend gets its call and the result paired by the call's id."""
    upstream.script(calls(CALL), Script(chunks=[{"content": "It is sunny."}]))
    history: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = oai.responses.create(model=MODEL, input=history, tools=[WEATHER])
    [call] = first.output
    assert isinstance(call, ResponseFunctionToolCall)
    history += [
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24 C"},
    ]
    with oai.responses.stream(model=MODEL, input=history, tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    assert final.output_text == "It is sunny."
    assert upstream.last()["body"]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_42", "content": "sunny, 24 C"},
    ]


def test_namespaced_tools_come_back_with_their_namespace(
    oai: openai.OpenAI, upstream: FakeUpstream
) -> None:
    tools: Any = [
        {
            "type": "namespace",
            "name": "crm",
            "description": "CRM",
            "tools": [{**WEATHER, "name": "lookup"}],
        }
    ]
    upstream.script(calls({**CALL, "function": {**CALL["function"], "name": "crm__lookup"}}))
    r = oai.responses.create(model=MODEL, input="Find Paris", tools=tools)
    [call] = r.output
    assert isinstance(call, ResponseFunctionToolCall)
    assert (call.name, call.namespace) == ("lookup", "crm")
    assert [t["function"]["name"] for t in upstream.last()["body"]["tools"]] == ["crm__lookup"]


def test_errors_before_the_answer_are_openai_errors(
    oai: openai.OpenAI, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="no-such-model", input="hi")
    upstream.script(
        Script(
            status=429,
            error={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
        )
    )
    with pytest.raises(openai.RateLimitError):
        oai.responses.create(model=MODEL, input="hi", stream=True)
    sent = len(chats(upstream))
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model=MODEL, input="hi", previous_response_id="resp_1")
    assert info.value.param == "previous_response_id"
    assert "stateless" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(
            model=MODEL,
            input=[{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}],
        )
    assert info.value.param == "input[0].content[0].type"
    assert len(chats(upstream)) == sent  # refused before anything is sent


@pytest.mark.parametrize("helper", [False, True])
def test_a_failure_mid_stream_raises_in_the_sdk(
    oai: openai.OpenAI, upstream: FakeUpstream, helper: bool
) -> None:
    upstream.script(
        Script(
            chunks=[{"content": "Hal"}, '{"error": {"message": "backend fell over"}}'],
            finish_reason=None,
        )
    )
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="backend fell over"):
        if helper:
            with oai.responses.stream(model=MODEL, input="hi") as stream:
                seen.extend(e.type for e in stream)
        else:
            seen.extend(e.type for e in oai.responses.create(model=MODEL, input="hi", stream=True))
    assert "response.output_text.delta" in seen


def test_a_stream_cut_short_ends_failed(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Script(chunks=[{"content": "a"}, {"content": "b"}], drop_after=2))
    r = httpx.post(
        proxy.url + "/v1/responses",
        json={"model": MODEL, "input": "hi", "stream": True},
        timeout=10,
    )
    assert r.status_code == 200
    events = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed"


def codex_post(proxy: ProxyServer, body: dict[str, Any]) -> list[dict[str, Any]]:
    """As Codex posts: no Authorization, Accept: text/event-stream (tests/agents/README.md)."""
    r = httpx.post(
        proxy.url + "/v1/responses",
        content=orjson.dumps(body),
        headers={
            "content-type": "application/json",
            "accept": "text/event-stream",
            "originator": "codex_exec",
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]


def test_codex_requests_as_captured(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    """Codex's first request gets its exec_command call, its second (the call and its output
    in the history) the final text; each with an output_item.done per item and a final
    response.completed, which is all Codex reads."""
    exec_call = {
        "id": "call_cx1",
        "type": "function",
        "function": {"name": "exec_command", "arguments": '{"cmd": "printf hello > proof.txt"}'},
    }
    upstream.script(calls(exec_call), Script(chunks=[{"content": "Done."}]))
    first = codex_post(proxy, {**agent_request("codex_04_post_v1_responses.json"), "model": MODEL})
    done = [e["item"] for e in first if e["type"] == "response.output_item.done"]
    assert [(i["type"], i["name"], i["call_id"]) for i in done] == [
        ("function_call", "exec_command", "call_cx1")
    ]
    assert first[-1]["type"] == "response.completed"
    assert first[-1]["response"]["output"] == done
    sent = upstream.last()["body"]
    assert "web_search" not in [t["function"]["name"] for t in sent["tools"]]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "user"]
    second = codex_post(proxy, {**agent_request("codex_05_post_v1_responses.json"), "model": MODEL})
    assert [e["item"]["type"] for e in second if e["type"] == "response.output_item.done"] == [
        "message"
    ]
    assert second[-1]["type"] == "response.completed"
    assert second[-1]["response"]["output"][0]["content"][0]["text"] == "Done."
    assert (
        upstream.last()["body"]["messages"][-1]["tool_call_id"] == "call_000000000000000000000005"
    )


def test_inbound_keys_guard_it_like_every_v1_route(upstream: FakeUpstream) -> None:
    with ProxyServer(settings_for(upstream.url, proxy_api_keys="sk-in-1")) as p:
        bad = openai.OpenAI(base_url=p.url + "/v1", api_key="wrong", max_retries=0)
        with bad, pytest.raises(openai.AuthenticationError):
            bad.responses.create(model=MODEL, input="hi")
        with openai.OpenAI(base_url=p.url + "/v1", api_key="sk-in-1", max_retries=0) as good:
            assert good.responses.create(model=MODEL, input="hi").output_text == "Hello!"


def test_a_backend_that_ignores_stream_true_still_gives_the_events(
    oai: openai.OpenAI, upstream: FakeUpstream
) -> None:
    whole = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Whole."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    upstream.script(Script(raw_body=orjson.dumps(whole), content_type="application/json"))
    with oai.responses.stream(model=MODEL, input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Whole."
    assert final.usage is not None
    assert final.usage.total_tokens == 4
