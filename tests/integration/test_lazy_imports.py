"""Issue #18: a worker's idle memory is mostly the modules it imported. What a request does not
need is imported when one first does: the OpenAPI document's builder (first /openapi.json), the
Anthropic and Responses translators (first request of that dialect), the response cache and the
token budgets (only when configured). Each test runs in a fresh interpreter, whose
``sys.modules`` is then the whole truth."""

from __future__ import annotations

import subprocess
import sys

from tests.fake_upstream import FakeUpstream

# Never imported by create_app() with the default settings, nor by Ollama and /v1 requests.
LAZY = (
    "ollama_openai_bridge.openapi",
    "ollama_openai_bridge.translate.anthropic",
    "ollama_openai_bridge.translate.anthropic_answer",
    "ollama_openai_bridge.translate.responses",
    "ollama_openai_bridge.translate.response_items",
    "ollama_openai_bridge.translate.response_tools",
    "ollama_openai_bridge.translate.responses_stream",
    "ollama_openai_bridge.response_cache",
    "ollama_openai_bridge.cache_store",
    "ollama_openai_bridge.budgets",
    "ollama_openai_bridge.budget_plan",
)

PRELUDE = """
import sys
import httpx
from tests.servers import ProxyServer, settings_for
LAZY = {lazy!r}
def loaded():
    return sorted(m for m in LAZY if m in sys.modules)
CHAT = {{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "hi"}}]}}
"""


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_worker_imports_each_dialect_and_the_document_at_its_first_request(
    upstream: FakeUpstream,
) -> None:
    code = (
        PRELUDE.format(lazy=LAZY)
        + f"""
with ProxyServer(settings_for({upstream.url!r})) as proxy, httpx.Client(base_url=proxy.url) as c:
    assert loaded() == [], loaded()
    assert c.post("/api/chat", json={{**CHAT, "stream": False}}).status_code == 200
    r = c.post("/api/chat", json=CHAT)
    assert r.status_code == 200 and r.text.strip().splitlines()[-1].find('"done":true') > 0, r.text
    assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert loaded() == [], loaded()
    assert c.get("/openapi.json").status_code == 200
    assert "ollama_openai_bridge.openapi" in sys.modules
    anthropic = {{**CHAT, "max_tokens": 16}}
    assert c.post("/v1/messages", json=anthropic).status_code == 200
    assert "ollama_openai_bridge.translate.anthropic_answer" in sys.modules
    assert "ollama_openai_bridge.translate.responses" not in sys.modules
    r = c.post("/v1/responses", json={{"model": "gpt-4o-mini", "input": "hi"}})
    assert r.status_code == 200, r.text
    assert "ollama_openai_bridge.translate.responses" in sys.modules
print("RESULT ok")
"""
    )
    assert run(code).strip().splitlines()[-1] == "RESULT ok"


def test_the_response_cache_and_token_budgets_are_imported_when_configured(
    upstream: FakeUpstream,
) -> None:
    code = (
        PRELUDE.format(lazy=LAZY)
        + f"""
from ollama_openai_bridge.app import create_app
inbound = "test-key-1"  # an obvious fake: budgets count per inbound key
settings = settings_for(
    {upstream.url!r},
    response_cache="memory",
    proxy_api_keys=inbound,
    token_budget="1000/minute",
)
app = create_app(settings)
assert app.state.ctx.budgets is not None
for name in ("response_cache", "cache_store", "budgets", "budget_plan"):
    assert "ollama_openai_bridge." + name in sys.modules, name
print("RESULT ok")
"""
    )
    assert run(code).strip().splitlines()[-1] == "RESULT ok"
