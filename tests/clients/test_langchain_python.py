"""langchain-ollama (PyPI): ChatOllama and OllamaEmbeddings, unmodified, against the proxy."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings
from pydantic import BaseModel

from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer

CLIENT = "langchain-ollama (Python)"


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return json.dumps({"city": city, "temp": 17})


@pytest.mark.compat(CLIENT, "chat")
def test_invoke(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(
        Script(
            chunks=[{"content": "Hello "}, {"content": "there"}],
            usage={"prompt_tokens": 5, "completion_tokens": 2},
        )
    )
    r = ChatOllama(model="gpt-4o-mini", base_url=proxy.url).invoke("hi")
    assert r.content == "Hello there"
    assert r.usage_metadata is not None
    assert (r.usage_metadata["input_tokens"], r.usage_metadata["output_tokens"]) == (5, 2)
    assert upstream.last()["body"]["stream"] is True  # ChatOllama always streams


@pytest.mark.compat(CLIENT, "chat stream")
def test_stream(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Script(chunks=[{"content": "a"}, {"content": "b"}, {"content": "c"}]))
    chunks = list(ChatOllama(model="gpt-4o-mini", base_url=proxy.url).stream("hi"))
    assert "".join(str(c.content) for c in chunks) == "abc"


@pytest.mark.compat(CLIENT, "tools")
def test_bind_tools_round_trip(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    call = [
        {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    upstream.script(
        Script(chunks=[{"tool_calls": call}], finish_reason="tool_calls"),
        Script(chunks=[{"content": "17 degrees"}]),
    )
    llm = ChatOllama(model="gpt-4o-mini", base_url=proxy.url).bind_tools([get_weather])
    messages: list[object] = [HumanMessage("Weather in Paris?")]
    ai = llm.invoke(messages)  # type: ignore[arg-type]
    assert [(c["name"], c["args"]) for c in ai.tool_calls] == [("get_weather", {"city": "Paris"})]
    messages += [
        ai,
        ToolMessage(
            get_weather.invoke(ai.tool_calls[0]["args"]), tool_call_id=ai.tool_calls[0]["id"]
        ),
    ]
    final = llm.invoke(messages)  # type: ignore[arg-type]
    assert final.content == "17 degrees"
    sent = upstream.last()["body"]["messages"]
    assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]
    assert json.loads(sent[2]["content"]) == {"city": "Paris", "temp": 17}


@pytest.mark.compat(CLIENT, "thinking")
def test_reasoning(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Script(chunks=[{"reasoning_content": "17*3"}, {"content": "51"}]))
    r = ChatOllama(model="qwen3:8b", base_url=proxy.url, reasoning=True).invoke("17*3?")
    assert r.content == "51"
    assert r.additional_kwargs["reasoning_content"] == "17*3"
    assert upstream.last()["body"]["reasoning_effort"] == "medium"


class Person(BaseModel):
    name: str
    age: int


@pytest.mark.compat(CLIENT, "structured output")
def test_with_structured_output(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Script(chunks=[{"content": '{"name": "Ada", '}, {"content": '"age": 36}'}]))
    person = (
        ChatOllama(model="gpt-4o-mini", base_url=proxy.url)
        .with_structured_output(Person)
        .invoke("Ada is 36")
    )
    assert person == Person(name="Ada", age=36)
    assert upstream.last()["body"]["response_format"]["type"] == "json_schema"


@pytest.mark.compat(CLIENT, "embeddings")
def test_embeddings(proxy: ProxyServer) -> None:
    emb = OllamaEmbeddings(model="text-embedding-3-small", base_url=proxy.url)
    docs = emb.embed_documents(["a", "b"])
    assert docs == [pytest.approx([0.6, 0.8, 0.0]), pytest.approx([3 / 34**0.5, 5 / 34**0.5, 0.0])]
    assert emb.embed_query("a") == pytest.approx([0.6, 0.8, 0.0])


@pytest.mark.compat(CLIENT, "list models")
def test_validate_model_on_init(proxy: ProxyServer) -> None:
    ChatOllama(model="gpt-4o-mini", base_url=proxy.url, validate_model_on_init=True)
    with pytest.raises(ValueError, match="not found"):
        ChatOllama(model="nope", base_url=proxy.url, validate_model_on_init=True)
