"""Plain-httpx helpers for talking to the backend fakes: the OpenAI reference request and
readers for streamed and error answers."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.backends.fake import FakeBackend

KEY = "sk-test-upstream"
BEARER = {"Authorization": f"Bearer {KEY}"}
DROP = object()  # reference(model, seed=DROP) leaves `seed` out


def reference(model: str, **changes: Any) -> dict[str, Any]:
    """The OpenAI reference request: what the proxy sends today for a streamed Ollama chat with
    options num_predict, temperature and seed (stream_options so the done line has counts)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 64,
        "temperature": 0.2,
        "seed": 42,
    }
    for key, value in changes.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def chat(
    f: FakeBackend, body: dict[str, Any], headers: dict[str, str] | None = None, path: str = ""
) -> httpx.Response:
    url = f.root + path if path else f.url + "/chat/completions"
    return httpx.post(url, json=body, headers=BEARER if headers is None else headers, timeout=10)


def chunks(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.headers["content-type"].startswith("text/event-stream"), resp.text
    lines = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def deltas(resp: httpx.Response) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks(resp) if c["choices"]]


def joined(resp: httpx.Response, key: str = "content") -> str:
    return "".join(d.get(key) or "" for d in deltas(resp))


def error(resp: httpx.Response, status: int) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


def openai_err(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }
