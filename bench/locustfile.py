"""Load test of a running proxy with the mix Ollama clients send, for operators to run against their
own deployment (docs/PERFORMANCE.md, "Load-testing your deployment"). Not part of `make bench`,
whose figures come from a zero-latency upstream; this one goes through your backend and costs
its tokens.

    pip install locust==2.47.0        # (in the test extra)
    LOADTEST_CHAT_MODEL=llama3 LOADTEST_EMBED_MODEL=nomic-embed-text \\
      locust -f bench/locustfile.py --host http://proxy.example:11434 \\
      --headless -u 50 -r 5 --run-time 5m --csv results/load

The tasks, by weight (about what chat front-ends, coding agents and RAG pipelines send):

| task | weight | request |
|---|---|---|
| chat, streamed | 6 | ``POST /api/chat`` ``stream: true`` (Open WebUI, ollama-python's default) |
| chat | 3 | ``POST /api/chat`` ``stream: false`` (LangChain, n8n) |
| generate, streamed | 2 | ``POST /api/generate`` ``stream: true`` |
| generate | 1 | ``POST /api/generate`` ``stream: false`` |
| embed | 2 | ``POST /api/embed`` with ``LOADTEST_EMBED_BATCH`` inputs |
| tools | 1 | ``POST /api/chat`` with a tool; when the model calls it, a second turn carries the result |

Every answer is checked as an Ollama client would read it (each streamed line JSON without an
``error``, a last line with ``done: true``, as many vectors as inputs, ...); anything else is a
failure. Streams report two more entries, of type ``STREAM``: ``[first line]`` (time to the first
line, what a user waits for) and ``[whole stream]``. They time the same HTTP requests again, so
they are kept out of the ``Aggregated`` row, whose counts stay those of the HTTP requests.

Environment variables: ``LOADTEST_CHAT_MODEL`` (default ``llama3.2``), ``LOADTEST_TOOLS_MODEL``
(default: the chat model), ``LOADTEST_EMBED_MODEL`` (default ``nomic-embed-text``),
``LOADTEST_API_KEY`` (sent as ``Authorization: Bearer`` when the proxy has ``PROXY_API_KEYS``),
``LOADTEST_NUM_PREDICT`` (tokens per answer, default 64, to bound the cost),
``LOADTEST_EMBED_BATCH`` (inputs per embed request, default 8) and ``LOADTEST_WAIT`` (seconds
each simulated user waits between requests, ``min,max``, default ``1,3``).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

from locust import HttpUser, between, task

CHAT_MODEL = os.environ.get("LOADTEST_CHAT_MODEL", "llama3.2")
TOOLS_MODEL = os.environ.get("LOADTEST_TOOLS_MODEL", CHAT_MODEL)
EMBED_MODEL = os.environ.get("LOADTEST_EMBED_MODEL", "nomic-embed-text")
API_KEY = os.environ.get("LOADTEST_API_KEY", "")
NUM_PREDICT = int(os.environ.get("LOADTEST_NUM_PREDICT", "64"))
EMBED_BATCH = int(os.environ.get("LOADTEST_EMBED_BATCH", "8"))
WAIT = [float(s) for s in os.environ.get("LOADTEST_WAIT", "1,3").split(",")]
# The type of the rows that time part of a streamed request (not requests themselves).
STREAM = "STREAM"

PROMPTS = [
    "Explain what a reverse proxy does in two sentences.",
    "Write a haiku about autumn rain.",
    "What is the capital of Australia? Answer in one word.",
    "Summarise the plot of Hamlet in three sentences.",
    "Give three tips for writing clear commit messages.",
    "Translate 'good morning, how are you?' into French.",
]
PASSAGES = [
    "The proxy translates Ollama's API to any OpenAI-compatible backend.",
    "Streams are relayed line by line as the backend produces tokens.",
    "Rate limits can be shared between replicas through Redis.",
    "Embeddings turn text into vectors for retrieval.",
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}


class Invalid(Exception):
    """An answer an Ollama client could not use."""


class OllamaClient(HttpUser):
    """One simulated client; locust runs as many as ``-u`` asks for."""

    wait_time = between(WAIT[0], WAIT[-1])

    def on_start(self) -> None:
        if API_KEY:
            self.client.headers["Authorization"] = f"Bearer {API_KEY}"

    # --- the mix ---------------------------------------------------------------------------

    @task(6)
    def chat_streamed(self) -> None:
        self._stream("/api/chat", self._chat_body(stream=True), "chat, streamed", "message", dict)

    @task(3)
    def chat(self) -> None:
        self._post("/api/chat", self._chat_body(stream=False), "chat", _text("message", "content"))

    @task(2)
    def generate_streamed(self) -> None:
        body = self._generate_body(stream=True)
        self._stream("/api/generate", body, "generate, streamed", "response", str)

    @task(1)
    def generate(self) -> None:
        self._post(
            "/api/generate", self._generate_body(stream=False), "generate", _text("response")
        )

    @task(2)
    def embed(self) -> None:
        inputs = random.sample(PASSAGES * EMBED_BATCH, EMBED_BATCH)

        def valid(a: dict[str, Any]) -> bool:
            vectors = a["embeddings"]
            return len(vectors) == len(inputs) and all(
                v and isinstance(v[0], float) for v in vectors
            )

        self._post("/api/embed", {"model": EMBED_MODEL, "input": inputs}, "embed", valid)

    @task(1)
    def tools(self) -> None:
        city = random.choice(["Paris", "Tokyo", "Lima", "Oslo"])
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": f"What is the weather in {city}? Use the tool."}
        ]
        body = {
            "model": TOOLS_MODEL,
            "messages": messages,
            "tools": [WEATHER_TOOL],
            "stream": False,
            "options": {"num_predict": NUM_PREDICT},
        }

        def valid(a: dict[str, Any]) -> bool:
            # Ollama sends a call's arguments as an object, never as JSON text.
            calls = a["message"].get("tool_calls") or []
            return a["done"] is True and all(
                isinstance(c["function"]["arguments"], dict) for c in calls
            )

        answer = self._post("/api/chat", body, "tools", valid)
        calls = (answer or {}).get("message", {}).get("tool_calls") or []
        # A model may answer in words instead: not a proxy failure, and then there is no turn 2.
        if not answer or not calls:
            return
        messages.append(answer["message"])
        for call in calls:
            result = {"city": city, "temperature_c": 18, "sky": "clear"}
            messages.append(
                {
                    "role": "tool",
                    "tool_name": call["function"]["name"],
                    "content": json.dumps(result),
                }
            )
        body = {**body, "messages": messages}
        self._post("/api/chat", body, "tools, result turn", _text("message", "content"))

    # --- helpers ---------------------------------------------------------------------------

    def _chat_body(self, stream: bool) -> dict[str, Any]:
        return {
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
            "stream": stream,
            "options": {"num_predict": NUM_PREDICT},
        }

    def _generate_body(self, stream: bool) -> dict[str, Any]:
        return {
            "model": CHAT_MODEL,
            "prompt": random.choice(PROMPTS),
            "stream": stream,
            "options": {"num_predict": NUM_PREDICT},
        }

    def _post(
        self, path: str, body: dict[str, Any], name: str, valid: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any] | None:
        """The JSON answer, or None after recording a failure: a status other than 200, a body
        that is not JSON, an ``error``, or an answer ``valid`` refuses."""
        with self.client.post(path, json=body, name=name, catch_response=True) as response:
            try:
                answer = _answer(response, valid)
            except (Invalid, ValueError, KeyError, TypeError, IndexError) as exc:
                response.failure(str(exc))
                return None
            response.success()
            return answer

    def _stream(self, path: str, body: dict[str, Any], name: str, field: str, kind: type) -> None:
        """A streamed answer, read as ollama-python reads it (``_lines``), reported as three
        entries: the request, its ``[first line]`` and its ``[whole stream]``."""
        start = time.perf_counter()
        with self.client.post(
            path, json=body, name=name, stream=True, catch_response=True
        ) as response:
            try:
                first, length = _lines(response, field, kind)
            except (Invalid, ValueError, OSError) as exc:
                response.failure(str(exc))
                return
            response.success()
        end = time.perf_counter()
        self._record(f"{name} [first line]", (first - start) * 1000, 0)
        self._record(f"{name} [whole stream]", (end - start) * 1000, length)

    def _record(self, name: str, ms: float, length: int) -> None:
        """A timing of a request already counted, as its own row of the statistics but not of
        ``Aggregated``: a ``request`` event (whatever its request_type) is added to both by
        RequestStats.log_request, which would count each stream three times. The entry is
        logged directly instead; a worker reports its entries and its total separately
        (setup_distributed_stats_event_listeners), so a distributed run keeps the split."""
        self.environment.stats.get(name, STREAM).log(round(ms), length)


def _answer(response: Any, valid: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """A whole answer's JSON object; raises Invalid (or the error of reading it) otherwise."""
    if response.status_code != 200:
        raise Invalid(f"{response.status_code}: {response.text[:200]}")
    answer = response.json()
    if not isinstance(answer, dict) or "error" in answer or not valid(answer):
        raise Invalid(f"unexpected answer: {response.text[:200]}")
    return answer


def _lines(response: Any, field: str, kind: type) -> tuple[float, int]:
    """(perf_counter time of the first line, bytes read) of a stream whose every line is one
    JSON object with ``field`` of type ``kind``, no ``error``, the last one ``done: true``;
    raises Invalid otherwise."""
    if response.status_code != 200:
        raise Invalid(f"{response.status_code}: {response.text[:200]}")
    first: float | None = None
    length = 0
    done = False
    for line in response.iter_lines():
        if not line:
            continue
        first = first or time.perf_counter()
        length += len(line)
        chunk = json.loads(line)
        if "error" in chunk:
            raise Invalid(f"error line: {chunk['error']}")
        if done:
            raise Invalid("a line after done")
        if not isinstance(chunk.get(field), kind):
            raise Invalid(f"no {field} in {line[:200]!r}")
        done = chunk.get("done") is True
    if not done or first is None:
        raise Invalid("the stream ended without a done line")
    return first, length


def _text(*path: str) -> Callable[[dict[str, Any]], bool]:
    """A check that the answer is done and holds text at ``path`` (e.g. message.content)."""

    def valid(answer: dict[str, Any]) -> bool:
        value: Any = answer
        for key in path:
            value = value[key]
        return answer["done"] is True and isinstance(value, str)

    return valid
