"""The official ``ollama`` Python SDK, unmodified, against the proxy and a strict fake upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import ollama
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.servers import ProxyServer

USER = [{"role": "user", "content": "Say hello"}]

CLIENT = "ollama-python 0.6 (PyPI)"


def chat(client: ollama.Client, stream: bool, **kw: Any) -> None:
    """One chat call, consuming the stream when there is one (errors surface while reading)."""
    if stream:
        list(client.chat(stream=True, **kw))
    else:
        client.chat(stream=False, **kw)


@pytest.mark.compat(CLIENT, "list models")
def test_list(client: ollama.Client) -> None:
    models = client.list().models
    assert [m.model for m in models] == ["gpt-4o-mini", "qwen3:8b", "text-embedding-3-small"]
    first = models[0]
    assert first.digest == "8a43428062692d369599bd00272fd529aa5949ba715361e20f54e63c444ccea1"
    assert first.modified_at is not None
    assert first.details is not None
    assert first.details.format == "gguf"


def test_list_is_cached(client: ollama.Client, upstream: FakeUpstream) -> None:
    client.list()
    client.list()
    assert sum(1 for e in upstream.journal if e["path"] == "/v1/models") <= 1


@pytest.mark.compat(CLIENT, "version / show")
def test_show(client: ollama.Client) -> None:
    info = client.show("qwen3:8b")
    assert info.modelinfo is not None
    assert info.modelinfo["general.architecture"] == "qwen"
    assert info.modelinfo["qwen.context_length"] == 40960
    # insert: the reference profile's backend takes suffix on /v1/completions (fim)
    assert info.capabilities == ["completion", "tools", "insert", "thinking"]
    assert info.template is not None
    assert ".Suffix" in info.template  # Continue turns fill-in-the-middle on for it
    assert info.parameters is not None
    assert info.parameters.split() == ["num_ctx", "40960"]


def test_show_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.show("llama9")
    assert info.value.status_code == 404
    assert info.value.error == "model 'llama9' not found"


@pytest.mark.compat(CLIENT, "chat")
def test_chat_non_streaming(client: ollama.Client, upstream: FakeUpstream) -> None:
    upstream.script(
        Script(
            chunks=[{"content": "Hello there!"}],
            usage={"prompt_tokens": 26, "completion_tokens": 19},
        )
    )
    r = client.chat(
        model="gpt-4o-mini",
        messages=USER,
        options={"temperature": 0.2, "num_ctx": 4096, "top_k": 5},
    )
    assert r.message.role == "assistant"
    assert r.message.content == "Hello there!"
    assert (r.done, r.done_reason, r.prompt_eval_count, r.eval_count) == (True, "stop", 26, 19)
    assert r.model == "gpt-4o-mini"
    assert r.total_duration is not None
    assert r.total_duration > 0
    sent = upstream.last()["body"]
    # ollama-python sends tools: [] and stream: false; the backend must see neither tools nor
    # stream_options, and no option without an OpenAI equivalent.
    assert sent == {"model": "gpt-4o-mini", "messages": USER, "stream": False, "temperature": 0.2}
    assert upstream.last()["headers"]["Authorization"] == "Bearer sk-test-upstream"


@pytest.mark.compat(CLIENT, "chat stream")
def test_chat_streaming(client: ollama.Client, upstream: FakeUpstream) -> None:
    upstream.script(Script(chunks=[{"content": "Hel"}, {"content": "lo "}, {"content": "wörld ☃"}]))
    parts = list(client.chat(model="gpt-4o-mini", messages=USER, stream=True))
    assert "".join(p.message.content or "" for p in parts) == "Hello wörld ☃"
    assert [p.done for p in parts] == [False, False, False, True]
    final = parts[-1]
    assert (final.done_reason, final.prompt_eval_count, final.eval_count) == ("stop", 7, 2)
    assert final.eval_duration is not None
    assert final.prompt_eval_duration is not None
    assert all(p.model == "gpt-4o-mini" for p in parts)
    assert upstream.last()["body"]["stream_options"] == {"include_usage": True}


def test_latest_tag_is_accepted_and_echoed(client: ollama.Client, upstream: FakeUpstream) -> None:
    r = client.chat(model="gpt-4o-mini:latest", messages=USER)
    assert r.model == "gpt-4o-mini:latest"
    assert upstream.last()["body"]["model"] == "gpt-4o-mini"


@pytest.mark.compat(CLIENT, "generate stream")
def test_generate_non_streaming_and_streaming(
    client: ollama.Client, upstream: FakeUpstream
) -> None:
    upstream.script(
        Script(chunks=[{"content": "Teal."}]),
        Script(chunks=[{"content": "Te"}, {"content": "al."}]),
    )
    r = client.generate(model="gpt-4o-mini", prompt="Name a colour", system="One word.")
    assert (r.response, r.done, r.done_reason) == ("Teal.", True, "stop")
    assert upstream.last()["body"]["messages"] == [
        {"role": "system", "content": "One word."},
        {"role": "user", "content": "Name a colour"},
    ]
    parts = list(client.generate(model="gpt-4o-mini", prompt="Name a colour", stream=True))
    assert [p.response for p in parts] == ["Te", "al.", ""]
    assert parts[-1].done


def test_every_final_answer_has_load_duration(client: ollama.Client) -> None:
    # Ollama always sends load_duration (routes.go: checkpointLoaded - checkpointStart, never 0)
    # on the final chat and generate line, the unstreamed answer and /api/embed; the Vercel AI
    # SDK's Ollama provider refuses an /api/embed answer without it.
    finals = [
        client.chat(model="gpt-4o-mini", messages=USER),
        list(client.chat(model="gpt-4o-mini", messages=USER, stream=True))[-1],
        client.generate(model="gpt-4o-mini", prompt="hi"),
        list(client.generate(model="gpt-4o-mini", prompt="hi", stream=True))[-1],
    ]
    for final in finals:
        assert final.done
        assert final.load_duration is not None
        assert 0 < final.load_duration < final.total_duration  # type: ignore[operator]
    embedded = client.embed(model="text-embedding-3-small", input=["alpha"])
    assert embedded.load_duration is not None
    assert embedded.load_duration > 0
    assert embedded.prompt_eval_count is not None


def test_load_and_unload_do_not_call_the_backend(
    client: ollama.Client, upstream: FakeUpstream
) -> None:
    r = client.chat(model="gpt-4o-mini", messages=[])
    assert (r.done, r.done_reason) == (True, "load")
    g = client.generate(model="gpt-4o-mini", prompt="", keep_alive=0)
    assert (g.done, g.done_reason) == (True, "unload")
    assert [e for e in upstream.journal if e["path"] == "/v1/chat/completions"] == []


@pytest.mark.compat(CLIENT, "ps")
def test_ps_lists_recently_used_models(client: ollama.Client) -> None:
    client.chat(model="qwen3:8b", messages=USER, keep_alive="10m")
    models = client.ps().models
    entry = next(m for m in models if m.model == "qwen3:8b")
    assert entry.expires_at is not None
    assert entry.context_length == 40960
    client.generate(model="qwen3:8b", prompt="", keep_alive=0)  # unload acknowledges, nothing else


@pytest.mark.compat(CLIENT, "ps")
@pytest.mark.parametrize("endpoint", ["chat", "generate"])
def test_a_load_only_request_is_listed_until_unloaded(
    client: ollama.Client, upstream: FakeUpstream, endpoint: str
) -> None:
    # Ollama loads the model for an empty messages/prompt and lists it in /api/ps until its
    # keep_alive ends; keep_alive 0 unloads it (routes.go: expireRunner). `ollama run` and
    # Open WebUI's "load"/"unload" buttons send exactly these.
    def load(keep_alive: Any) -> Any:
        if endpoint == "chat":
            return client.chat(model="qwen3:8b", messages=[], keep_alive=keep_alive)
        return client.generate(model="qwen3:8b", prompt="", keep_alive=keep_alive)

    assert load("1h").done_reason == "load"
    entry = next(m for m in client.ps().models if m.model == "qwen3:8b")
    assert entry.expires_at is not None
    assert entry.context_length == 40960
    assert load(0).done_reason == "unload"
    assert [m.model for m in client.ps().models if m.model == "qwen3:8b"] == []
    assert [e for e in upstream.journal if e["path"] != "/v1/models"] == []  # no inference


def test_loading_an_unknown_model_is_404(client: ollama.Client) -> None:
    # Ollama cannot schedule a model it does not have: 404 in its words, load or unload.
    for keep_alive in (None, 0):
        with pytest.raises(ollama.ResponseError) as info:
            client.chat(model="llama9", messages=[], keep_alive=keep_alive)
        assert (info.value.status_code, info.value.error) == (404, "model 'llama9' not found")
        with pytest.raises(ollama.ResponseError) as info:
            client.generate(model="llama9", prompt="", keep_alive=keep_alive)
        assert info.value.status_code == 404


def test_unknown_model_is_404_in_ollama_wording(client: ollama.Client) -> None:
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as info:
            chat(client, stream, model="llama9", messages=USER)
        assert info.value.status_code == 404
        assert info.value.error == "model 'llama9' not found"


@pytest.mark.compat(CLIENT, "errors")
@pytest.mark.parametrize(
    ("status", "error", "expected_status", "expected"),
    [
        (
            401,
            {
                "error": {
                    "message": "Incorrect API key provided: sk-te**********eam",
                    "code": "invalid_api_key",
                }
            },
            401,
            "Incorrect API key provided",
        ),
        (
            429,
            {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
            429,
            "Rate limit reached",
        ),
        (
            400,
            {"error": {"message": "This model's maximum context length is 128000 tokens."}},
            400,
            "maximum context length",
        ),
        (500, "Internal meltdown", 502, "upstream error (HTTP 500): Internal meltdown"),
        (503, {"error": {"message": "overloaded"}}, 502, "upstream error (HTTP 503): overloaded"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_before_first_byte_keep_a_real_status(
    client: ollama.Client,
    upstream: FakeUpstream,
    status: int,
    error: object,
    expected_status: int,
    expected: str,
    stream: bool,
) -> None:
    upstream.script(Script(status=status, error=error))
    with pytest.raises(ollama.ResponseError) as info:
        chat(client, stream, model="gpt-4o-mini", messages=USER)
    assert info.value.status_code == expected_status
    assert expected in info.value.error


@pytest.mark.compat(CLIENT, "errors")
def test_error_after_first_line_is_an_error_line(
    client: ollama.Client, upstream: FakeUpstream
) -> None:
    upstream.script(
        Script(
            chunks=[{"content": "Once"}, {"content": " upon"}, {"content": " a"}],
            drop_after=3,
            delay=0.01,
        )
    )
    seen: list[str] = []
    with pytest.raises(ollama.ResponseError) as info:
        for part in client.chat(model="gpt-4o-mini", messages=USER, stream=True):
            seen.append(part.message.content or "")
    assert seen == ["Once", " upon"]
    assert info.value.status_code == -1  # ollama-python's marker for an in-stream error line
    assert "upstream stream interrupted" in info.value.error


def test_invalid_request_is_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="gpt-4o-mini", messages=USER, options={"temperature": "hot"})
    assert info.value.status_code == 400
    assert info.value.error == 'option "temperature" must be of type number'


def test_async_client_streaming(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Script(chunks=[{"content": "a"}, {"content": "b"}]))

    async def run() -> list[str]:
        c = ollama.AsyncClient(host=proxy.url)
        try:
            return [
                p.message.content or ""
                async for p in await c.chat(model="gpt-4o-mini", messages=USER, stream=True)
            ]
        finally:
            await c._client.aclose()

    assert asyncio.run(run()) == ["a", "b", ""]


def test_concurrent_streams(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    async def one(c: ollama.AsyncClient, i: int) -> str:
        parts = await c.chat(
            model="gpt-4o-mini", messages=[{"role": "user", "content": str(i)}], stream=True
        )
        return "".join([p.message.content or "" async for p in parts])

    async def run() -> list[str]:
        c = ollama.AsyncClient(host=proxy.url)
        try:
            return await asyncio.gather(*(one(c, i) for i in range(50)))
        finally:
            await c._client.aclose()

    assert asyncio.run(run()) == ["Hello!"] * 50


@pytest.mark.compat(CLIENT, "pull")
def test_pull_succeeds_for_backend_models(client: ollama.Client) -> None:
    assert client.pull("gpt-4o-mini").status == "success"
    statuses = [p.status for p in client.pull("qwen3:8b", stream=True)]
    assert statuses[-1] == "success"
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("llama9")
    assert (info.value.status_code, info.value.error) == (
        404,
        "pull model manifest: file does not exist",
    )


@pytest.mark.parametrize("call", ["delete", "copy", "create", "push"])
def test_model_management_is_a_clear_501(client: ollama.Client, call: str) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        if call == "delete":
            client.delete("gpt-4o-mini")
        elif call == "copy":
            client.copy("gpt-4o-mini", "mine")
        elif call == "create":
            client.create(model="mine", from_="gpt-4o-mini")
        else:
            client.push("gpt-4o-mini")
    assert info.value.status_code == 501
    assert "not supported by this proxy" in info.value.error
