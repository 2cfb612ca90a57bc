"""The API documentation as a user reaches it, and its examples against the running proxy."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from ollama_openai_bridge import openapi
from tests.fake_upstream import FakeUpstream
from tests.servers import ProxyServer, settings_for


def test_documentation_endpoints(proxy: ProxyServer) -> None:
    with httpx.Client(base_url=proxy.url) as c:
        doc = c.get("/openapi.json").json()
        as_yaml = c.get("/openapi.yaml")
        assert as_yaml.headers["content-type"].startswith("application/yaml")
        assert yaml.safe_load(as_yaml.text) == doc
        for page in ("/docs", "/redoc"):
            r = c.get(page)
            assert r.status_code == 200
            assert "/openapi.json" in r.text
        redirect = c.get("/docs/oauth2-redirect")  # Swagger UI's OAuth2 page, as FastAPI served
        assert redirect.status_code == 200
        assert "oauth2" in redirect.text.lower()
    assert doc["info"]["title"] == "ollama-openai-bridge"
    assert "/api/chat" in doc["paths"]


def test_documentation_can_be_switched_off(upstream: FakeUpstream) -> None:
    with (
        ProxyServer(settings_for(upstream.url, api_docs_enabled=False)) as server,
        httpx.Client(base_url=server.url) as c,
    ):
        for path in ("/docs", "/redoc", "/openapi.json", "/openapi.yaml", "/docs/oauth2-redirect"):
            r = c.get(path)
            assert r.status_code == 404, path
            assert r.json() == {"error": "404 page not found"}
        assert c.get("/api/version").status_code == 200


def test_documentation_stays_readable_with_inbound_keys(upstream: FakeUpstream) -> None:
    with (
        ProxyServer(settings_for(upstream.url, proxy_api_keys="k1")) as server,
        httpx.Client(base_url=server.url) as c,
    ):
        assert c.get("/openapi.json").status_code == 200
        assert c.get("/docs").status_code == 200
        assert c.get("/api/tags").status_code == 401


EXAMPLES = sorted(
    name
    for name, spec in openapi.OPERATIONS.items()
    if ("request" in spec and not spec.get("openai")) or name in ("tags", "ps", "version")
)


@pytest.mark.parametrize("operation_id", EXAMPLES)
def test_examples_are_what_the_proxy_answers(proxy: ProxyServer, operation_id: str) -> None:
    """Each documented request, sent as is, gets a 200 whose body has the documented shape and
    the same fields as the documented answer (values differ: they come from the backend)."""
    doc = httpx.get(proxy.url + "/openapi.json").json()
    path, method = next(
        (p, m)
        for p, item in doc["paths"].items()
        for m, op in item.items()
        if op["operationId"] == operation_id
    )
    spec: dict[str, Any] = openapi.OPERATIONS[operation_id]
    r = httpx.request(method, proxy.url + path, json=spec.get("request"), timeout=10)
    assert r.status_code == 200, r.text
    media = doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]
    body = r.json()
    jsonschema.validate(
        body,
        {**media["schema"], "components": doc["components"]},
        cls=jsonschema.Draft202012Validator,
    )
    example = media["example"]
    assert set(example) <= set(body) | {"context"}, json.dumps(body)[:300]


def test_a_worker_imports_only_what_its_requests_need() -> None:
    """Issue #18: memory per worker is mostly imports. With the default settings, the app does
    not import FastAPI (11.5 MB; only for /docs and /redoc, when a person opens one), aiohttp
    (13.8 MB; only for an upstream the proxy's own client does not handle), the limits library
    (only for a rate limit or a non-default AUTH_FAILURE_LIMIT) nor zstandard (only for a
    zstd request body)."""
    code = (
        "import sys\n"
        "from ollama_openai_bridge.app import create_app\n"
        "from tests.servers import settings_for\n"
        "from starlette.testclient import TestClient\n"
        "app = create_app(settings_for('http://127.0.0.1:9/v1'))\n"
        "lazy = ('fastapi', 'aiohttp', 'limits', 'zstandard', 'yaml', 'redis')\n"
        "assert not [m for m in lazy if m in sys.modules], [m for m in lazy if m in sys.modules]\n"
        "c = TestClient(app)\n"
        "assert c.get('/openapi.json').status_code == 200\n"
        "assert c.get('/api/version').status_code == 200\n"
        "assert not [m for m in lazy if m in sys.modules], [m for m in lazy if m in sys.modules]\n"
        "assert c.get('/docs').status_code == 200\n"
        "assert 'fastapi' in sys.modules\n"
        "from ollama_openai_bridge.codings import decode\n"
        "frame = b'(\\xb5/\\xfd \\x02\\x11\\x00\\x00{}'  # b'{}', zstd\n"
        "assert decode(frame, 'zstd', 99) == b'{}'\n"
        "assert 'zstandard' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_aiohttp_upstream_loads_aiohttp_and_its_failures() -> None:
    """The fallback client is imported with the first upstream that uses it, and its failures
    join those every backend call is guarded by (upstream.Failures)."""
    code = (
        "import asyncio, sys\n"
        "from ollama_openai_bridge import upstream\n"
        "from tests.servers import settings_for\n"
        "from ollama_openai_bridge.topology import single\n"
        "assert 'aiohttp' not in sys.modules\n"
        "s = settings_for('http://127.0.0.1:9/v1', upstream_http_client='aiohttp')\n"
        "spec = single('http://127.0.0.1:9/v1', 'k', 'auto', {}, {}).upstreams[0]\n"
        "u = upstream.Upstream(s, spec)\n"
        "asyncio.run(u.start())\n"
        "import aiohttp\n"
        "assert aiohttp.ClientError in upstream.Failures.foreign\n"
        "assert aiohttp.ServerDisconnectedError in upstream.Failures.retryable\n"
        "e = upstream.map_failure(aiohttp.ServerDisconnectedError(), 'h', reading=True)\n"
        "assert 'closed early' in str(e), e\n"
        "asyncio.run(u.close())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
