"""A real third-party OpenAI-compatible server as the backend: LiteLLM's proxy (issue #15).

ollama SDK -> this proxy (profile ``litellm``) -> LiteLLM's proxy -> the fake OpenAI backend
(tests/backends). LiteLLM runs from its own virtualenv (``make dev`` builds ``.venv-litellm`` from
tests/litellm/requirements.lock), in mock-free mode: it really forwards to the fake, with
``LITELLM_LOCAL_MODEL_COST_MAP`` so that it fetches nothing from the internet."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from tests.backends import FakeBackend, backend
from tests.servers import ProxyServer, settings_for

ROOT = Path(__file__).resolve().parents[2]
LITELLM = ROOT / ".venv-litellm" / "bin" / "litellm"
MASTER_KEY = "sk-litellm-0123456789abcdef0123456789abcdef"
HI = [{"role": "user", "content": "Name the three primary colors."}]
STARTUP = 90.0  # seconds; 12-14 s on an idle 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def litellm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeBackend]]:
    """LiteLLM's proxy in front of a fake OpenAI backend: (its /v1 URL, the fake)."""
    if not LITELLM.exists():
        if os.environ.get("REQUIRE_LITELLM"):
            pytest.fail("no .venv-litellm: run `make dev` (scripts/setup-test-clients.sh)")
        pytest.skip("LiteLLM's proxy is not installed (.venv-litellm): run `make dev`")
    fake = backend("openai").start()
    work = tmp_path_factory.mktemp("litellm")
    models = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
    entries = "".join(
        f"  - model_name: {m}\n"
        f"    litellm_params: {{model: openai/{m}, api_base: '{fake.url}', "
        f"api_key: sk-test-upstream}}\n"
        for m in models
    )
    config = work / "config.yaml"
    config.write_text(
        "model_list:\n"
        + entries
        + "litellm_settings: {telemetry: false}\n"
        + f"general_settings: {{master_key: {MASTER_KEY}}}\n"
    )
    port = _free_port()
    log = (work / "litellm.log").open("w")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "*"}
    proc = subprocess.Popen(
        [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=work,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP
        while True:
            assert proc.poll() is None, (work / "litellm.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (work / "litellm.log").read_text()[-3000:]
            time.sleep(0.25)
        yield url + "/v1", fake
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        fake.stop()


@pytest.fixture
def through(litellm: tuple[str, FakeBackend]) -> Iterator[tuple[ollama.Client, FakeBackend]]:
    url, fake = litellm
    fake.reset()
    settings = settings_for(url, openai_api_key=MASTER_KEY, backend_profile="litellm")
    with ProxyServer(settings) as proxy, ollama.Client(host=proxy.url) as client:
        yield client, fake


def test_models_are_listed_through_litellm(through: tuple[ollama.Client, FakeBackend]) -> None:
    client, _ = through
    names = {m.model for m in client.list().models}
    assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"} <= names


@pytest.mark.parametrize("stream", [False, True])
def test_chat_reaches_the_backend_through_litellm(
    through: tuple[ollama.Client, FakeBackend], stream: bool
) -> None:
    client, fake = through
    options: dict[str, Any] = {"num_predict": 50, "temperature": 0.3, "seed": 3}
    if stream:
        parts = list(client.chat(model="gpt-4o-mini", messages=HI, stream=True, options=options))
        assert "".join(p.message.content or "" for p in parts)
        final = parts[-1]
    else:
        final = client.chat(model="gpt-4o-mini", messages=HI, stream=False, options=options)
        assert final.message.content
    assert final.done
    assert final.eval_count  # usage came all the way back
    sent = fake.last("/v1/chat/completions")["body"]
    assert sent["max_tokens"] == 50
    assert sent["temperature"] == 0.3


def test_json_mode_and_embeddings_through_litellm(
    through: tuple[ollama.Client, FakeBackend],
) -> None:
    client, fake = through
    out = client.chat(model="gpt-4o", messages=HI, stream=False, format="json")
    assert out.message.content is not None
    assert not [e for e in fake.journal if e.get("refused")]
    vectors = client.embed(model="text-embedding-3-small", input=["a", "b"]).embeddings
    assert len(vectors) == 2


def test_litellms_model_info_caps_what_claude_code_asks_for(
    through: tuple[ollama.Client, FakeBackend],
) -> None:
    # LiteLLM lists ids only; its /model/info has max_output_tokens from its model cost map
    # (gpt-4o: 16384, the limit OpenAI answers 400 above): the proxy reads it (catalog.py).
    client, fake = through
    client.chat(model="gpt-4o", messages=HI, stream=False, options={"num_predict": 32000})
    assert fake.last("/v1/chat/completions")["body"]["max_tokens"] == 16384
