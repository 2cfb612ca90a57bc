"""Micro-benchmarks of the hot path, without sockets: the SSE parser and the stream translator
fed a 100-chunk OpenAI stream, the chat request translation, and the circuit breaker's part of a
successful call, the backend client's part of a call (http1 fed its answer). Not part of
`make test`:
run `make bench-micro` and compare with the previous run (pytest-benchmark --benchmark-compare).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import uvloop

from ollama_openai_bridge import http1
from ollama_openai_bridge.http1.connection import Connection
from ollama_openai_bridge.policy import Policy, Target
from ollama_openai_bridge.resilience import BreakerState, CircuitBreaker
from ollama_openai_bridge.schemas import CHAT
from ollama_openai_bridge.sse import SSEParser
from ollama_openai_bridge.translate.answer import chat_response
from ollama_openai_bridge.translate.chat import chat_request
from ollama_openai_bridge.translate.stream import StreamTranslator

pytest.importorskip("pytest_benchmark")


def chunk(text: str) -> bytes:
    body = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


STREAM = b"".join(chunk(f"token{i} ") for i in range(100)) + b"data: [DONE]\n\n"
# what network reads look like: the stream cut every 1,400 bytes, mid-frame
READS = [STREAM[i : i + 1400] for i in range(0, len(STREAM), 1400)]
REQUEST = orjson.dumps(
    {
        "model": "m",
        "stream": True,
        "options": {"temperature": 0.2, "num_ctx": 4096},
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello " * 50},
        ],
    }
)
COMPLETION = {
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi " * 100},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 100},
}


def test_sse_parser_100_chunks(benchmark: Any) -> None:
    def run() -> int:
        parser = SSEParser()
        return sum(len(parser.feed(read)) for read in READS)

    assert benchmark(run) == 101


def test_stream_translation_100_chunks(benchmark: Any) -> None:
    def run() -> bytes:
        parser = SSEParser()
        tr = StreamTranslator("m", generate=False, think=True, start_ns=0)
        out = b""
        for read in READS:
            for event in parser.feed(read):
                out += tr.feed(event.data)
        return out + tr.finish()

    assert benchmark(run).count(b"\n") == 101


def test_chat_request_translation(benchmark: Any) -> None:
    policy, target = Policy(), Target("m")

    def run() -> dict[str, Any]:
        return chat_request(CHAT.validate_json(REQUEST), target, policy).payload

    assert benchmark(run)["temperature"] == 0.2


def test_chat_response_translation(benchmark: Any) -> None:
    def run() -> bytes:
        return orjson.dumps(
            chat_response(COMPLETION, "m", now_ns=0, total_ns=1, think=True, notes=[])
        )

    assert benchmark(run).startswith(b'{"model":"m"')


def test_breaker_closed_success_1000_calls(benchmark: Any) -> None:
    # What Upstream.send asks of the breaker for a call answered 200 while it is closed.
    breaker = CircuitBreaker()

    def run() -> None:
        for _ in range(1000):
            breaker.before()
            breaker.success()

    benchmark(run)
    assert breaker.state is BreakerState.CLOSED


HTTP1_ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
    b"date: Mon, 30 Nov 2026 12:00:00 GMT\r\nserver: uvicorn\r\n\r\n%s"
) % (len(orjson.dumps(COMPLETION)), orjson.dumps(COMPLETION))


def test_http1_1000_requests(benchmark: Any) -> None:
    """The backend client's part of 1,000 non-streamed calls, without sockets: a request written,
    its answer fed to the connection as one read, the body read, the connection pooled again."""

    class Answering:
        """A transport whose peer answers each request at once, in the next loop turn."""

        def __init__(self, loop: Any) -> None:
            self.loop = loop
            self.conn: Connection | None = None

        def write(self, data: bytes) -> None:
            assert self.conn is not None
            self.loop.call_soon(self.conn.data_received, HTTP1_ANSWER)

        def is_closing(self) -> bool:
            return False

        def get_extra_info(self, name: str) -> Any:
            return None

    async def thousand() -> None:
        loop = asyncio.get_running_loop()
        client = http1.Client(
            headers={"User-Agent": "b"}, limit=1, connect_timeout=1, read_timeout=60
        )
        url = "http://backend.test/v1/chat/completions"
        origin, _ = client._target(url)
        conn = Connection(client, origin)
        transport = Answering(loop)
        transport.conn = conn
        conn.connection_made(transport)  # type: ignore[arg-type]
        client._open = 1
        client.release(conn)
        for _ in range(1000):
            resp = await client.request("POST", url, data=REQUEST, timeout=300.0)
            await resp.read()
            resp.release()

    loop = uvloop.new_event_loop()
    try:
        benchmark(lambda: loop.run_until_complete(thousand()))
    finally:
        loop.close()
