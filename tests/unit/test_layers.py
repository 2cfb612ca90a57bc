"""Imports go one way: routes -> plan/translate -> backends -> upstream, never back
(docs/ARCHITECTURE.md).

Read from the source with ``ast``: a module may import modules of its own layer or below. A new
module must be placed in a layer here, so its place is a decision, not an accident."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "ollama_openai_bridge"

# Lowest first.
LAYERS: tuple[tuple[str, ...], ...] = (
    # data, errors, parsing, reading backend errors, rendering: no I/O of their own
    (
        "__init__",
        "errors",
        "access",
        "config",  # a package: Settings made of one module per concern (config/__init__.py)
        "budget_plan",
        "profiles",
        "balance_config",  # replicas of an upstream, as topology reads them
        "topology",
        "policy",
        "model_map",
        "upstream_errors",
        "upstream_redirect",  # which backend redirects are followed (upstream.py asks)
        "refusals",  # parameters a backend refused, learned per model (upstream.py keeps them)
        "logs",
        "metrics",
        "limits",
        "schemas",
        "sse",
        "codings",
        "http",
        "render",
        "relay",
        "owner",
        "allocator",
        "recycle",
        "buildinfo",
        "healthcheck",
        "routing",
        "openapi",
        "apidocs",  # the documentation routes; the openapi builder imported at first request
        "fastpath",
        "http1",  # the HTTP/1.1 client: imports nothing of the project (config reads its limits)
        "egress",  # HTTP proxies from the environment, per backend URL (pure)
        "tracing_env",  # the OTEL_* values the SDK reads, checked at start (pure)
        "tracing",  # OTEL_* checked by config; the SDK imported only when tracing is on
    ),
    ("resilience",),  # circuit breaker, concurrency limiter
    ("balance",),  # replicas of one upstream: the choice of one, outlier detection
    ("upstream", "upstream_aiohttp"),  # one backend's HTTP client and the one failure mapping
    ("exchange",),  # executing a plan: fallbacks, timeouts, event streams
    ("catalog", "backends"),  # model lists and routing
    ("translate",),  # pure translation: what a plan sends, how answers read to the client
    (
        "streams",
        "context",
        "middleware",
        "tracing_asgi",  # the request's server span, outside middleware
        "cors",
        "security",
        "transport",
        "tool_call_store",
        "budgets",
        "cache_store",
        "response_cache",  # around exchange.execute: wraps Backends.execute (app.py)
    ),  # per request and connection
    ("routes",),  # handlers: parse -> plan -> execute -> render
    ("app",),
    ("cli", "__main__"),
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
# all that translate/ may import: it sits above backends, but reads nothing of them
PURE = {"errors", "schemas", "policy", "profiles", "model_map", "upstream_errors", "translate"}
FRAMEWORKS = ("aiohttp", "starlette", "fastapi", "uvicorn", "httpx")


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def top(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def imports(path: Path) -> set[str]:
    """The first component of every project module ``path`` imports."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ollama_openai_bridge":
                names = [a.name for a in node.names]
            elif node.module.startswith("ollama_openai_bridge."):
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            prefix = "ollama_openai_bridge."
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith(prefix)]
        out.update(n for n in names if not n.startswith("__version__"))
    return out


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_up(path: Path) -> None:
    own = top(path)
    assert own in RANK, f"{own}: place the new module in a layer of tests/unit/test_layers.py"
    up = {m for m in imports(path) if RANK.get(m, -1) > RANK[own]}
    assert not up, f"{path.relative_to(SRC)} imports {sorted(up)}, a higher layer"


@pytest.mark.parametrize("path", sorted((SRC / "translate").rglob("*.py")), ids=lambda p: p.name)
def test_translation_stays_pure(path: Path) -> None:
    assert imports(path) <= PURE, f"translate/{path.name} imports {sorted(imports(path) - PURE)}"
    source = path.read_text()
    for framework in FRAMEWORKS:
        assert f"import {framework}" not in source
        assert f"from {framework}" not in source


def test_a_violation_is_seen(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from ollama_openai_bridge.routes import inference\nimport ollama_openai_bridge.app\n"
    )
    assert imports(probe) == {"routes", "app"}
