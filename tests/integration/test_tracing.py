"""OpenTelemetry traces (issue #20) end to end: the proxy as a user starts it (the command, in
a subprocess, configured by the standard OTEL_* variables), two fake backends over real sockets
(the first always 503, so a retry and a fallback happen), and an OTLP/HTTP receiver in the test
decoding what the proxy's exporter sends (tests/otlp_receiver.py).

OTEL_BSP_SCHEDULE_DELAY is a minute: every span arrives in the export made at shutdown, which
shows that stopping the proxy flushes the batch."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.integration.test_cli import Running
from tests.otlp_receiver import OTLPReceiver, Span

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
MODEL = "gpt-4o-mini"


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    r = OTLPReceiver().start()
    yield r
    r.stop()


@pytest.fixture
def backends() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    primary, backup = FakeUpstream([MODEL]).start(), FakeUpstream([MODEL]).start()
    # The first of the chain is down for chat: retried (MAX_RETRIES=1), then the next is tried.
    primary.faults.append(
        (
            lambda path, _: path.endswith("/chat/completions"),
            Script(status=503, error={"error": {"message": "overloaded", "type": "server_error"}}),
        )
    )
    yield primary, backup
    primary.stop()
    backup.stop()


def _env(tmp_path: Path, primary: FakeUpstream, backup: FakeUpstream) -> dict[str, str]:
    topology = tmp_path / "upstreams.json"
    topology.write_text(
        json.dumps(
            {
                "upstreams": [
                    {"name": "primary", "base_url": primary.url, "api_key": primary.api_key},
                    {"name": "backup", "base_url": backup.url, "api_key": backup.api_key},
                ],
                "fallbacks": {MODEL: ["primary", "backup"]},
            }
        )
    )
    return {
        "OPENAI_API_BASE_URL": "http://unused.invalid/v1",
        "UPSTREAMS_FILE": str(topology),
        "MAX_RETRIES": "1",
        "CIRCUIT_BREAKER_THRESHOLD": "0",
    }


def _otel_free_env() -> dict[str, str]:
    # The test runner's own OTEL_* must not leak into the proxy under test.
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def _run(tmp_path: Path, env: dict[str, str]) -> Running:
    saved, clean = dict(os.environ), _otel_free_env()
    os.environ.clear()
    os.environ.update(clean)
    try:
        return Running(tmp_path, env)  # base_env() reads os.environ
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _lines(output: str) -> list[dict[str, Any]]:
    lines = []
    for line in output.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def _one(spans: list[Span], **attrs: Any) -> Span:
    found = [s for s in spans if all(s.attributes.get(k) == v for k, v in attrs.items())]
    assert len(found) == 1, (attrs, [(s.name, s.attributes) for s in spans])
    return found[0]


def test_a_request_is_traced_across_retries_fallbacks_and_into_the_backend(
    tmp_path: Path, receiver: OTLPReceiver, backends: tuple[FakeUpstream, FakeUpstream]
) -> None:
    primary, backup = backends
    env = {
        **_env(tmp_path, primary, backup),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
    }
    proxy = _run(tmp_path, env)
    try:
        # A streamed Ollama chat whose client is traced: its trace continues here.
        with httpx.stream(
            "POST",
            proxy.url + "/api/chat",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
            timeout=30,
        ) as resp:
            assert resp.status_code == 200
            lines = [json.loads(line) for line in resp.iter_lines() if line]
        assert lines[-1]["done"] is True
        assert "".join(line["message"]["content"] for line in lines) == "Hello!"
        at_backend = backup.last()["headers"]
        # A relayed OpenAI answer, not streamed, from a client that sent no trace context.
        primary.faults.clear()
        answer = httpx.post(
            proxy.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert answer.status_code == 200
        assert receiver.posts == 0  # batched: nothing leaves before the batch's delay
    finally:
        output = proxy.stop()

    assert receiver.posts >= 1, output[-3000:]
    assert receiver.content_types[0] == "application/x-protobuf"
    assert {s.resource["service.name"] for s in receiver.spans} == {"ollama-openai-bridge"}

    # --- the streamed chat, in the client's trace -------------------------------------------
    spans = receiver.trace(CLIENT_TRACE)
    (server,) = [s for s in spans if s.kind == "server"]
    assert server.name == f"chat {MODEL}"
    assert server.parent_span_id == CLIENT_SPAN
    a = server.attributes
    assert a["http.request.method"] == "POST"
    assert a["http.route"] == "/api/chat"
    assert a["http.response.status_code"] == 200
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == MODEL
    assert a["gen_ai.usage.input_tokens"] == 7
    assert a["gen_ai.usage.output_tokens"] == 2
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert 0 < a["gen_ai.response.time_to_first_chunk"] < 30
    assert a["ollama_openai_bridge.upstream"] == "backup"
    assert "error.type" not in a

    # One GenAI CLIENT span per upstream tried: the failed one, then the fallback.
    tried = [s for s in spans if s.kind == "client" and s.parent_span_id == server.span_id]
    assert [s.name for s in tried] == [f"chat {MODEL}"] * 2
    failed = _one(tried, **{"ollama_openai_bridge.upstream": "primary"})
    assert failed.attributes["ollama_openai_bridge.fallback_index"] == 0
    assert failed.attributes["error.type"] == "503"
    assert failed.status == 2
    served = _one(tried, **{"ollama_openai_bridge.upstream": "backup"})
    s = served.attributes
    assert s["ollama_openai_bridge.fallback_index"] == 1
    assert s["gen_ai.operation.name"] == "chat"
    assert s["gen_ai.request.model"] == MODEL
    assert s["gen_ai.request.stream"] is True
    assert s["gen_ai.provider.name"]
    assert s["server.address"] == "127.0.0.1"
    assert s["server.port"] == backup.port
    assert s["gen_ai.usage.input_tokens"] == 7
    assert s["gen_ai.usage.output_tokens"] == 2
    assert s["gen_ai.response.finish_reasons"] == ["stop"]
    assert "error.type" not in s

    # One HTTP CLIENT span per request sent: the retry is the second under the failed upstream.
    sent = sorted(
        (x for x in spans if x.parent_span_id == failed.span_id),
        key=lambda x: x.attributes.get("http.request.resend_count", 0),
    )
    assert [x.name for x in sent] == ["POST", "POST"]
    assert [x.attributes["http.response.status_code"] for x in sent] == [503, 503]
    assert "http.request.resend_count" not in sent[0].attributes
    assert sent[1].attributes["http.request.resend_count"] == 1
    assert sent[0].attributes["url.full"] == primary.url + "/chat/completions"
    (http,) = [x for x in spans if x.parent_span_id == served.span_id]
    assert http.attributes["http.response.status_code"] == 200
    # ... and its traceparent reached the backend: the backend's spans join the trace.
    assert at_backend["traceparent"] == f"00-{CLIENT_TRACE}-{http.span_id}-01"

    # --- the relayed answer: a trace of its own -------------------------------------------
    relayed = [
        x for x in receiver.spans if x.kind == "server" and x.attributes["url.path"] != "/api/chat"
    ]
    relayed = [x for x in relayed if x.attributes.get("http.route") == "/v1/chat/completions"]
    assert len(relayed) == 1
    root = relayed[0]
    assert root.parent_span_id == ""
    assert root.trace_id != CLIENT_TRACE
    assert root.name == f"chat {MODEL}"
    assert root.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    # Its usage, read from the relayed JSON (budgets are off: the handler does not read it).
    assert root.attributes["gen_ai.usage.input_tokens"] == 7
    assert root.attributes["gen_ai.usage.output_tokens"] == 2
    (genai,) = [x for x in receiver.trace(root.trace_id) if x.parent_span_id == root.span_id]
    assert genai.attributes["ollama_openai_bridge.upstream"] == "primary"
    assert genai.attributes["gen_ai.usage.input_tokens"] == 7
    assert genai.attributes["gen_ai.response.id"].startswith("chatcmpl")

    # --- logs carry the trace id ----------------------------------------------------------
    logged = _lines(output)
    access = [x for x in logged if x.get("event") == "request" and x.get("path") == "/api/chat"]
    assert len(access) == 1
    assert access[0]["trace_id"] == CLIENT_TRACE
    assert access[0]["span_id"] == server.span_id
    (retry,) = [x for x in logged if x.get("event") == "upstream_fallback"]
    assert retry["trace_id"] == CLIENT_TRACE
    # Never a prompt, a completion or a key in a span.
    for span in receiver.spans:
        text = json.dumps(span.attributes)
        assert "Hello" not in text
        assert '"hi"' not in text
        assert primary.api_key not in text


@pytest.mark.parametrize(
    "off",
    [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}],
    ids=["sdk-disabled", "exporter-none"],
)
def test_nothing_is_exported_or_propagated_when_off(
    tmp_path: Path,
    receiver: OTLPReceiver,
    backends: tuple[FakeUpstream, FakeUpstream],
    off: dict[str, str],
) -> None:
    primary, backup = backends
    primary.faults.clear()
    env = {
        **_env(tmp_path, primary, backup),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "10",
        **off,
    }
    proxy = _run(tmp_path, env)
    try:
        reply = httpx.post(
            proxy.url + "/api/chat",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False},
            headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
            timeout=30,
        )
        assert reply.status_code == 200
        headers = primary.last()["headers"]
    finally:
        output = proxy.stop()
    assert receiver.posts == 0
    assert "traceparent" not in {k.lower() for k in headers}
    logged = _lines(output)
    assert any(x.get("event") == "request" for x in logged)
    assert not any("trace_id" in x for x in logged)
    assert not any(x.get("event") == "tracing" for x in logged)


PROMPT_TEXT = "PROMPT-TEXT-NOT-FOR-SPANS"


def test_review_fixes_replica_usage_error_text_and_trace_context(
    tmp_path: Path, receiver: OTLPReceiver
) -> None:
    """Issue #20's review: the upstream span names the replica sent to (L4); a relayed whole
    answer's usage is on the server span with budgets off (L5); a backend's error text that
    quotes the prompt never reaches a span (L3); a hostile tracestate is dropped without a log
    line, keeping the traceparent (L9); two traceparents start a new trace (W3C)."""
    replicas = [FakeUpstream([MODEL]).start(), FakeUpstream([MODEL]).start()]
    failing = FakeUpstream([MODEL]).start()
    failing.faults.append(
        (
            lambda path, _: path.endswith("/chat/completions"),
            Script(
                status=500,
                error={"error": {"message": f"bad request {PROMPT_TEXT}", "type": "x"}},
            ),
        )
    )
    topology = tmp_path / "upstreams.json"
    topology.write_text(
        json.dumps(
            {
                "upstreams": [
                    {
                        "name": "pool",
                        "base_urls": [r.url for r in replicas],
                        "balance": "weighted_round_robin",
                        "api_key": failing.api_key,  # the fakes' one key
                    },
                    {"name": "failing", "base_url": failing.url, "api_key": failing.api_key},
                ]
            }
        )
    )
    env = {
        "OPENAI_API_BASE_URL": "http://unused.invalid/v1",
        "UPSTREAMS_FILE": str(topology),
        "MAX_RETRIES": "0",
        "CIRCUIT_BREAKER_THRESHOLD": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
        "LOG_LEVEL": "DEBUG",
    }
    proxy = _run(tmp_path, env)
    parent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    hostile = ",".join(f"k{i}=v" for i in range(40))  # over W3C's 32 members
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    try:
        for _ in range(2):  # round robin: one answer from each replica
            answer = httpx.post(proxy.url + "/v1/chat/completions", json=chat, timeout=30)
            assert answer.status_code == 200
        for i in range(3):
            answer = httpx.post(
                proxy.url + "/v1/chat/completions",
                json=chat,
                headers={"traceparent": parent, "tracestate": hostile + "," * i},
                timeout=30,
            )
            assert answer.status_code == 200
        twice = httpx.post(
            proxy.url + "/v1/chat/completions",
            json=chat,
            headers=[("traceparent", parent), ("traceparent", parent)],
            timeout=30,
        )
        assert twice.status_code == 200
        broken = httpx.post(
            proxy.url + "/api/chat",
            json={
                "model": "failing:" + MODEL,  # that upstream only
                "stream": False,
                "messages": [{"role": "user", "content": PROMPT_TEXT}],
            },
            timeout=30,
        )
        assert broken.status_code >= 500
    finally:
        output = proxy.stop()
        for fake in (*replicas, failing):
            fake.stop()

    servers = [
        s for s in receiver.spans if s.kind == "server" and s.attributes["url.path"] != "/health"
    ]
    assert len(servers) == 7, [(s.name, s.attributes) for s in servers]
    # L5: the relayed answers' usage, read from the JSON the backend sent (budgets are off).
    relayed = [s for s in servers if s.attributes["http.route"] == "/v1/chat/completions"]
    assert len(relayed) == 6
    for span in relayed:
        assert span.attributes["gen_ai.usage.input_tokens"] == 7
        assert span.attributes["gen_ai.usage.output_tokens"] == 2
    # L4: each upstream span names the replica its HTTP request went to.
    ports = []
    for span in relayed:
        (genai,) = [s for s in receiver.spans if s.parent_span_id == span.span_id]
        (http,) = [s for s in receiver.spans if s.parent_span_id == genai.span_id]
        assert genai.attributes["server.port"] == http.attributes["server.port"]
        assert http.attributes["url.full"].startswith(
            f"http://127.0.0.1:{genai.attributes['server.port']}/"
        )
        ports.append(genai.attributes["server.port"])
    assert set(ports) == {r.port for r in replicas}
    # L9: the hostile tracestate dropped, its traceparent kept; no warning per request.
    continued = [s for s in relayed if s.trace_id == CLIENT_TRACE]
    assert len(continued) == 3
    assert all(s.parent_span_id == CLIENT_SPAN for s in continued)
    logged = _lines(output)
    assert not any(x.get("level") == "warning" and "tracestate" in str(x) for x in logged)
    assert "There can't be more than" not in output
    dropped = [x for x in logged if x.get("event") == "trace_context_dropped"]
    assert len(dropped) == 1  # at DEBUG, once
    assert dropped[0]["level"] == "debug"
    # Two traceparents: invalid, so a trace of its own (the last two relayed are not the client's).
    assert len([s for s in relayed if s.parent_span_id == ""]) == 3
    # L3: the error's status and class only, never the backend's text (which quotes the prompt).
    (failed,) = [s for s in servers if s.attributes["http.route"] == "/api/chat"]
    assert failed.status == 2
    assert failed.status_message == f"HTTP {failed.attributes['error.type']}"
    for span in receiver.spans:
        assert PROMPT_TEXT not in span.status_message
        assert PROMPT_TEXT not in json.dumps(span.attributes)


def test_a_hung_collector_does_not_hold_the_stop(tmp_path: Path) -> None:
    """Issue #20's review, L2: a collector that accepts connections and never answers held
    the exit 18 s; the last flush is now given FLUSH_DEADLINE_S (5 s), then dropped with one
    warning."""
    upstream = FakeUpstream([MODEL]).start()
    hole = socket.socket()  # the kernel accepts connections; nothing ever answers
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    env = {
        "OPENAI_API_BASE_URL": upstream.url,
        "OPENAI_API_KEY": upstream.api_key,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{hole.getsockname()[1]}",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # every span waits for the flush at the stop
    }
    proxy = _run(tmp_path, env)
    try:
        reply = httpx.post(
            proxy.url + "/api/chat",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False},
            timeout=30,
        )
        assert reply.status_code == 200
    finally:
        began = time.monotonic()
        output = proxy.stop()
        took = time.monotonic() - began
        hole.close()
        upstream.stop()
    assert took < 9, (took, output[-6000:])
    warned = [x for x in _lines(output) if x.get("event") == "tracing_flush_incomplete"]
    assert len(warned) == 1
    assert warned[0]["deadline_s"] == 5.0
