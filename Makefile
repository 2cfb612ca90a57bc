# Developer tasks. `make test` is the project's one test command (README, CI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Clients whose tools exist on this machine must pass, not skip.
HAVE_NODE := $(if $(shell command -v node),1,)
HAVE_PY38 := $(if $(wildcard $(HOME)/.pyenv/versions/3.8*/bin/python3.8),1,)
CLIENT_FLAGS := REQUIRE_AIMOCK=$(HAVE_NODE) REQUIRE_CLIENTS=$(HAVE_NODE) REQUIRE_AGENTS=$(HAVE_NODE) REQUIRE_PY38=$(HAVE_PY38)

.PHONY: venv dev test lint typecheck unit compat bench bench-micro run clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The Python side alone: the package, editable, with its test tools. Needs no Node.js.
venv: $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'

# Plus the third-party clients and mocks the tests drive (npm, Python 3.8).
dev: venv
	scripts/setup-test-clients.sh

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: dev
	$(BIN)/mypy

# Everything CI checks: lint, types, all tests with coverage floors (overall 85%, translate/ 95%),
# then the client compatibility matrix (docs/COMPATIBILITY.md) from the test outcomes.
# The backends are called by the proxy's own HTTP/1.1 client in every test (UPSTREAM_HTTP_CLIENT
# auto); the files that cover streaming, errors, timeouts, retries, fallbacks and the /v1 relays
# run a second time on aiohttp, the fallback client.
AIOHTTP_TESTS := $(addprefix tests/integration/,test_request_path.py test_resilience.py \
	test_multi_upstream.py test_resource_invariant.py test_openai_sdk.py test_ollama_sdk.py \
	test_wire.py)
test: lint typecheck
	$(CLIENT_FLAGS) $(BIN)/pytest --cov --cov-report=term-missing:skip-covered --cov-fail-under=85
	UPSTREAM_HTTP_CLIENT=aiohttp COMPAT_RESULTS=build/compat-results-aiohttp.json \
		$(BIN)/pytest -q $(AIOHTTP_TESTS)
	$(BIN)/coverage report --include='*/ollama_openai_proxy/translate/*' --fail-under=95
	$(BIN)/python scripts/compat_matrix.py

# The unit tests only: no clients, so no npm (and no Node.js needed).
unit: venv
	$(BIN)/pytest tests/unit -q

compat:
	$(BIN)/python scripts/compat_matrix.py

# Speed, not correctness: the suite (docs/PERFORMANCE.md) and the hot-path micro-benchmarks.
bench: dev
	$(BIN)/python -m pip install -q matplotlib pytest-benchmark
	$(BIN)/python bench/run.py

bench-micro: dev
	$(BIN)/python -m pip install -q pytest-benchmark
	$(BIN)/pytest bench/test_micro.py -p no:cacheprovider --benchmark-only --benchmark-autosave

run: dev
	$(BIN)/ollama-openai-proxy

clean:
	rm -rf $(VENV) .venv-py38 .venv-litellm build tests/*/node_modules tests/n8n/vendor .coverage .pytest_cache .mypy_cache .ruff_cache
