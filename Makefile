# Developer tasks. `make run` starts the proxy, `make test` is the project's one test command
# (README, CI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Clients whose tools exist on this machine must pass, not skip.
HAVE_NODE := $(if $(shell command -v node),1,)
HAVE_PY38 := $(if $(wildcard $(HOME)/.pyenv/versions/3.8*/bin/python3.8),1,)
CLIENT_FLAGS := REQUIRE_AIMOCK=$(HAVE_NODE) REQUIRE_CLIENTS=$(HAVE_NODE) REQUIRE_AGENTS=$(HAVE_NODE) REQUIRE_PY38=$(HAVE_PY38)

.PHONY: venv dev hooks test lint typecheck security unit compat compat-doc bench bench-micro run \
	clean lock lock-upgrade secrets-baseline

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and \
		"Python 3.11 or newer is needed; name it with PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)

# --- locked installs (requirements/: test.lock for the tests and tools, run.lock for `make run`)
# Every package at the version and hash the lock names; then the project itself, editable,
# without its dependencies (the lock brought them), built by the locked hatchling
# (--no-build-isolation: pip would otherwise fetch the build tools unpinned): test.lock holds
# it, and `make run` adds requirements/build.lock. A stamp per lock: installed again only when
# the lock or pyproject.toml changes.
$(VENV)/.stamp-run: requirements/run.lock requirements/build.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --require-hashes -r requirements/run.lock \
		-r requirements/build.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

$(VENV)/.stamp-test: requirements/test.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --require-hashes -r requirements/test.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $@

# Start the proxy: the package and its runtime dependencies only (no test tools, no npm).
# OPENAI_API_BASE_URL and OPENAI_API_KEY come from the environment or .env; any other setting
# too (PROXY_PORT=8080 make run), or command-line options: make run ARGS="--port 8080".
run: $(VENV)/.stamp-run
	$(BIN)/ollama-openai-bridge $(ARGS)

# uv at the version tools.in pins, on its own: a lock that no longer installs can still be redone.
$(BIN)/uv: requirements/tools.in | $(BIN)/python
	$(BIN)/python -m pip install -q "$$(grep -o '^uv==[^ ]*' requirements/tools.in)"

# Resolve every lock again after a change to pyproject.toml, requirements/tools.in or a *.in,
# keeping every pin that still fits; lock-upgrade moves every package to its newest allowed
# version. Besides the two of requirements/: the build tools (at test.lock's versions), the old
# ollama SDK's set for Python 3.8, and LiteLLM's proxy (its own virtualenv), all with hashes.
UV_COMPILE = $(BIN)/uv pip compile --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" --quiet
lock lock-upgrade: $(BIN)/uv
	$(UV_COMPILE) $(if $(filter lock-upgrade,$@),--upgrade) pyproject.toml --extra test \
		requirements/tools.in -o requirements/test.lock
	$(UV_COMPILE) pyproject.toml --extra otel -c requirements/test.lock -o requirements/run.lock
	$(UV_COMPILE) requirements/build.in -c requirements/test.lock -o requirements/build.lock
	$(UV_COMPILE) $(if $(filter lock-upgrade,$@),--upgrade) tests/litellm/requirements.in \
		-o tests/litellm/requirements.lock
	$(BIN)/uv pip compile --python-version 3.8 --generate-hashes --custom-compile-command \
		"make lock" --quiet $(if $(filter lock-upgrade,$@),--upgrade) tests/py38/requirements.in \
		-o tests/py38/requirements.lock
# --- end of locked installs

# The Python side alone: the package, editable, with its test tools. Needs no Node.js.
# The stamp alone would miss a virtualenv changed by hand since (`.venv/bin/pip install
# ollama==0.6.2`): each run compares the installed versions with the lock (scripts/
# lock_drift.py, a fraction of a second) and installs the lock again when they differ.
venv: $(VENV)/.stamp-test
	@$(BIN)/python scripts/lock_drift.py requirements/test.lock || { \
		echo "$(VENV) differs from requirements/test.lock: installing the lock again"; \
		$(BIN)/python -m pip install -q --require-hashes -r requirements/test.lock \
		&& $(BIN)/python -m pip check; }

# The git hooks (.pre-commit-config.yaml): ruff, ruff format, mypy and the drift checks of the
# generated files, with this virtualenv's tools, before each commit.
hooks: venv
	$(BIN)/pre-commit install

# Plus the third-party clients and mocks the tests drive (npm, Python 3.8).
dev: venv
	scripts/setup-test-clients.sh

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: dev
	$(BIN)/mypy

# bandit, detect-secrets, pip-audit of the lock, the SBOM (scripts/security.sh).
security: venv
	BIN=$(BIN) scripts/security.sh

# After auditing a new finding as a fake (a test key, a digest): record it in the baseline.
secrets-baseline: venv
	$(BIN)/detect-secrets scan -n --baseline .secrets.baseline
	$(BIN)/detect-secrets audit .secrets.baseline

# Everything CI checks: lint, types, supply chain, all tests with coverage floors (overall 85%,
# translate/ 95%), then the client compatibility matrix from the test outcomes, written to
# build/COMPATIBILITY.md and compared with the tracked docs/COMPATIBILITY.md (make compat-doc).
# The backends are called by the proxy's own HTTP/1.1 client in every test (UPSTREAM_HTTP_CLIENT
# auto); the files that cover streaming, errors, timeouts, retries, fallbacks and the /v1 relays
# run a second time on aiohttp, the fallback client.
AIOHTTP_TESTS := $(addprefix tests/integration/,test_request_path.py test_resilience.py \
	test_multi_upstream.py test_resource_invariant.py test_openai_sdk.py test_ollama_sdk.py \
	test_wire.py)
test: lint typecheck security
	$(CLIENT_FLAGS) $(BIN)/pytest --cov --cov-report=term-missing:skip-covered --cov-fail-under=85
	UPSTREAM_HTTP_CLIENT=aiohttp COMPAT_RESULTS=build/compat-results-aiohttp.json \
		$(BIN)/pytest -q $(AIOHTTP_TESTS)
	$(BIN)/coverage report --include='*/ollama_openai_bridge/translate/*' --fail-under=95
	$(BIN)/python scripts/compat_matrix.py --check docs/COMPATIBILITY.md

# The unit tests only: no clients, so no npm (and no Node.js needed).
unit: venv
	$(BIN)/pytest tests/unit -q

compat:
	$(BIN)/python scripts/compat_matrix.py --check docs/COMPATIBILITY.md

# The tracked matrix, from the last `make test`: commit it when the cells or versions changed.
# Refused when build/compat-results.json holds a partial run (pytest with paths, -k, -m, -x, ...)
# over no whole one: it would drop every cell that run did not reach.
compat-doc:
	$(BIN)/python scripts/compat_matrix.py --require-complete --output docs/COMPATIBILITY.md

# Speed, not correctness: the suite (docs/PERFORMANCE.md) and the hot-path micro-benchmarks.
bench: dev
	$(BIN)/python -m pip install -q matplotlib pytest-benchmark
	$(BIN)/python bench/run.py

bench-micro: dev
	$(BIN)/python -m pip install -q pytest-benchmark
	$(BIN)/pytest bench/test_micro.py -p no:cacheprovider --benchmark-only --benchmark-autosave

clean:
	rm -rf $(VENV) .venv-py38 .venv-litellm build tests/*/node_modules tests/n8n/vendor .coverage .pytest_cache .mypy_cache .ruff_cache
