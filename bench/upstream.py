"""A zero-latency OpenAI-compatible upstream for benchmarks: raw asyncio, TCP_NODELAY, canned bodies.

POST /v1/chat/completions answers a fixed completion, or with "stream": true a stream of
CHUNKS content chunks (optional DELAY seconds between them) -- or N for the model
``bench-model-N``, so that one run can time two stream lengths and take per-chunk costs from the
difference (per-request costs cancel out). GET /v1/models lists one model.
Usage: python bench/upstream.py PORT [CHUNKS] [DELAY]
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket
import sys

MODEL = "bench-model"
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1767000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the benchmark upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
).encode()
MODELS = json.dumps(
    {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": 1, "owned_by": "bench"}],
    }
).encode()


def chunk_event(text: str | None, finish: str | None = None, usage: bool = False) -> bytes:
    obj: dict[str, object] = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
    }
    if usage:
        obj["choices"] = []
        obj["usage"] = {"prompt_tokens": 12, "completion_tokens": 100, "total_tokens": 112}
    else:
        delta = {} if text is None else {"content": text}
        obj["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    data = b"data: " + json.dumps(obj).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


FAIL_RATE = float(os.environ.get("BENCH_FAIL_RATE", "0"))
LENGTH = re.compile(rb'"model":\s*"bench-model-(\d+)"')
# Encoded once: the upstream must not be the bottleneck of a 100,000-chunks-per-second test.
CHUNK_EVENTS = [chunk_event(f"tok{i} ") for i in range(1000)]


def _role_event() -> bytes:
    # OpenAI's streams open with the role and an empty content, before the first token
    # (vLLM, llama.cpp and LiteLLM do the same): the proxy writes no line for it.
    delta = {"role": "assistant", "content": ""}
    obj = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    obj["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
    data = b"data: " + json.dumps(obj).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


ROLE_EVENT = _role_event()
_EMBEDDINGS: dict[int, bytes] = {}


def embeddings(count: int) -> bytes:
    """count unit vectors of 1,536 dimensions, like text-embedding-3-small."""
    if count not in _EMBEDDINGS:
        vector = [1.0 / 1536**0.5] * 1536
        data = [{"object": "embedding", "index": i, "embedding": vector} for i in range(count)]
        _EMBEDDINGS[count] = json.dumps(
            {
                "object": "list",
                "data": data,
                "model": MODEL,
                "usage": {"prompt_tokens": count, "total_tokens": count},
            }
        ).encode()
    return _EMBEDDINGS[count]


OK_JSON = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
OK_SSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
FAILED = b'{"error":{"message":"injected failure","type":"server_error"}}'


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunks: int, delay: float
) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length) if length else b""
            if head.startswith(b"GET /v1/models"):
                writer.write(OK_JSON % (len(MODELS), MODELS))
            elif head.startswith(b"POST /v1/embeddings"):
                answer = embeddings(len(json.loads(body)["input"]))
                writer.write(OK_JSON % (len(answer), answer))
            elif FAIL_RATE and random.random() < FAIL_RATE / 2:
                # BENCH_FAIL_RATE, half of it: an error status before anything was streamed.
                writer.write(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(FAILED), FAILED)
                )
            elif b'"stream":true' in body or b'"stream": true' in body:
                length = LENGTH.search(body)
                count = int(length.group(1)) if length else chunks
                writer.write(OK_SSE + ROLE_EVENT)
                # The other half: the connection dies in the middle of the stream.
                drop = count // 2 if FAIL_RATE and random.random() < FAIL_RATE / 2 else -1
                for i in range(count):
                    if i == drop:
                        await writer.drain()
                        writer.transport.abort()
                        return
                    writer.write(
                        CHUNK_EVENTS[i] if i < len(CHUNK_EVENTS) else chunk_event(f"tok{i} ")
                    )
                    if delay:
                        await writer.drain()
                        await asyncio.sleep(delay)
                writer.write(chunk_event(None, "stop") + chunk_event(None, usage=True))
                done = b"data: [DONE]\n\n"
                writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
            else:
                writer.write(OK_JSON % (len(COMPLETION), COMPLETION))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int, chunks: int, delay: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, chunks, delay), "127.0.0.1", port, backlog=16384
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(
        main(
            int(sys.argv[1]),
            int(sys.argv[2]) if len(sys.argv) > 2 else 100,
            float(sys.argv[3]) if len(sys.argv) > 3 else 0.0,
        )
    )
