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

from ollama_openai_proxy import openapi
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
    assert doc["info"]["title"] == "ollama-openai-proxy"
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


def test_fastapi_is_imported_only_for_a_documentation_page() -> None:
    """The app is Starlette and its own route table (routing.py): FastAPI, 11.5 MB per worker
    (issue #18), is imported only when a person opens /docs or /redoc."""
    code = (
        "import sys\n"
        "from ollama_openai_proxy.app import create_app\n"
        "from tests.servers import settings_for\n"
        "from starlette.testclient import TestClient\n"
        "app = create_app(settings_for('http://127.0.0.1:9/v1'))\n"
        "assert 'fastapi' not in sys.modules, 'imported by create_app'\n"
        "c = TestClient(app)\n"
        "assert c.get('/openapi.json').status_code == 200\n"
        "assert 'fastapi' not in sys.modules, 'imported by /openapi.json'\n"
        "assert c.get('/docs').status_code == 200\n"
        "assert 'fastapi' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
